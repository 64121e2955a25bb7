"""The one clock of the program: real time, or the moment given with --now."""

from __future__ import annotations

import datetime as dt


class Clock:
    """Returns aware UTC datetimes; a fixed clock keeps answering the moment it was given."""

    def __init__(self, fixed: dt.datetime | None = None):
        if fixed is not None and fixed.tzinfo is None:
            raise ValueError("a fixed moment needs a UTC offset, e.g. 2018-06-01T10:00:00+02:00")
        self._fixed = fixed.astimezone(dt.timezone.utc) if fixed else None

    def now(self) -> dt.datetime:
        return self._fixed or dt.datetime.now(dt.timezone.utc)

    @property
    def is_fixed(self) -> bool:
        return self._fixed is not None


def parse_moment(text: str, default_tz: dt.tzinfo | None = None) -> dt.datetime:
    """ISO-8601; a moment without offset is read in the event's timezone (what organisers mean)."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        if default_tz is None:
            raise ValueError(f"{text!r} has no UTC offset")
        value = value.replace(tzinfo=default_tz)
    return value


def iso(moment: dt.datetime) -> str:
    """Fixed-width UTC text, so that SQL string order is time order."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
