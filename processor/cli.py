"""The `leernetwerk` commands: parse arguments, call one function, print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from processor import config as config_module
from processor import db, pipeline
from processor.clock import Clock, parse_moment
from processor.db import AlreadyRunning, Store

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
    p = sub.add_parser("demo", help="run the whole desk against embedded mail servers, with samples")
    _common(p, time=True)
    p.set_defaults(db=None)
    p.add_argument("--count", type=int, default=25, help="number of sample signups (default 25)")
    return parser


def _setup_logging(args) -> None:
    level = logging.INFO
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd (the demo's SMTP server) logs every SMTP command at INFO.
    logging.getLogger("mail.log").setLevel(max(level, logging.WARNING))


def _clock(args, settings) -> Clock:
    now = getattr(args, "now", None)
    if not now:
        return Clock()
    try:
        return Clock(parse_moment(now, settings.event.timezone))
    except ValueError as exc:
        raise SystemExit(f"leernetwerk: --now {now!r}: {exc}") from None


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
    clock = _clock(args, settings)
    with db.WorkerLock(args.db):
        store = Store(db.connect(args.db))
        report = pipeline.poll(store, settings, clock)
    if args.json:
        print(json.dumps(report.__dict__ | {"flush": report.flush.__dict__ if report.flush else None}))
    else:
        print(report.summary())
    return 1 if report.mailbox_error and not report.applied else 0


def cmd_run(args, settings) -> int:
    from processor import worker

    worker.run(settings, args.db, _clock(args, settings))
    return 0


def cmd_status(args, settings) -> int:
    from processor import status

    store = Store(db.connect(args.db))
    data = status.registry_status(store, settings)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(status.as_table(data))
    return 0


def cmd_demo(args, settings) -> int:
    from processor import demo

    return demo.run(settings, args)


COMMANDS = {"poll": cmd_poll, "run": cmd_run, "status": cmd_status, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        if args.command == "parse":
            return cmd_parse(args)
        settings = config_module.load(args.config)
        return COMMANDS[args.command](args, settings)
    except config_module.ConfigError as exc:
        print(f"leernetwerk: config error: {exc}", file=sys.stderr)
        return 2
    except AlreadyRunning as exc:
        print(f"leernetwerk: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
