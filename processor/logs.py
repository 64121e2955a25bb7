"""Logging for every command: readable lines for a person, or JSON lines for a log collector."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; anything else was passed as `extra=` and is worth keeping.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                        "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the `extra=` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
                      .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        # default=str: an extra field that JSON cannot hold (a datetime, a Path) still gets logged.
        return json.dumps(data, ensure_ascii=False, default=str)


def level_of(verbose: bool, quiet: bool) -> int:
    if verbose:
        return logging.DEBUG
    if quiet:
        return logging.WARNING
    return logging.INFO


def setup(level: int, fmt: str = "text", stream=None) -> None:
    """Replace whatever handlers the root logger has: a command configures logging once."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiosmtpd (the demo's SMTP server) logs every SMTP command at INFO.
    logging.getLogger("mail.log").setLevel(max(level, logging.WARNING))
    # imapclient turns imaplib's own tracing on: at DEBUG it writes every FETCH literal, i.e. whole
    # raw mails, into the log, out of reach of `forget` and `purge`. Its commands still log.
    logging.getLogger("imapclient.imaplib").setLevel(max(level, logging.INFO))


def current() -> tuple[int, str]:
    """The level and format setup() was given, for a helper process to log the same way."""
    root = logging.getLogger()
    json_ = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return root.level, "json" if json_ else "text"
