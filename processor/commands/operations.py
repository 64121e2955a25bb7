"""The commands for running the desk in production: check-config, preview, reprocess, health."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from processor.store import db
from processor.commands.common import clock_of
from processor.store.db import Store


def _confirm(question: str) -> bool:
    """A y/N question on the terminal; anything but yes is no."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes", "j", "ja")


def add_parsers(sub, common) -> None:
    """Called by cli.build_parser with its subparsers and its `_common` helper."""
    p = sub.add_parser("check-config", help="check the config, log in to IMAP and SMTP (nothing "
                                            "sent), check folders and templates")
    common(p, data=True)
    p.add_argument("--create-folders", action="store_true",
                   help="create missing folders without asking")
    p.add_argument("--offline", action="store_true",
                   help="check the file and the templates only, no servers")

    from processor.demo.samples import KINDS

    p = sub.add_parser("preview", help="show a mail as a participant (or organiser) gets it, "
                                       "for a sample person")
    common(p, time=True)
    p.add_argument("kind", choices=KINDS, metavar="KIND", help="one of: " + ", ".join(KINDS))
    p.add_argument("--variant", type=int, default=1,
                   help="another case of the same mail (e.g. 2: registered by a colleague)")
    p.add_argument("--to-eml", metavar="FILE", help="write the whole mail as .eml instead")
    p.add_argument("--html", action="store_true", help="print the HTML part instead of the text")

    p = sub.add_parser("reprocess", help="read stored mails again after an improvement; show "
                                         "what would change, apply what you confirm")
    common(p, time=True, data=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", help="mail ids, e.g. 3,5-9 (the ids of `review` and `history`)")
    which.add_argument("--review", action="store_true",
                       help="every mail in review or set aside (quarantined)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="apply", action="store_false",
                      help="show what would change, change nothing (the default)")
    mode.add_argument("--apply", dest="apply", action="store_true",
                      help="apply the changes you confirm, mail by mail")
    p.set_defaults(apply=False)
    p.add_argument("--yes", action="store_true",
                   help="with --apply: confirm every listed change without asking")

    p = sub.add_parser("health", help="for monitoring: exit 0 healthy, 1 degraded, 2 unhealthy")
    common(p, time=True, data=True)
    p.add_argument("--poll-warn", type=float, metavar="MIN",
                   help="degraded when the last good poll is older (default: 3 poll intervals, "
                        "at least 5)")
    p.add_argument("--poll-crit", type=float, default=30, metavar="MIN",
                   help="unhealthy when older (default %(default)s)")
    p.add_argument("--outbox-warn", type=float, default=15, metavar="MIN",
                   help="degraded when the oldest unsent mail is older (default %(default)s)")
    p.add_argument("--outbox-crit", type=float, default=120, metavar="MIN",
                   help="unhealthy when older (default %(default)s)")
    p.add_argument("--max-failed", type=int, default=0, metavar="N",
                   help="mails refused in the last 24 h before degraded (default %(default)s)")
    p.add_argument("--max-quarantined", type=int, default=0, metavar="N",
                   help="set-aside mails before degraded (default %(default)s)")
    p.add_argument("--max-review", type=int, default=20, metavar="N",
                   help="mails waiting for an organiser before degraded (default %(default)s)")


# -- check-config --------------------------------------------------------------------------------

def cmd_check_config(args) -> int:
    """Runs before (and instead of) the usual config loading: a broken file is its first finding."""
    from processor.commands import checkconfig

    create = True if args.create_folders else None
    ask = _confirm if (sys.stdin.isatty() and not args.json) else None
    report = checkconfig.run(args.config, network=not args.offline, create_folders=create,
                             ask=ask)
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": [p.as_data() for p in report.problems],
                          "warnings": [w.as_data() for w in report.warnings]},
                         ensure_ascii=False, indent=2))
    else:
        for line in report.ok:
            print(f"ok      {line}")
        for warning in report.warnings:
            print(str(warning).replace("PROBLEM", "WARNING", 1))
        for problem in report.problems:
            print(problem)
        print(f"{len(report.problems)} problem(s) found." if report.problems else "All good.")
    return 1 if report.problems else 0


# -- preview -------------------------------------------------------------------------------------

def cmd_preview(args, settings) -> int:
    from processor.demo import samples

    now = clock_of(args, settings).now() if args.now else None
    try:
        msg = samples.build(settings, args.kind, variant=args.variant - 1, now=now)
    except IndexError as exc:
        print(f"leernetwerk preview: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        problems = samples.check_templates(settings, now)
        for p in problems:
            print(f"leernetwerk preview: {p}", file=sys.stderr)
        if not problems:
            print(f"leernetwerk preview: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.to_eml:
        Path(args.to_eml).write_bytes(bytes(msg))
        print(f"wrote {args.to_eml}: {msg['Subject']}")
    elif args.html:
        print(msg.get_body(preferencelist=("html",)).get_content())
    else:
        print(samples.as_text(msg))
    return 0


def check_templates_or_exit(settings) -> None:
    """At the start of `run`: a template that cannot render stops the worker before any mail."""
    from processor.demo import samples

    problems = samples.check_templates(settings)
    if problems:
        for p in problems:
            print(f"leernetwerk: {p}", file=sys.stderr)
        print("leernetwerk: the worker did not start; fix the template(s), then "
              "`leernetwerk preview KIND` to see the mail", file=sys.stderr)
        # 2, like a config error: the service unit does not restart on it (nothing would change).
        raise SystemExit(2)


# -- reprocess -----------------------------------------------------------------------------------

def cmd_reprocess(args, settings) -> int:
    from processor.desk import outbox, pipeline, reprocess
    from processor.progress import Progress

    if args.apply and not args.yes and not sys.stdin.isatty():
        print("leernetwerk reprocess: --apply asks per mail on a terminal; without one, add "
              "--yes to confirm every listed change", file=sys.stderr)
        return 2
    now = clock_of(args, settings).now()
    store = Store(db.connect(args.db))
    try:
        ids = reprocess.parse_ids(args.ids) if args.ids else None
        rows = reprocess.select(store, ids=ids, review=args.review)
    except reprocess.ReprocessError as exc:
        print(f"leernetwerk reprocess: {exc}", file=sys.stderr)
        return 2
    options = pipeline.understanding_options(settings)
    mails = []
    with Progress("reading") as bar:
        for i, row in enumerate(rows, start=1):
            mails.append(reprocess.read_again(row, options))
            bar.update(i, len(rows))
    changed = [m for m in mails if m.changed]
    for m in changed:
        reprocess.plan(store, settings, m, now)
    replies = 0
    if args.apply:
        for m in changed:
            if not args.json:
                print(m.as_text())
            if not (args.yes or _confirm(f"Apply the change to mail {m.id}?")):
                continue
            try:
                replies += reprocess.apply(store, settings, m, now).replies
            except reprocess.ReprocessError as exc:
                print(f"leernetwerk reprocess: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps({"dry_run": not args.apply, "mails": [m.as_data() for m in mails]},
                         ensure_ascii=False, indent=2))
    else:
        if not args.apply:
            for m in mails:
                print(m.as_text())
        applied = sum(m.applied for m in mails)
        print(f"{len(mails)} mail(s) read again, {len(changed)} would change"
              + (f", {applied} applied, {replies} mail(s) queued" if args.apply
                 else " (--dry-run: nothing changed; --apply to choose what to apply)"))
    if replies:
        sent = outbox.flush(store, settings, now)
        if not args.json:
            if sent.busy:
                print("the worker is sending right now and sends the queued mails")
            else:
                print(f"{sent.sent} sent" + (f"; SMTP unavailable ({sent.unavailable}), the "
                                             "worker sends them later" if sent.unavailable else ""))
    return 0


# -- health --------------------------------------------------------------------------------------

def cmd_health(args, settings) -> int:
    from processor.commands import health

    if not Path(args.db).exists():
        message = f"no database at {args.db}: the worker never ran here, or --db is wrong"
        if args.json:
            print(json.dumps({"status": "unhealthy", "exit_code": 2, "checks": [
                {"name": "database", "status": "unhealthy", "detail": message, "value": None}]}))
        else:
            print(f"UNHEALTHY\n  unhealthy database   {message}")
        return 2
    limits = health.Thresholds(
        poll_warn_minutes=args.poll_warn, poll_crit_minutes=args.poll_crit,
        outbox_warn_minutes=args.outbox_warn, outbox_crit_minutes=args.outbox_crit,
        max_failed=args.max_failed, max_quarantined=args.max_quarantined,
        max_review=args.max_review)
    try:
        store = Store(db.connect(args.db))
        result = health.check(store, settings, clock_of(args, settings).now(), limits)
    except sqlite3.Error as exc:  # a database that cannot be read is the worst finding of all
        result = health.Health(checked_at="", checks=[
            health.Check("database", "unhealthy", f"{args.db}: {exc}")])
    if args.json:
        print(json.dumps(result.as_data(), ensure_ascii=False, indent=2))
    else:
        print(result.as_text())
    return result.exit_code


COMMANDS = {"preview": cmd_preview, "reprocess": cmd_reprocess, "health": cmd_health}
