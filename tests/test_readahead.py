"""A backlog understood ahead in a helper process: the same registry and replies as reading each
mail in the worker, in the same order; a helper that dies or fails loses nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processor.store import db
from processor.desk import pipeline, readahead
from processor.clock import Clock
from processor.desk.readahead import Reader, Unreadable
from processor.understand import understand
from tests.desk import desk_settings, signup

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
T0 = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone.utc)
NOW = dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc)


def backlog() -> list[bytes]:
    """Our fixtures (bounces, out-of-office, cancellations, a broken mail) among 30 signups."""
    mails = [signup(f"Deelnemer {chr(65 + i % 26)}{i}", f"deelnemer.{i}@gemeente{i % 7}.be",
                    "Gemeente Proef", date=T0) for i in range(30)]
    fixtures = sorted(DATA.glob("*.eml"))
    for i, path in enumerate(fixtures):
        mails.insert((i * 7) % len(mails), path.read_bytes())
    return mails


def applied(path: Path, mails: list[bytes], settings) -> tuple[pipeline.PollReport, dict]:
    store = db.Store(db.connect(path))
    with store.transaction():
        for uid, raw in enumerate(mails, start=1):
            store.add_message(identity=f"m{uid}", folder="INBOX", uidvalidity=1, uid=uid,
                              message_id=None, arrived_at=T0 + dt.timedelta(minutes=uid),
                              first_seen_at=NOW, raw=raw)
    report = pipeline.PollReport()
    pipeline.apply_pending(store, settings, Clock(NOW), report)
    q = store.conn.execute
    seen = {
        "messages": q("SELECT uid, state, kind, error FROM messages ORDER BY uid").fetchall(),
        "registrations": q("SELECT email, name, status, arrival_uid, arrival_index FROM"
                           " registrations ORDER BY id").fetchall(),
        "positions": [store.waitlist_position(r[0]) for r in
                      q("SELECT id FROM registrations ORDER BY id").fetchall()],
        "outbox": q("SELECT kind, recipients, order_key FROM outbox ORDER BY id").fetchall(),
        "events": q("SELECT action, email, reason FROM events ORDER BY id").fetchall(),
    }
    store.conn.close()
    return report, {k: [tuple(r) if not isinstance(r, (int, type(None))) else r for r in v]
                    for k, v in seen.items()}


def test_reading_ahead_in_a_helper_decides_and_answers_exactly_as_reading_here(
        tmp_path, monkeypatch):
    settings = desk_settings()
    mails = backlog()
    monkeypatch.setattr(readahead, "GUARDED", False)  # compares with reading in this process
    monkeypatch.setattr(readahead, "MIN_BACKLOG", 10 ** 9)
    here, expected = applied(tmp_path / "here.sqlite", mails, settings)
    monkeypatch.setattr(readahead, "MIN_BACKLOG", 1)
    monkeypatch.setattr(readahead, "CHUNK_MAILS", 4)
    monkeypatch.setattr(pipeline, "PAGE", 25)  # several pages: reading ahead restarts on each
    ahead, got = applied(tmp_path / "ahead.sqlite", mails, settings)

    assert here.read_ahead == 0
    # The helper needs a moment to start; the worker reads the first mails itself meanwhile.
    assert 0 < ahead.read_ahead <= len(mails)
    assert (ahead.applied, ahead.quarantined) == (here.applied, here.quarantined)
    assert here.applied + here.quarantined == len(mails)
    assert got == expected
    assert sum(1 for r in got["registrations"] if r[2] == "confirmed") == 20
    assert any(p for p in got["positions"])


def test_a_helper_that_dies_leaves_the_rest_to_the_worker(monkeypatch):
    mails = {i: raw for i, raw in enumerate(backlog(), start=1)}
    options = pipeline.understanding_options(desk_settings())
    monkeypatch.setattr(readahead, "CHUNK_MAILS", 3)
    results = {}
    killed_after = None
    with Reader(options, mails.__getitem__, helper=True) as reader:
        reader.warm.result(timeout=60)
        for message_id, reading in reader.readings(list(mails)):
            results[message_id] = reading
            if killed_after is None and reader.by_helper:
                killed_after = len(results)
                for pid in list(reader.pool._processes):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)  # the executor notices a death in its own thread
        assert reader.pool is None  # noticed, and the rest was read in this process
    assert killed_after is not None and killed_after < len(mails) - 10
    assert list(results) == list(mails)
    for message_id, reading in results.items():
        expected = understand(mails[message_id], options)
        assert reading is None or reading == expected, message_id


def test_a_mail_the_helper_could_not_understand_is_set_aside_with_the_reason(tmp_path):
    settings = desk_settings()
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    with store.transaction():
        store.add_message(identity="m1", folder="INBOX", uidvalidity=1, uid=1, message_id=None,
                          arrived_at=T0, first_seen_at=NOW, raw=b"Subject: x\r\n\r\nbody")
    options = pipeline.understanding_options(settings)
    state = pipeline.apply_one(store, settings, options, 1, NOW,
                               Unreadable("ValueError: a header the parser chokes on"))
    assert state == "quarantined"
    row = store.message(1)
    assert (row["state"], row["error"]) == ("quarantined",
                                            "ValueError: a header the parser chokes on")
    [event] = store.conn.execute("SELECT action, reason FROM events").fetchall()
    assert event["action"] == "quarantined" and "the raw mail is kept" in event["reason"]
    assert store.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_read_one_turns_an_exception_into_the_reason_instead_of_raising(monkeypatch):
    def broken(raw, options):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(readahead, "understand", broken)
    got = readahead.read_one(b"x", None)
    assert isinstance(got, Unreadable)
    assert got.error.startswith("UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff")


@pytest.mark.parametrize("size", [readahead.CHUNK_BYTES + 1])
def test_chunks_are_bounded_by_bytes_so_large_mails_are_not_all_held_at_once(size):
    raws = {i: b"x" * size for i in range(5)}
    reader = Reader(None, raws.__getitem__, helper=False)
    assert [len(ids) for ids, _ in reader._chunks(list(raws))] == [1, 1, 1, 1, 1]


def test_a_worker_killed_outright_leaves_no_helper_behind(tmp_path):
    # A worker that is SIGKILLed (or killed by the OOM killer) cannot stop its helper itself.
    script = (
        "import sys, time\n"
        "from processor.desk import pipeline\n"
        "from processor.desk.readahead import Reader\n"
        "from tests.desk import desk_settings\n"
        "if __name__ == '__main__':\n"
        "    options = pipeline.understanding_options(desk_settings())\n"
        "    reader = Reader(options, lambda i: b'', helper=True)\n"
        "    reader.warm.result(timeout=60)\n"
        "    print(*reader.pool._processes, flush=True)\n"
        "    time.sleep(600)\n")
    path = tmp_path / "worker.py"
    path.write_text(script)
    worker = subprocess.Popen([sys.executable, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    [helper] = [int(pid) for pid in worker.stdout.readline().split()]
    assert _alive(helper)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while _alive(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(helper)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"   # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_helper_that_died_between_pages_is_noticed_on_the_next_page(monkeypatch):
    mails = {i: raw for i, raw in enumerate(backlog()[:12], start=1)}
    options = pipeline.understanding_options(desk_settings())
    monkeypatch.setattr(readahead, "CHUNK_MAILS", 2)
    with Reader(options, mails.__getitem__, helper=True) as reader:
        reader.warm.result(timeout=60)
        first = dict(reader.readings(list(mails)[:6]))
        for pid in list(reader.pool._processes):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)  # idle, between two pages: nobody is waiting on the helper
        second = dict(reader.readings(list(mails)[6:]))
        assert reader.pool is None
    assert list(first) + list(second) == list(mails)
    for message_id, reading in second.items():
        assert reading is None or reading == understand(mails[message_id], options)


def test_a_helper_that_cannot_start_leaves_the_reading_to_the_worker(monkeypatch, caplog):
    def no_processes(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(readahead.cf.ProcessPoolExecutor, "submit", no_processes)
    with Reader(pipeline.understanding_options(desk_settings()), {1: b"x"}.__getitem__,
                helper=True) as reader:
        assert reader.pool is None
        assert list(reader.readings([1, 2])) == [(1, None), (2, None)]
    assert "could not start (OSError: [Errno 24] Too many open files)" in caplog.text


def test_ctrl_c_in_the_terminal_does_not_kill_the_helper_before_the_worker_stops_it():
    options = pipeline.understanding_options(desk_settings())
    with Reader(options, {}.__getitem__, helper=True) as reader:
        reader.warm.result(timeout=60)
        [pid] = list(reader.pool._processes)
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert _alive(pid)
        assert reader._helping()


def test_the_helper_logs_in_the_workers_format(tmp_path):
    # With --log-format json the journal gets one JSON object per line, from the helper too.
    script = (
        "import logging\n"
        "from processor import logs\nfrom processor.desk import readahead\n"
        "from processor.desk.readahead import Reader\n"
        "from processor.understand.model import Options\n"
        "def warn():\n"
        "    logging.getLogger('processor.understand').warning('a mail the parser chokes on')\n"
        "    return True\n"
        "if __name__ == '__main__':\n"
        "    logs.setup(logging.INFO, 'json')\n"
        "    with Reader(Options(domain_organisations={}), {}.__getitem__, helper=True) as r:\n"
        "        r.warm.result(timeout=60)\n"
        "        r.pool.submit(warn).result(timeout=60)\n")
    path = tmp_path / "worker.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "chokes" in line]
    assert json.loads(line)["message"] == "a mail the parser chokes on"
