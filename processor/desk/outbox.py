"""Send due outbox rows in priority and arrival order; retry temporary failures with growing delays."""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from processor.store import db
from processor.mail import smtp
from processor.clock import Clock
from processor.config import Settings
from processor.store.db import AlreadyRunning, Store, WorkerLock
from processor.desk.registry import REPLY_PRIORITY

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 60
# Rows read per query: the backlog is streamed, never held in memory whole.
PAGE = 50
# A hair longer than the relay's window: our clock and the relay's never tick exactly together.
PACE_MARGIN = 1.02
# The same mail throttled this often in a row is not a rate problem but that mail's: from then
# on it is retried like any temporary failure, so it cannot block the queue behind it.
MAX_THROTTLES_PER_MAIL = 3
# While replies are sent alongside a backlog: how long one thread may hold the interpreter.
SWITCH_SECONDS = 0.0002


@dataclass
class FlushReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    throttled: int = 0
    unavailable: str | None = None
    busy: bool = False          # another process was sending; it sends these too

    def add(self, other: "FlushReport") -> "FlushReport":
        """This report followed by `other` (what was sent alongside the apply, then the rest)."""
        return FlushReport(
            sent=self.sent + other.sent, retried=self.retried + other.retried,
            failed=self.failed + other.failed, throttled=self.throttled + other.throttled,
            unavailable=other.unavailable or self.unavailable, busy=self.busy or other.busy)


class Pacer:
    """At most `per_minute` sends in any sliding minute, the way relays count; backs off when the
    relay says "too many" anyway.

    It mirrors the relay's own rule: a send may start once the send `per_minute` places back
    finished a window ago (plus a margin). Completion times are ours, taken after the relay's 250,
    so they are never earlier than the relay's own count of that mail. Each time is written in
    the outbox (`relayed_at`), and whoever takes the send lock first recalls the last window from
    there (`recall`): a restarted worker, or an organiser's command that sends, keeps the pace
    the worker had (issue 18). The clock is wall time for that reason (a monotonic clock starts
    anew in each process); a wait is never longer than one window, so a clock set back cannot
    hold the queue. `stop` (the worker's stopping event) cuts a wait short: a SIGTERM during a
    paced burst stops the sender at once, and the rest waits in the outbox. The clock and sleep
    are injectable for tests.
    """

    def __init__(self, per_minute: int, *, window_seconds: float = 60.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 stop: threading.Event | None = None):
        self.window = window_seconds
        self.per_minute = self.limit = per_minute   # 0: no pacing
        self.clock, self.sleep, self.stop = clock, sleep, stop
        self.done: collections.deque[float] = collections.deque()
        self.hold_until = 0.0
        self.streak_id: int | None = None
        self.streak = 0

    def next_at(self) -> float:
        at = self.hold_until
        if self.limit and len(self.done) >= self.limit:
            at = max(at, self.done[-self.limit] + self.window * PACE_MARGIN)
        # Never more than a window ahead: a wall clock set back must not hold the queue.
        return min(at, self.clock() + self.window * PACE_MARGIN)

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def wait(self, deadline: float | None = None) -> bool:
        """Sleep until the next send may start; False (without sleeping) if that is past the
        deadline, or when stopping. A mail that may go now always goes: the budget limits
        waiting, not sending."""
        if self.stopped():
            return False
        now = self.clock()
        at = self.next_at()
        if deadline is not None and at > now and at > deadline:
            return False
        if at > now:
            if self.stop is not None:
                return not self.stop.wait(at - now)
            self.sleep(at - now)
        return True

    def recall(self, store: Store) -> None:
        """Take in what the outbox says went out within the last window (this process's sends
        and any other's): the pace holds across restarts."""
        if not self.per_minute:
            return
        since = self.clock() - self.window * PACE_MARGIN
        # A multiset union: this process's own sends are in both, and several may share a time.
        merged = sorted((collections.Counter(self.done)
                         | collections.Counter(store.relayed_since(since))).elements())
        self.done = collections.deque(merged[-max(self.per_minute, 1):])

    def sent(self, outbox_id: int) -> float:
        """Count a send the relay accepted; returns its time, to be written in the outbox."""
        now = self.clock()
        self.done.append(now)
        while len(self.done) > max(self.per_minute, 1):
            self.done.popleft()
        if self.streak_id == outbox_id:
            self.streak_id, self.streak = None, 0
        # A full window at the lowered pace without a throttle: back to the configured rate.
        if self.limit < self.per_minute and len(self.done) >= self.limit \
                and now - self.hold_until >= self.window:
            self.limit = min(self.per_minute, self.limit * 2)
        return now

    def throttled(self, outbox_id: int) -> bool:
        """Pause a whole window and halve the rate; True while the mail should keep its place."""
        self.streak = self.streak + 1 if self.streak_id == outbox_id else 1
        self.streak_id = outbox_id
        if self.per_minute:
            self.limit = max(1, self.limit // 2)
        self.hold_until = self.clock() + self.window
        return self.streak < MAX_THROTTLES_PER_MAIL


def pacer_for(settings: Settings, stop: threading.Event | None = None) -> Pacer:
    return Pacer(settings.smtp.max_per_minute, window_seconds=settings.smtp.rate_window_seconds,
                 stop=stop)


def retry_delay(attempts: int, ceiling: int) -> dt.timedelta:
    """1, 2, 4, 8 … minutes after the first, second, third … failure, up to the ceiling."""
    return dt.timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), ceiling))


def flush(store: Store, settings: Settings, now: dt.datetime, *, limit: int | None = None,
          connect=smtp.Connection, pacer: Pacer | None = None,
          budget_seconds: float | None = None) -> FlushReport:
    """Send what is due over one connection, at the pacer's rate, in priority and arrival order.

    A row is marked sent only after the server's 250. Stops when nothing is due, after `limit`
    mails, when `budget_seconds` would be exceeded (so the poll cycle can fetch new mail), or
    at the relay's first throttling answer (the rest waits for the pacer's back-off).
    """
    report = FlushReport()
    # One sender at a time (the worker, or an organiser's command): two flushes at once could
    # both send a row before either marks it sent. Whoever holds the lock sends what is due.
    lock = _send_lock(store)
    try:
        lock.acquire()
    except AlreadyRunning:
        report.busy = True
        return report
    try:
        fold_sent_journal(store)
        pacer = pacer or pacer_for(settings)
        pacer.recall(store)
        return _flush(store, settings, now, report, limit=limit, connect=connect, pacer=pacer,
                      budget_seconds=budget_seconds)
    finally:
        lock.release()


def _send_lock(store: Store) -> WorkerLock:
    return WorkerLock("", path=Path(store.path + ".send.lock"), what="the outbox")


def _flush(store: Store, settings: Settings, now: dt.datetime, report: FlushReport, *,
           limit, connect, pacer: Pacer, budget_seconds) -> FlushReport:
    deadline = None if budget_seconds is None else pacer.clock() + budget_seconds
    rows = store.due_mail(now, PAGE if limit is None else min(PAGE, limit))
    if not rows or not pacer.wait(deadline):
        return report
    tried: set[int] = set()
    try:
        with connect(settings.smtp) as conn:
            while rows:
                for row in rows:
                    if row["id"] in tried or not pacer.wait(deadline):
                        return report
                    tried.add(row["id"])
                    result = conn.send(row["raw"], row["sender"], json.loads(row["recipients"]))
                    if result.status == "throttled" and pacer.throttled(row["id"]):
                        with store.transaction():
                            store.mark_throttled(row["id"], result.detail)
                        report.throttled += 1
                        log.info("relay throttles (%s): pausing %.0f s, then at most %d a"
                                 " window", result.detail, pacer.window, pacer.limit)
                        return report
                    relayed_at = pacer.sent(row["id"]) if result.status == "sent" else None
                    _record(store, settings, row, result, now, report, relayed_at)
                    if limit is not None and len(tried) >= limit:
                        return report
                rows = store.due_mail(now, PAGE)
    except smtp.SmtpUnavailable as exc:
        report.unavailable = str(exc)
        log.warning("SMTP unavailable, will retry: %s", exc)
        # Rows not reached in this flush keep their schedule; the next flush tries again.
    return report


def _record(store: Store, settings: Settings, row, result: smtp.Result, now: dt.datetime,
            report: FlushReport, relayed_at: float | None = None) -> None:
    with store.transaction():
        _record_one(store, settings, row, result, now, report, relayed_at)


def _record_one(store: Store, settings: Settings, row, result: smtp.Result, now: dt.datetime,
                report: FlushReport, relayed_at: float | None = None) -> None:
    if result.status == "sent":
        store.mark_sent(row["id"], now, relayed_at)
        report.sent += 1
    elif result.status == "permanent":
        store.mark_failed(row["id"], result.detail)
        store.log(now=now, action="reply_failed", registration_id=row["registration_id"],
                  message=row["source_message"],
                  reason=f"{row['kind']} mail {row['message_id']} refused permanently: "
                         f"{result.detail}")
        report.failed += 1
    else:
        delay = retry_delay(row["attempts"] + 1, settings.max_retry_delay_seconds)
        store.mark_retry(row["id"], result.detail, now + delay)
        report.retried += 1


class Alongside:
    """Sends the replies of a backlog while it is still being applied, instead of after its last
    mail (issue 8): the first to write hear back first, and the relay's time overlaps ours.

    A thread sends only replies, always the head of their queue (a promotion queued now, for
    someone who signed up early, goes before later arrivals): reminders and the digest wait for
    the poll's own flush, behind every reply. The moment the relay says 250 the thread writes it
    in the sent journal (db.SentJournal, a file of its own, so it never waits for the apply's
    write lock); the applying thread records every answer in the outbox between two mails
    (`record`). So a crash makes at most the one mail whose 250 was on its way go out twice, as
    when sending after the apply. What it did not reach, or that failed, is left to the flush.
    """

    WAIT_SECONDS = 0.02   # how often an idle sender looks for new replies

    def __init__(self, store: Store, settings: Settings, clock: Clock, *,
                 connect=smtp.Connection, pacer: Pacer | None = None):
        self.store, self.settings, self.clock = store, settings, clock
        self.connect = connect
        self.pacer = pacer or pacer_for(settings)
        self.report = FlushReport()
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._recorded: collections.deque[int] = collections.deque()  # ids now in the outbox
        self._stop = threading.Event()
        self._lock = _send_lock(store)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Alongside":
        try:
            self._lock.acquire()
        except AlreadyRunning:
            self.report.busy = True     # another process sends; the poll's flush will see it too
            return self
        self._interval = sys.getswitchinterval()
        try:
            fold_sent_journal(self.store)
            self.pacer.recall(self.store)
            self._stop.clear()
            # The applying thread is busy in Python most of the time; by default it would keep
            # the interpreter up to 5 ms while the sender waits to write down a 250 (measured:
            # p90 2.3 ms), and a crash in that wait sends the mail twice. Switching more often
            # keeps it short (p90 0.6 ms).
            sys.setswitchinterval(SWITCH_SECONDS)
            self._thread = threading.Thread(target=self._send, name="send-alongside",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self._thread = None
            sys.setswitchinterval(self._interval)
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        sys.setswitchinterval(self._interval)
        try:
            self.record()
            # Every answer the thread journaled is in the outbox now: the copy has served.
            db.clear_sent_journal(self.store.path)
        finally:
            self._lock.release()

    def record(self) -> None:
        """What the relay answered since the last call, in one transaction (applying thread).
        If the transaction fails, the answers wait for the next call."""
        answers = []
        while True:
            try:
                answers.append(self._answers.get_nowait())
            except queue.Empty:
                break
        if not answers:
            return
        now = self.clock.now()
        counted = FlushReport()
        try:
            with self.store.transaction():
                for row, result, relayed_at in answers:
                    if result.status == "throttled":
                        self.store.mark_throttled(row["id"], result.detail)
                        counted.throttled += 1
                    else:
                        _record_one(self.store, self.settings, row, result, now, counted,
                                    relayed_at)
        except BaseException:
            for answer in answers:
                self._answers.put(answer)
            raise
        self.report = self.report.add(counted)
        self._recorded.extend(row["id"] for row, _, _ in answers)

    def _send(self) -> None:
        reader = journal = None
        # Answered here but maybe not yet in the outbox, where they still look due.
        unrecorded: set[int] = set()
        try:
            reader = Store(db.connect(self.store.path))
            journal = db.SentJournal(self.store.path)
            with _lazy(self.connect, self.settings) as conn:
                while not self._stop.is_set():
                    while self._recorded:
                        unrecorded.discard(self._recorded.popleft())
                    rows = [r for r in reader.due_mail_of(self.clock.now(), REPLY_PRIORITY,
                                                          PAGE + len(unrecorded))
                            if r["id"] not in unrecorded]
                    if not rows:
                        self._stop.wait(self.WAIT_SECONDS)
                        continue
                    for row in rows:
                        if self._stop.is_set():
                            return
                        if wait := self._not_yet():
                            self._stop.wait(wait)
                            break   # ask again: the head of the queue may have changed
                        if not self._send_one(conn, journal, row, unrecorded):
                            break
        except smtp.SmtpUnavailable as exc:
            # The poll's flush tries again, and reports it if the relay is still away.
            log.warning("SMTP unavailable while sending alongside the backlog: %s", exc)
        except Exception:
            log.exception("sending alongside the backlog stopped; the poll's flush sends the rest")
        finally:
            if journal is not None:
                journal.close()
            if reader is not None:
                reader.conn.close()

    def _send_one(self, conn, journal, row, unrecorded: set[int]) -> bool:
        """Send one reply and pass the relay's answer on; False when the queue should be read
        again first (the relay asked us to slow down)."""
        result = conn.get().send(row["raw"], row["sender"], json.loads(row["recipients"]))
        if result.status == "throttled":
            if self.pacer.throttled(row["id"]):
                self._answers.put((row, result, None))   # it keeps its place: tried after the pause
                log.info("relay throttles (%s): pausing %.0f s, then at most %d a window",
                         result.detail, self.pacer.window, self.pacer.limit)
                return False
            # Refused this often in a row: that mail's problem, retried like any 4xx (as in flush).
            result = smtp.Result("temporary", result.detail)
        unrecorded.add(row["id"])
        relayed_at = self.pacer.sent(row["id"]) if result.status == "sent" else None
        # The queue first: it cannot fail, so a journal that cannot be written (disk full)
        # stops this thread without the answer being lost and the mail sent again.
        self._answers.put((row, result, relayed_at))
        if result.status == "sent":
            journal.add(row["id"], row["message_id"], self.clock.now())
        return True

    def _not_yet(self) -> float:
        """0 if the pacer lets the next mail go now, else how long to wait (a second at most,
        so that the end of the backlog is noticed)."""
        now = self.pacer.clock()
        return max(0.0, min(self.pacer.next_at() - now, 1.0))


def fold_sent_journal(store: Store) -> int:
    """Record in the outbox what the sent journal holds (a crash left it there), then empty it.
    Called by whoever holds the send lock, before sending anything."""
    entries = db.read_sent_journal(store.path)
    if not entries:
        return 0
    with store.transaction():
        folded, foreign = db.record_journaled(store, entries)
    if folded:
        log.warning("%d mail(s) the relay had accepted before the worker stopped are now"
                    " recorded as sent, and not sent again", folded)
    if foreign:
        # Named, so that a person can tell who may hear from us twice after a restore.
        log.warning("%d entr(y/ies) of the sent journal %s name mails this database does not"
                    " hold (a database restored from a backup?); ignored: %s", len(foreign),
                    db.sent_journal_path(store.path),
                    ", ".join(f"row {i} {m}" for i, m in foreign))
    db.clear_sent_journal(store.path)
    return folded


class _lazy:
    """An SMTP connection opened at the first mail, not before: a backlog of mail that needs no
    reply (bounces, out-of-office) opens none."""

    def __init__(self, connect, settings: Settings):
        self.connect, self.settings, self.conn = connect, settings, None

    def get(self):
        if self.conn is None:
            self.conn = self.connect(self.settings.smtp).__enter__()
        return self.conn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.conn is not None:
            self.conn.__exit__(*exc)
