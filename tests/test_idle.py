"""IMAP IDLE in the worker against Dovecot: new mail is answered within seconds, a killed
connection is opened again, and a server without IDLE leaves the worker polling."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time

import pytest

from processor.mail import imap
from tests.desk import PROJECT, WorkerProcess, desk_settings, signup
from tests.test_desk import write_config

ARRIVED = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def start_worker(tmp_path, dovecot, smtp_server):
    cfg = write_config(tmp_path, dovecot, smtp_server)
    text = cfg.read_text(encoding="utf-8")
    # Only IDLE can wake it: the interval poll would come after the test has given up.
    text = text.replace("idle = false", "idle = true")
    assert "idle = true" in text
    text = text.replace("poll_interval_seconds = 60", "poll_interval_seconds = 3600")
    cfg.write_text(text, encoding="utf-8")
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    return WorkerProcess(["--config", str(cfg), "--db", str(tmp_path / "state.sqlite")],
                         env=env, log=tmp_path / "worker.log")


def imap_processes(dovecot) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(dovecot._proc.pid)],
                         capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if line.split()[1:] == ["imap"]]


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_mail_arriving_while_the_worker_idles_is_answered_within_seconds_and_after_a_kill(
        dovecot, smtp_server, tmp_path):
    proc = start_worker(tmp_path, dovecot, smtp_server)
    try:
        # Ready when the IDLE session is open (its imap process) and the first poll is done.
        assert wait_until(lambda: imap_processes(dovecot), 15)
        time.sleep(1)

        start = time.monotonic()
        dovecot.append(signup("Ann Peeters", "ann@gent.be", "Stad Gent", date=ARRIVED), ARRIVED)
        smtp_server.wait_for(1, timeout=10)
        assert time.monotonic() - start < 5

        # The server side of the IDLE session dies without a word (no BYE): kill -9.
        for pid in imap_processes(dovecot):
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: imap_processes(dovecot), 15), "IDLE was not re-opened"
        time.sleep(1)

        start = time.monotonic()
        dovecot.append(signup("Bert Maes", "bert@gent.be", "Stad Gent", date=ARRIVED), ARRIVED)
        smtp_server.wait_for(2, timeout=15)
        assert time.monotonic() - start < 8
    finally:
        out = proc.stop()
    assert "IMAP IDLE lost" in out, out
    assert proc.returncode == 0, out


def test_the_watcher_tells_new_mail_from_quiet_and_notices_a_hang_up(dovecot, smtp_server,
                                                                    monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch, mailbox={"idle": True})
    with imap.Watcher(settings.mailbox) as watcher:
        assert watcher.can_idle
        assert watcher.wait(0.2) is False
        dovecot.append(signup("Ann Peeters", "ann@gent.be", "Stad Gent", date=ARRIVED), ARRIVED)
        assert watcher.wait(5) is True
        for pid in imap_processes(dovecot):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(imap.MailboxError):
            for _ in range(50):  # idle_check alone would answer [] for ever
                watcher.wait(0.1)


def test_the_idle_session_is_renewed(dovecot, smtp_server, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch,
                             mailbox={"idle": True, "idle_renew_seconds": 1})
    with imap.Watcher(settings.mailbox) as watcher:
        watcher.wait(0.1)
        first = watcher.idling_since
        time.sleep(1.1)
        watcher.wait(0.1)
        assert watcher.idling_since > first


@pytest.mark.parametrize("value, problem", [(0, "positive"), (3600, "at most 1740"),
                                            ("yes", "must be a int")])
def test_idle_settings_are_validated_naming_file_and_key(value, problem):
    from processor import config
    from tests.desk import base_config
    raw = base_config()
    raw["mailbox"]["idle_renew_seconds"] = value
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")
    assert "[mailbox] idle_renew_seconds" in str(err.value) and problem in str(err.value)


def test_a_server_without_idle_leaves_the_worker_polling(dovecot, smtp_server, monkeypatch):
    import threading

    from processor.desk import worker
    settings = desk_settings(dovecot, smtp_server, monkeypatch, mailbox={"idle": True})
    monkeypatch.setattr(imap.Watcher, "can_idle", property(lambda self: False))
    woken = []
    worker.idle_loop(settings, threading.Event(), lambda: woken.append(1))  # returns at once
    assert woken == []
