"""A one-line progress bar on stderr for long runs (a backlog, a reprocess); silent unless a person watches."""

from __future__ import annotations

import sys
import time

# Redrawing more often than this only costs time on a slow terminal.
REDRAW_SECONDS = 0.1
WIDTH = 30


class Progress:
    """`update(done, total)` redraws; `close()` ends the line. Off when stderr is not a terminal
    or logs are JSON lines (a bar would corrupt a log collector's stream)."""

    def __init__(self, label: str, *, enabled: bool | None = None, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = is_interactive(self.stream)
        self.enabled = enabled
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if done < total and now - self._last < REDRAW_SECONDS:
            return
        self._last = now
        filled = WIDTH * min(done, total) // total
        bar = "#" * filled + "-" * (WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Set by the command line when logs go out as JSON lines: no bar then, whatever the terminal.
json_logs = False


def is_interactive(stream=None) -> bool:
    stream = stream or sys.stderr
    try:
        return not json_logs and stream.isatty()
    except (AttributeError, ValueError):
        return False
