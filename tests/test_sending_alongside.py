"""A backlog's replies go out while the rest of it is still being applied (real Dovecot and
aiosmtpd): first come first answered, each once, reminders and the digest after every reply, and
a relay that is down, busy or refusing loses nothing."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from processor.store import db
from processor.desk import outbox, pipeline, readahead
from processor.clock import Clock
from tests.desk import PROJECT, WorkerProcess, desk_settings, signup
from tests.test_desk import NOW, START, append_out_of_order, people, write_config
from tests.test_relay import FakeTime, queue
from tests.test_waitlist import CANCEL, plain_mail

BACKLOG = 40


@pytest.fixture
def backlog(dovecot, tmp_path, monkeypatch):
    """40 signups waiting, arrival order unlike their Date headers; 40 counts as a backlog."""
    monkeypatch.setattr(readahead, "MIN_BACKLOG", 10)
    arrivals = append_out_of_order(dovecot, people(BACKLOG))
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    return store, sorted(arrivals, key=arrivals.get)


def unpaced(dovecot, server, monkeypatch):
    """Settings without the relay's pace (30 a minute by default), so a poll sends all 40."""
    return desk_settings(dovecot, server, monkeypatch, smtp={"max_per_minute": 0})


def recipients(server) -> list[str]:
    return [m.message["To"].addresses[0].addr_spec for m in server.messages]


def test_the_first_replies_go_out_while_the_rest_of_the_backlog_is_applied(
        backlog, dovecot, smtp_server, monkeypatch):
    store, in_arrival = backlog
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    applied, seen_midway = [], []
    apply_one = pipeline.apply_one

    def apply_then_look(*args, **kwargs):
        state = apply_one(*args, **kwargs)
        applied.append(state)
        if len(applied) == 10:
            # Without sending alongside, nothing reaches the relay before the last mail is
            # applied: this wait would end empty-handed.
            try:
                smtp_server.wait_for(1, timeout=10)
            except AssertionError:
                pass
            seen_midway.extend(recipients(smtp_server))
        return state

    monkeypatch.setattr(pipeline, "apply_one", apply_then_look)

    report = pipeline.poll(store, settings, NOW)

    assert seen_midway and seen_midway == in_arrival[:len(seen_midway)]
    assert report.applied == BACKLOG and report.flush.sent == BACKLOG
    assert report.flush.retried == report.flush.failed == 0
    # Each participant once, in the order their mails reached the server.
    assert recipients(smtp_server) == in_arrival
    assert len({m.message["Message-ID"] for m in smtp_server.messages}) == BACKLOG
    assert {r["state"] for r in store.outbox_rows()} == {"sent"}
    assert {r["attempts"] for r in store.outbox_rows()} == {1}


def test_each_reply_the_relay_accepted_is_on_record_before_the_next_goes_out(
        backlog, dovecot, smtp_server, monkeypatch):
    """So a crash (SIGKILL, power) makes at most the one mail whose 250 was on its way go out
    twice, as when sending after the apply: a reply accepted but not on record is sent again."""
    store, _ = backlog
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    journal = db.sent_journal_path(store.path)
    unrecorded = []

    def on_record() -> set[int]:
        with sqlite3.connect(store.path) as conn:
            ids = {i for (i,) in conn.execute("SELECT id FROM outbox WHERE state = 'sent'")}
        if journal.exists():
            with sqlite3.connect(journal) as conn:
                ids |= {i for (i,) in conn.execute("SELECT outbox_id FROM sent")}
        return ids

    during_apply = []

    def look(envelope):
        unrecorded.append(len(smtp_server.messages) - len(on_record()))
        with sqlite3.connect(store.path) as conn:
            during_apply.append(conn.execute(
                "SELECT COUNT(*) FROM messages WHERE state = 'new'").fetchone()[0] > 0)
        return None   # accept

    smtp_server.set_responder(look)

    report = pipeline.poll(store, settings, NOW)

    assert report.flush.sent == BACKLOG and len(unrecorded) == BACKLOG
    assert max(unrecorded) == 0, unrecorded
    assert any(during_apply)   # this is about sending alongside, not the flush after it
    # All of it is in the outbox now; the journal has served and is empty.
    assert {r["state"] for r in store.outbox_rows()} == {"sent"}
    assert db.SentJournal(store.path).entries() == []


def test_a_reply_the_journal_holds_after_a_crash_is_recorded_and_never_sent_again(
        tmp_path, smtp_server, caplog):
    settings = desk_settings(smtp_server=smtp_server, smtp={"max_per_minute": 0})
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    queue(store, 3)
    # The worker died after the relay's 250 for the first two, before the outbox knew.
    rows = store.outbox_rows()
    [first, second, third] = [r["id"] for r in rows]
    journal = db.SentJournal(store.path)
    journal.add(first, rows[0]["message_id"], NOW.now())
    journal.add(second, rows[1]["message_id"], NOW.now())
    journal.close()

    report = outbox.flush(store, settings, NOW.now())

    assert report.sent == 1 and recipients(smtp_server) == ["p2@stad.be"]
    assert {r["id"]: r["state"] for r in store.outbox_rows()} == {
        first: "sent", second: "sent", third: "sent"}
    assert "2 mail(s) the relay had accepted before the worker stopped" in caplog.text
    assert db.SentJournal(store.path).entries() == []


def test_a_journal_left_beside_a_restored_database_marks_no_other_mail_as_sent(
        tmp_path, smtp_server, caplog):
    """Restored from a backup, the database hands the journal's row numbers to new mails: only
    the Message-ID the relay accepted may be marked sent, or those people never hear back."""
    settings = desk_settings(smtp_server=smtp_server, smtp={"max_per_minute": 0})
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    queue(store, 2)
    rows = store.outbox_rows()
    journal = db.SentJournal(store.path)
    # The database this journal belonged to had other mails in rows 1 and 2.
    journal.add(rows[0]["id"], "<another-mail@leernetwerk>", NOW.now())
    journal.add(rows[1]["id"], rows[1]["message_id"], NOW.now())   # this one was this mail
    journal.close()

    report = outbox.flush(store, settings, NOW.now())

    assert report.sent == 1 and recipients(smtp_server) == ["p0@stad.be"]
    assert {r["state"] for r in store.outbox_rows()} == {"sent"}
    assert "1 entr(y/ies) of the sent journal" in caplog.text
    assert f"ignored: row {rows[0]['id']} <another-mail@leernetwerk>" in caplog.text
    assert db.SentJournal(store.path).entries() == []


def test_a_journal_written_before_it_named_the_message_id_is_still_folded(
        tmp_path, smtp_server):
    """A crash under the previous version left a journal of row numbers only: an upgrade must
    not send those mails again."""
    settings = desk_settings(smtp_server=smtp_server, smtp={"max_per_minute": 0})
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    queue(store, 2)
    first = store.outbox_rows()[0]["id"]
    with sqlite3.connect(db.sent_journal_path(store.path)) as old:
        old.execute("CREATE TABLE sent (outbox_id INTEGER PRIMARY KEY, sent_at TEXT NOT NULL)")
        old.execute("INSERT INTO sent VALUES (?, ?)", (first, NOW.now().isoformat()))
    old.close()

    report = outbox.flush(store, settings, NOW.now())

    assert report.sent == 1 and recipients(smtp_server) == ["p1@stad.be"]
    assert {r["state"] for r in store.outbox_rows()} == {"sent"}


def test_reminders_and_the_digest_queued_before_a_backlog_go_after_every_reply(
        backlog, dovecot, smtp_server, monkeypatch):
    store, in_arrival = backlog
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    queue(store, 1, priority=2, kind="digest", to="digest@vlaanderen.be")
    queue(store, 1, priority=1, kind="reminder", to="reminder@vlaanderen.be")

    report = pipeline.poll(store, settings, NOW)

    assert report.flush.sent == BACKLOG + 2
    assert recipients(smtp_server) == [*in_arrival, "reminder@vlaanderen.be",
                                       "digest@vlaanderen.be"]


def test_a_relay_that_is_down_loses_no_reply(backlog, dovecot, make_smtp_server, monkeypatch):
    store, in_arrival = backlog
    gone = make_smtp_server()
    settings = unpaced(dovecot, gone, monkeypatch)
    gone.stop()

    report = pipeline.poll(store, settings, NOW)

    assert report.applied == BACKLOG and report.flush.sent == 0
    assert report.flush.unavailable
    rows = store.outbox_rows()
    assert len(rows) == BACKLOG and {r["state"] for r in rows} == {"pending"}
    assert {r["attempts"] for r in rows} == {0}

    back = make_smtp_server()
    flushed = outbox.flush(store, unpaced(dovecot, back, monkeypatch), NOW.now())

    assert flushed.sent == BACKLOG and recipients(back) == in_arrival


def test_while_another_process_sends_this_poll_sends_nothing(
        backlog, dovecot, smtp_server, monkeypatch):
    store, _ = backlog
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    other = db.WorkerLock("", path=Path(store.path + ".send.lock"), what="the outbox").acquire()
    try:
        report = pipeline.poll(store, settings, NOW)
    finally:
        other.release()

    # The other sender sends these (it holds the lock); two senders could both send a row.
    assert report.applied == BACKLOG and report.flush.busy and report.flush.sent == 0
    assert smtp_server.messages == []
    assert {r["state"] for r in store.outbox_rows()} == {"pending"}


def test_a_refused_address_is_recorded_and_explained_and_the_rest_go_out(
        backlog, dovecot, smtp_server, monkeypatch):
    store, in_arrival = backlog
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    refused = in_arrival[3]
    smtp_server.reject_recipient(refused, "550 5.1.1 No such user")

    report = pipeline.poll(store, settings, NOW)

    assert report.flush.sent == BACKLOG - 1 and report.flush.failed == 1
    assert recipients(smtp_server) == [e for e in in_arrival if e != refused]
    [failed] = [r for r in store.outbox_rows() if r["state"] == "failed"]
    assert refused in failed["recipients"] and "5.1.1" in failed["last_error"]
    [event] = store.conn.execute(
        "SELECT reason FROM events WHERE action = 'reply_failed'").fetchall()
    assert "refused permanently" in event["reason"] and "5.1.1" in event["reason"]


def test_a_throttling_relay_slows_the_backlog_down_and_each_reply_keeps_its_place(
        backlog, dovecot, make_smtp_server, monkeypatch):
    store, in_arrival = backlog
    fake = FakeTime()
    relay = make_smtp_server(rate_clock=fake)
    relay.limit_rate(15, 60, "451 4.7.0 Too many messages, slow down")
    # Configured faster than this relay allows: it must answer 4xx, and we must adapt.
    settings = desk_settings(dovecot, relay, monkeypatch, smtp={"max_per_minute": 100})
    pacer = outbox.Pacer(100, clock=fake, sleep=fake.sleep)

    report = pipeline.poll(store, settings, NOW, pacer=pacer, send_budget_seconds=None)
    assert report.flush.throttled >= 1
    # After a throttling answer the rest waits for the pacer: later polls send it.
    flushes = 0
    while store.due_mail(NOW.now(), 1):
        outbox.flush(store, settings, NOW.now(), pacer=pacer)
        flushes += 1
        assert flushes < 20

    assert recipients(relay) == in_arrival
    rows = store.outbox_rows()
    assert {r["state"] for r in rows} == {"sent"} and {r["attempts"] for r in rows} == {1}
    # 100 → 50 → 25 → 12 a minute: a few refusals, then under the relay's 15.
    refusals = [a for a in relay.attempts if a.response.startswith("451")]
    assert 1 <= len(refusals) <= 3


def test_looking_for_replies_to_send_uses_the_outbox_index(tmp_path):
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    store.due_mail_of(dt.datetime(2018, 5, 20, tzinfo=dt.timezone.utc), 0, 50)
    store.conn.set_trace_callback(None)
    [sql] = [s for s in seen if "FROM outbox" in s]
    plan = " | ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert "outbox_due" in plan and not re.search(r"\bSCAN outbox\b", plan), plan


def test_a_report_of_two_parts_adds_up():
    first = outbox.FlushReport(sent=3, retried=1, throttled=1, unavailable="down")
    then = outbox.FlushReport(sent=2, failed=1, busy=True)

    both = first.add(then)

    assert (both.sent, both.retried, both.failed, both.throttled) == (5, 1, 1, 1)
    assert both.unavailable == "down" and both.busy
    assert first.add(outbox.FlushReport(unavailable="still down")).unavailable == "still down"


def test_a_small_poll_sends_after_applying_as_before(dovecot, smtp_server, tmp_path, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    append_out_of_order(dovecot, people(5))
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    started = []
    monkeypatch.setattr(outbox.Alongside, "__enter__",
                        lambda self: started.append(self) or self)

    report = pipeline.poll(store, settings, Clock(NOW.now()))

    assert started == [] and report.flush.sent == 5


def wait_in_apply(monkeypatch, after: int, until, timeout: float = 10) -> None:
    """Hold the apply step after its `after`-th mail until `until()` (or `timeout`): a backlog
    then lasts long enough for the sending thread to do what a test looks at."""
    applied = []
    apply_one = pipeline.apply_one

    def apply_then_wait(*args, **kwargs):
        state = apply_one(*args, **kwargs)
        applied.append(state)
        if len(applied) == after:
            deadline = time.monotonic() + timeout
            while not until() and time.monotonic() < deadline:
                time.sleep(0.01)
        return state

    monkeypatch.setattr(pipeline, "apply_one", apply_then_wait)


def test_a_promotion_during_a_backlog_goes_before_the_replies_to_later_arrivals(
        dovecot, smtp_server, tmp_path, monkeypatch):
    monkeypatch.setattr(readahead, "MIN_BACKLOG", 10)
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    first = people(61)
    for i, (name, email, org) in enumerate(first[:21]):   # 20 seats, one waiting
        dovecot.append(signup(name, email, org, date=START), START + dt.timedelta(minutes=i))
    pipeline.poll(store, settings, NOW)
    waiting = first[20][1]
    leaving_name, leaving = first[0][:2]
    smtp_server.clear()

    # The backlog: 40 signups, and the fifth mail to arrive is a cancellation.
    later = START + dt.timedelta(days=1)
    for i, (name, email, org) in enumerate(first[21:]):
        at = later + dt.timedelta(minutes=i if i < 4 else i + 1)
        dovecot.append(signup(name, email, org, date=at), at)
    dovecot.append(plain_mail(leaving_name, leaving, "Afmelding", CANCEL.format(name=leaving_name),
                              date=later), later + dt.timedelta(minutes=4))
    wait_in_apply(monkeypatch, 10, lambda: len(smtp_server.messages) >= 6)

    report = pipeline.poll(store, settings, NOW)

    assert report.applied == 41 and report.flush.sent == 42   # 40 + cancelled + promoted
    order = recipients(smtp_server)
    promoted = order.index(waiting)
    assert smtp_server.messages[promoted].message["Subject"].strip().startswith("Er is een plaats")
    # Everyone who wrote after the cancellation hears back after the promoted person, whose
    # reply answers her own signup of the day before.
    after_cancel = [email for _, email, _ in first[25:]]
    assert all(order.index(e) > promoted for e in after_cancel)
    assert sorted(order) == sorted([*[e for _, e, _ in first[21:]], leaving, waiting])


def test_a_mail_the_relay_throttles_again_and_again_is_retried_later_not_kept_first(
        backlog, dovecot, smtp_server, monkeypatch):
    store, in_arrival = backlog
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    stuck = in_arrival[2]
    smtp_server.set_responder(
        lambda envelope: "451 4.7.0 Too many messages, slow down"
        if stuck in envelope.rcpt_tos else None)
    tries = lambda: sum(stuck in a.rcpt_tos for a in smtp_server.attempts)  # noqa: E731
    wait_in_apply(monkeypatch, 10, lambda: tries() >= outbox.MAX_THROTTLES_PER_MAIL)
    # A short window: three pauses of 50 ms instead of three minutes.
    pacer = outbox.Pacer(0, window_seconds=0.05)

    report = pipeline.poll(store, settings, NOW, pacer=pacer)

    assert tries() == outbox.MAX_THROTTLES_PER_MAIL
    [row] = [r for r in store.outbox_rows() if stuck in r["recipients"]]
    # From the third refusal on it is an ordinary retry: an attempt, and a later slot.
    assert row["state"] == "pending" and row["attempts"] == 1
    assert row["next_attempt_at"] > NOW.now().isoformat() and "4.7.0" in row["last_error"]
    assert report.flush.sent == BACKLOG - 1 and report.flush.retried == 1
    assert recipients(smtp_server) == [e for e in in_arrival if e != stuck]


def test_a_sent_journal_that_cannot_be_written_sends_nothing_twice(
        backlog, dovecot, smtp_server, monkeypatch, caplog):
    store, in_arrival = backlog
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    add = db.SentJournal.add
    calls = []

    def full_disk(self, outbox_id, message_id, now):
        calls.append(outbox_id)
        if len(calls) == 3:
            raise sqlite3.OperationalError("database or disk is full")
        return add(self, outbox_id, message_id, now)

    monkeypatch.setattr(db.SentJournal, "add", full_disk)

    report = pipeline.poll(store, settings, NOW)

    assert len(calls) >= 3
    assert recipients(smtp_server) == in_arrival   # each once, in arrival order
    assert report.flush.sent == BACKLOG
    assert {r["state"] for r in store.outbox_rows()} == {"sent"}
    assert "sending alongside the backlog stopped" in caplog.text


def test_a_database_error_in_the_middle_of_a_backlog_keeps_what_was_sent_and_frees_the_relay(
        backlog, dovecot, smtp_server, monkeypatch):
    store, in_arrival = backlog
    settings = unpaced(dovecot, smtp_server, monkeypatch)
    interval = sys.getswitchinterval()
    applied = []
    apply_one = pipeline.apply_one

    def locked_at_the_tenth(*args, **kwargs):
        if len(applied) == 9:
            smtp_server.wait_for(3)
            raise sqlite3.OperationalError("database is locked")
        applied.append(apply_one(*args, **kwargs))
        return applied[-1]

    monkeypatch.setattr(pipeline, "apply_one", locked_at_the_tenth)

    report = pipeline.poll(store, settings, NOW)

    assert "database is locked" in report.database_error
    sent_before = len(smtp_server.messages)
    assert report.flush.sent == sent_before >= 3
    assert sys.getswitchinterval() == interval
    lock = db.WorkerLock("", path=Path(store.path + ".send.lock"), what="the outbox").acquire()
    lock.release()

    monkeypatch.setattr(pipeline, "apply_one", apply_one)
    again = pipeline.poll(store, settings, NOW)

    assert again.database_error is None and again.applied == BACKLOG - 9
    assert recipients(smtp_server) == in_arrival   # each once, in arrival order


def test_a_sent_journal_that_cannot_be_read_stops_sending_and_says_which_file(
        tmp_path, smtp_server):
    settings = desk_settings(smtp_server=smtp_server, smtp={"max_per_minute": 0})
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    queue(store, 1)
    journal = db.sent_journal_path(store.path)
    journal.write_bytes(b"not a database, but 200 bytes of something else " * 4)

    with pytest.raises(sqlite3.DatabaseError, match="the sent journal .*state.sqlite.sent"):
        outbox.flush(store, settings, NOW.now())

    assert smtp_server.messages == []
    assert [r["state"] for r in store.outbox_rows()] == ["pending"]


@pytest.mark.slow
def test_stopping_the_worker_during_a_backlog_loses_nothing_and_sends_nothing_twice(
        dovecot, smtp_server, tmp_path):
    """`systemctl stop` while replies go out alongside a backlog: the worker stops cleanly
    (the thread is stopped, its answers recorded, the send lock freed), and the next run
    answers everyone else, each once."""
    cfg = write_config(tmp_path, dovecot, smtp_server)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("max_per_minute = 30",
                                                           "max_per_minute = 0"),
                   encoding="utf-8")
    count = readahead.MIN_BACKLOG + 60
    persons = people(count)
    for i, (name, email, org) in enumerate(persons):
        dovecot.append(signup(name, email, org, date=START), START + dt.timedelta(seconds=i))
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    args = ["--config", str(cfg), "--db", str(tmp_path / "state.sqlite"),
            "--now", "2018-05-20T12:00:00+02:00"]
    worker = WorkerProcess(args, env=env, log=tmp_path / "worker.log")
    smtp_server.wait_for(5, timeout=60)

    out = worker.stop(signal.SIGTERM)

    assert worker.returncode == 0 and "worker stopped" in out, out
    done = subprocess.run([sys.executable, "-m", "processor", "poll", *args], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    participants = [m for m in smtp_server.messages
                    if "duurzameontwikkeling@vlaanderen.be" not in m.rcpt_tos]
    assert sorted(m.rcpt_tos[0] for m in participants) == sorted(e for _, e, _ in persons)
    assert len({m.message["Message-ID"] for m in participants}) == count
    assert db.SentJournal(tmp_path / "state.sqlite").entries() == []
