"""Shared set-up of the benchmarks: real Dovecot and aiosmtpd (from tests/servers.py), settings, signups."""

from __future__ import annotations

import copy
import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from processor import config  # noqa: E402
from tests.desk import PASSWORD_ENV, base_config, signup  # noqa: E402
from tests.servers import DovecotServer, SmtpServer  # noqa: E402

# Before registration closes (the second session) and after the first mail: every signup counts.
START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
NOW = dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc)


def person(i: int) -> tuple[str, str, str]:
    return (f"Deelnemer {i}", f"deelnemer.{i}@gemeente{i % 50}.be", f"Gemeente Proef{i % 50}")


def signup_mail(i: int) -> bytes:
    name, email, org = person(i)
    return signup(name, email, org, date=START + dt.timedelta(seconds=i))


def append_signups(dovecot: DovecotServer, first: int, count: int, chunk: int = 200) -> None:
    """APPEND over one connection (MULTIAPPEND in chunks): one connection per mail would make
    the set-up, not the thing measured, take the time."""
    c = dovecot.client(timeout=120)
    try:
        for start in range(first, first + count, chunk):
            stop = min(start + chunk, first + count)
            c.multiappend("INBOX", [
                {"msg": signup_mail(i), "date": START + dt.timedelta(seconds=i)}
                for i in range(start, stop)])
    finally:
        c.logout()


def settings_dict(dovecot: DovecotServer, smtp_server: SmtpServer, **sections) -> dict:
    raw = copy.deepcopy(base_config())
    raw["mailbox"].update(host=dovecot.host, port=dovecot.port, security="none",
                          username=dovecot.username, password_env=PASSWORD_ENV)
    raw["smtp"].update(host=smtp_server.host, port=smtp_server.port, security="none", username="",
                       password_env="")
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    os.environ[PASSWORD_ENV] = dovecot.password
    return raw


def settings_from(raw: dict) -> config.Settings:
    return config.from_dict(raw, ROOT / "config" / "leernetwerk.toml")


def peak_rss_mib_from_rusage(usage) -> float:
    # ru_maxrss is in KiB on Linux.
    return usage.ru_maxrss / 1024


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process, its children that ended, and its live
    descendants: Dovecot forks a process per connection."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue   # it ended meanwhile: its parent counts it once it is reaped
        # fields[11:15]: utime, stime, cutime, cstime (stat(5), counted after the name)
        total += sum(int(f) for f in fields[11:15]) / tick
        todo.extend(int(c) for c in children)
    return total


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
