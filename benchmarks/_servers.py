"""Shared set-up of the benchmarks: real Dovecot and aiosmtpd (from tests/servers.py), settings, signups."""

from __future__ import annotations

import copy
import datetime as dt
import os
import sys
import threading
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


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's own peak RSS (VmHWM). Not ru_maxrss: a child started with vfork and exec
    (subprocess, multiprocessing's spawn) inherits its parent's peak there, so a benchmark
    whose parent keeps every mail the SMTP server received would report the parent's size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024   # kB
    raise OSError(f"no VmHWM in /proc/{pid}/status")


class ChildrenPeak:
    """The highest VmHWM of this process's children while it runs (the helper that reads mail
    ahead), sampled every `interval` seconds; a peak in the last interval may be missed."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.mib = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        me = os.getpid()
        while not self._stop.wait(self.interval):
            try:
                children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    self.mib = max(self.mib, peak_rss_mib(child))
                except OSError:
                    pass   # it ended meanwhile


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
