"""What every command shares: the clock a command acts at (`--now`), so that cli and operations need not import each other."""

from __future__ import annotations

from processor.clock import Clock, parse_moment


def clock_of(args, settings) -> Clock:
    now = getattr(args, "now", None)
    if not now:
        return Clock()
    try:
        return Clock(parse_moment(now, settings.event.timezone))
    except ValueError as exc:
        raise SystemExit(f"leernetwerk: --now {now!r}: {exc}") from None
