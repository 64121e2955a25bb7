"""The `leernetwerk` commands: parse arguments, call one function, print."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from pathlib import Path

from processor import config as config_module
from processor.store import db
from processor.desk import pipeline
from processor.commands.common import clock_of
from processor.display import printable
from processor.store.db import AlreadyRunning, Store

log = logging.getLogger("leernetwerk")


def _common(parser: argparse.ArgumentParser, *, time: bool = False, data: bool = False) -> None:
    parser.add_argument("--config", default=None,
                        help="config file (default: config/leernetwerk.toml)")
    parser.add_argument("--db", default="state.sqlite", help="registry database (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log lines")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    if time:
        parser.add_argument("--now", metavar="ISO-DATETIME",
                            help="act as of this moment (the one clock of the program); without "
                                 "an offset it is read in the event's timezone")
    if data:
        parser.add_argument("--json", action="store_true", help="print data as JSON")


def _changes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would change, change nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leernetwerk",
        description="A registration desk in a shared mailbox: reads signups, keeps the registry, "
                    "answers every sender.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="print how a mail is understood (JSON); no database, no network")
    p.add_argument("files", nargs="+", metavar="FILE.eml")
    p.add_argument("--config", default=None, help="config file (default: config/leernetwerk.toml)")

    p = sub.add_parser("run", help="run the worker in the foreground (stops on SIGTERM/SIGINT)")
    _common(p, time=True)
    p = sub.add_parser("poll", help="one fetch + apply + send cycle, then exit")
    _common(p, time=True, data=True)
    p = sub.add_parser("status", help="the registry: confirmed, waiting list, cancelled")
    _common(p, time=True, data=True)
    p = sub.add_parser("export", help="the registry as CSV, for a spreadsheet")
    _common(p)
    p.add_argument("--output", "-o", help="write to this file instead of the terminal")

    p = sub.add_parser("register", help="sign someone up by hand (phone, desk): arrival is now")
    _common(p, time=True, data=True)
    p.add_argument("--email", required=True)
    p.add_argument("--name")
    p.add_argument("--organisation")
    _changes(p)

    p = sub.add_parser("cancel", help="withdraw a registration; a freed seat goes to the waiting list")
    _common(p, time=True, data=True)
    p.add_argument("email")
    p.add_argument("--reason", default="op vraag van de deelnemer")
    _changes(p)

    p = sub.add_parser("promote", help="give a waiting person a seat now (an override, with a reason)")
    _common(p, time=True, data=True)
    p.add_argument("email")
    p.add_argument("--reason", required=True)
    _changes(p)

    p = sub.add_parser("review", help="the mails that need a person: who, why, an excerpt, the command")
    _common(p, data=True)

    p = sub.add_parser("resolve", help="settle a mail from the review list")
    _common(p, time=True, data=True)
    p.add_argument("message", type=int, metavar="ID", help="the mail's id from `review`")
    p.add_argument("--as", dest="as_kind", required=True, choices=("registration", "cancellation", "nothing"))
    p.add_argument("--email", help="the person, when the mail gives no usable address")
    p.add_argument("--name")
    p.add_argument("--organisation")
    _changes(p)

    p = sub.add_parser("retry", help="understand a set-aside mail again at the next poll")
    _common(p, time=True, data=True)
    p.add_argument("message", type=int, metavar="ID")
    _changes(p)

    p = sub.add_parser("history", help="every event for one person, with reasons")
    _common(p, data=True)
    p.add_argument("email")

    p = sub.add_parser("forget", help="erase a person's personal data and raw mails (on request)")
    _common(p, time=True, data=True)
    p.add_argument("email")
    _changes(p)

    p = sub.add_parser("purge", help="after the retention period, erase all personal data")
    _common(p, time=True, data=True)
    _changes(p)

    p = sub.add_parser("remind", help="queue and send the reminders and session updates due now")
    _common(p, time=True, data=True)
    p.add_argument("--dry-run", action="store_true",
                   help="only list what would go out at that moment; change nothing")
    p = sub.add_parser("digest", help="the organisers' daily digest: preview it, or send today's now")
    _common(p, time=True, data=True)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--print", dest="send", action="store_false",
                      help="show it in the terminal, change nothing (the default)")
    mode.add_argument("--send", dest="send", action="store_true",
                      help="queue today's digest and send it now; never a second one the same day")
    p.set_defaults(send=False)  # store_false alone would make sending the default
    p = sub.add_parser("backup", help="a consistent copy of the database, safe while the worker runs")
    _common(p)
    p.add_argument("target", metavar="PATH", help="the new file to write")

    p = sub.add_parser("demo", help="run the whole desk against embedded mail servers, with samples")
    _common(p, time=True)
    p.set_defaults(db=None)
    p.add_argument("--count", type=int, default=25, help="number of sample signups (default 25)")

    from processor.commands import operations
    operations.add_parsers(sub, _common)
    # Every command speaks the same logging options, so that the service and a cron job can ask
    # for JSON lines whatever they run.
    for command in sub.choices.values():
        if "--verbose" not in command._option_string_actions:
            command.add_argument("-v", "--verbose", action="store_true", help="more log lines")
            command.add_argument("-q", "--quiet", action="store_true",
                                 help="only warnings and errors")
        command.add_argument("--log-format", choices=("text", "json"), default="text",
                             help="log lines for a person (text, the default) or JSON lines for "
                                  "a log collector (json)")
    return parser


def _setup_logging(args) -> None:
    from processor import logs, progress

    fmt = getattr(args, "log_format", "text")
    progress.json_logs = fmt == "json"  # a progress bar would break a stream of JSON lines
    logs.setup(logs.level_of(getattr(args, "verbose", False), getattr(args, "quiet", False)), fmt)


def cmd_parse(args) -> int:
    from processor.understand import understand

    try:
        settings = config_module.load(args.config)
        options = pipeline.understanding_options(settings)
    except config_module.ConfigError:
        if args.config:
            raise
        from processor.understand.model import Options
        options = Options()
    many = len(args.files) > 1
    status = 0
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            status = 1
            record = {"file": name, "error": f"{type(exc).__name__}: {exc.strerror or exc}"}
            print(json.dumps(record, ensure_ascii=False), flush=True)
            continue
        record = understand(raw, options).contract()
        if many:
            record["file"] = name
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return status


def cmd_poll(args, settings) -> int:
    from processor.mail.imap import worker_lock

    clock = clock_of(args, settings)
    with db.WorkerLock(args.db), worker_lock(settings.mailbox):
        store = Store(db.connect(args.db))
        from processor.progress import Progress

        with Progress("applying") as bar:  # a backlog of mail can take minutes
            report = pipeline.poll(store, settings, clock, progress=bar.update)
    if args.json:
        print(json.dumps(report.__dict__ | {"flush": report.flush.__dict__ if report.flush else None}))
    else:
        print(report.summary())
    if report.database_error:
        return 4
    return 1 if report.mailbox_error and not report.applied else 0


def cmd_backup(args, settings) -> int:
    conn = db.connect(args.db)
    try:
        done = db.backup(conn, args.target)
    except (OSError, sqlite3.Error) as exc:
        print(f"leernetwerk backup: {exc}; no copy was written", file=sys.stderr)
        return 1
    journal = (f"; {done.journaled} reply(ies) from the sent journal recorded as sent in the copy"
               if done.journaled else "")
    print(f"copied {args.db} to {args.target} ({done.pages} pages, integrity ok{journal})")
    if done.journal_error:
        # The copy is kept, but the timer must not look green: a person should know.
        print(f"leernetwerk backup: {done.journal_error}. The copy was written but does not"
              " record the replies the journal held: restoring it may send those few replies"
              " again.", file=sys.stderr)
        return 1
    return 0


def cmd_run(args, settings) -> int:
    from processor.desk import worker

    from processor.commands.operations import check_templates_or_exit

    check_templates_or_exit(settings)
    worker.run(settings, args.db, clock_of(args, settings))
    return 0


def cmd_status(args, settings) -> int:
    from processor.desk import status

    store = Store(db.connect(args.db))
    data = status.registry_status(store, settings)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(status.as_table(data))
    return 0


def cmd_remind(args, settings) -> int:
    from processor.desk import outbox, reminders

    now = clock_of(args, settings).now()
    if args.dry_run:
        data = reminders.plan(Store(db.connect(args.db)), settings, now).as_data()
        if args.json:
            print(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            for r in data["reminders"]:
                print(f"reminder  session {r['session']}  {r['lead_days']:>2} days  {r['email']}"
                      + ("  (caught up late)" if r["late"] else ""))
            for u in data["updates"]:
                print(f"update    sessions {', '.join(map(str, u['sessions']))}  {u['email']}")
            if not data["reminders"] and not data["updates"]:
                print("nothing due")
        return 0
    # Queuing is exactly-once through the database; sending is left to a running worker.
    store = Store(db.connect(args.db))
    report = reminders.queue_due(store, settings, now)
    flushed = outbox.flush(store, settings, now)
    if args.json:
        print(json.dumps({"queued": report.plan.as_data(), "flush": flushed.__dict__},
                         ensure_ascii=False, indent=2))
    elif flushed.busy:
        print(f"{report.summary()}; the worker is sending and sends them")
    else:
        print(f"{report.summary()}; {flushed.sent} sent, {flushed.retried} to retry, "
              f"{flushed.failed} failed")
    return 0


def cmd_digest(args, settings) -> int:
    from processor.desk import digest, outbox

    now = clock_of(args, settings).now()
    if not args.send:
        store = Store(db.connect(args.db))
        with store.transaction():  # one consistent picture; nothing is written
            data = digest.contents(store, settings, now)
        if args.json:
            print(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            rendered = digest.render(settings, data, now)
            print(f"Onderwerp: {rendered.subject}\n")
            print(rendered.text)
        return 0
    store = Store(db.connect(args.db))
    result = digest.queue(store, settings, now)
    flushed = outbox.flush(store, settings, now)
    if args.json:
        print(json.dumps({"day": result.day, "state": result.state, "outbox_id": result.outbox_id,
                          "flush": flushed.__dict__}, ensure_ascii=False, indent=2))
    elif flushed.busy:
        print(f"{result.summary()}; the worker is sending and sends it")
    else:
        print(f"{result.summary()}; {flushed.sent} sent, {flushed.retried} to retry, "
              f"{flushed.failed} failed")
    return 0 if result.state in ("queued", "skipped") else 1


def cmd_demo(args, settings) -> int:
    from processor.demo import demo

    return demo.run(settings, args)


def _organiser_command(args, settings) -> int:
    """Run one organiser change, print what it did, and send the replies it queued."""
    from processor.desk import organiser, outbox
    from processor.understand.model import Participant

    clock = clock_of(args, settings)
    now = clock.now()
    store = Store(db.connect(args.db))
    kwargs = {"now": now, "dry_run": args.dry_run}
    try:
        if args.command == "register":
            result = organiser.register(store, settings, name=args.name, email=args.email,
                                        organisation=args.organisation, **kwargs)
        elif args.command == "cancel":
            result = organiser.cancel(store, settings, email=args.email, reason=args.reason, **kwargs)
        elif args.command == "promote":
            result = organiser.promote(store, settings, email=args.email, reason=args.reason, **kwargs)
        elif args.command == "resolve":
            person = (Participant(args.name, args.email.lower(), args.organisation)
                      if args.email else None)
            result = organiser.resolve(store, settings, message_id=args.message,
                                       as_kind=args.as_kind, person=person, **kwargs)
        elif args.command == "retry":
            result = organiser.retry(store, message_id=args.message, **kwargs)
        elif args.command == "forget":
            result = organiser.forget(store, email=args.email, **kwargs)
        else:
            result = organiser.purge(store, settings, **kwargs)
    except organiser.OrganiserError as exc:
        print(f"leernetwerk {args.command}: {exc}", file=sys.stderr)
        return 1
    sent = None
    if result.replies and not args.dry_run:
        sent = outbox.flush(store, settings, now)
    if args.json:
        print(json.dumps({"dry_run": result.dry_run, "events": result.events,
                          "replies": result.replies, "sent": sent.sent if sent else 0},
                         ensure_ascii=False, indent=2))
    else:
        print(result.as_text())
        _say_sent(result.replies and not args.dry_run, sent)
    return 0


def _say_sent(queued: bool, sent) -> None:
    if not queued:
        return
    if sent.busy:
        print("The worker is sending right now; it sends these mail(s) too, at the latest at "
              "its next poll.")
    elif sent.unavailable:
        print(f"SMTP unavailable ({sent.unavailable}); the worker sends the mails later.")
    if sent.failed:
        print(f"{sent.failed} mail(s) konden niet verstuurd worden; ze staan bij de mislukte "
              "mails in het dagoverzicht.")


def cmd_review(args, settings) -> int:
    from processor.desk import review

    items = review.review_items(Store(db.connect(args.db)))
    if args.json:
        print(json.dumps(items, ensure_ascii=False, indent=2))
        return 0
    if not items:
        print("Niets te bekijken.")
    for item in items:
        print(f"[{item['id']}] {item['arrived_at'][:16]}  {item['sender'] or '?'}  "
              f"\u201c{item['subject']}\u201d ({item['state']})")
        for reason in item["reasons"]:
            print(f"    waarom: {reason}")
        if item["excerpt"]:
            print(f"    tekst:  {item['excerpt'][:160]!r}")
        print(f"    oplossen: {item['command']}")
    return 0


def cmd_history(args, settings) -> int:
    from processor.desk import organiser

    events = organiser.history(Store(db.connect(args.db)), args.email)
    if args.json:
        print(json.dumps(events, ensure_ascii=False, indent=2))
    elif not events:
        print(f"Niets bekend over {args.email}.")
    for e in events if not args.json else ():
        # Reasons quote names and subjects from mails: no control or bidi characters on screen.
        print(f"{e['at'][:19]}  {printable(e['actor']):<22} {e['action']:<20} "
              f"{printable(e['reason'])}")
    return 0


def cmd_export(args, settings) -> int:
    from processor.desk import status

    text = status.export_csv(Store(db.connect(args.db)), settings)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _production(name: str, args, settings) -> int:
    from processor.commands import operations

    return operations.COMMANDS[name](args, settings)


COMMANDS = {"remind": cmd_remind, "poll": cmd_poll, "run": cmd_run, "status": cmd_status, "demo": cmd_demo,
            "backup": cmd_backup, "digest": cmd_digest,
            "preview": lambda a, s: _production("preview", a, s),
            "reprocess": lambda a, s: _production("reprocess", a, s),
            "health": lambda a, s: _production("health", a, s),
            "export": cmd_export, "review": cmd_review, "history": cmd_history,
            **{name: _organiser_command for name in
               ("register", "cancel", "promote", "resolve", "retry", "forget", "purge")}}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        if args.command == "parse":
            return cmd_parse(args)
        if args.command == "check-config":
            from processor.commands.operations import cmd_check_config
            return cmd_check_config(args)
        settings = config_module.load(args.config)
        return COMMANDS[args.command](args, settings)
    except config_module.ConfigError as exc:
        print(f"leernetwerk: config error: {exc}", file=sys.stderr)
        return 2
    except AlreadyRunning as exc:
        print(f"leernetwerk: {exc}", file=sys.stderr)
        return 3
    except sqlite3.Error as exc:
        # One line for the person at the terminal, not a traceback (issue 16): the usual cause is
        # a folder the worker may not write in (SQLite keeps -wal and -shm files beside the db).
        print(f"leernetwerk: database {getattr(args, 'db', '?')}: {exc}; check that the file and "
              "its folder exist and are writable for this user", file=sys.stderr)
        return 4
    except PermissionError as exc:
        print(f"leernetwerk: no permission for {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
