"""APScheduler wiring only: run the poll cycle on its interval until SIGTERM/SIGINT."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading

from apscheduler.schedulers.blocking import BlockingScheduler

from processor.store import db
from processor.mail import imap
from processor.desk import outbox, pipeline, reminders
from processor.desk import digest
from processor.clock import Clock
from processor.config import Settings

log = logging.getLogger(__name__)

# A late run still runs (the default grace of 1 s silently drops it); runs never pile up.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
# How long one idle_check waits before the socket is looked at again (and SIGTERM noticed).
IDLE_CHECK_SECONDS = 30
# Reconnecting after a lost IDLE session: 1, 2, 4 … seconds, at most this long.
IDLE_RECONNECT_MAX_SECONDS = 60
REMINDER_CHECK_MINUTES = 5


class _SchedulerLog(logging.LoggerAdapter):
    """APScheduler's own logger, except that a run skipped because the job is still running is
    not a warning: the poll is woken (IDLE, reminders, the digest) and fires on its interval
    while a long paced flush is still going, and that poll goes round once more by design
    (`woken`). A warning on every start would make monitoring that alerts on warnings fire on
    every restart (issue 18)."""

    def warning(self, msg, *args, **kwargs):
        if isinstance(msg, str) and "maximum number of running instances" in msg:
            self.debug(msg, *args, **kwargs)
        else:
            super().warning(msg, *args, **kwargs)


def scheduler_logger() -> logging.LoggerAdapter:
    return _SchedulerLog(logging.getLogger("apscheduler.scheduler"), {})


def run(settings: Settings, db_path: str, clock: Clock) -> None:
    with db.WorkerLock(db_path), imap.worker_lock(settings.mailbox):
        store = db.Store(db.connect(db_path))
        stopping = threading.Event()
        scheduler = BlockingScheduler(timezone=settings.event.timezone, job_defaults=JOB_DEFAULTS,
                                      logger=scheduler_logger())
        # The scheduler keeps real time; --now only changes what the jobs decide. A first run
        # set at a --now in the past would be dropped as years late.
        started = dt.datetime.now(dt.timezone.utc)

        # One pacer for the worker's life: the relay's rate holds across polls (and, through the
        # outbox's relayed_at, across restarts). A stop cuts its wait short: the rest of a paced
        # burst waits in the outbox instead of holding `systemctl stop` for up to a minute.
        pacer = outbox.pacer_for(settings, stop=stopping)
        woken = threading.Event()

        def poll_job():
            # A wake-up while a poll runs would be dropped by the scheduler (max_instances=1):
            # the running poll goes round once more instead.
            while not stopping.is_set():
                woken.clear()
                report = pipeline.poll(store, settings, clock, should_stop=stopping.is_set,
                                       pacer=pacer)
                log.info("poll: %s", report.summary())
                if not woken.is_set():
                    break

        def wake():
            woken.set()
            try:
                scheduler.modify_job("poll", next_run_time=dt.datetime.now(dt.timezone.utc))
            except Exception:  # the scheduler is shutting down
                pass

        if settings.mailbox.idle:
            threading.Thread(target=idle_loop, args=(settings, stopping, wake), name="imap-idle",
                             daemon=True).start()

        scheduler.add_job(poll_job, "interval", seconds=settings.poll_interval_seconds,
                          id="poll", replace_existing=True, next_run_time=started)

        def reminders_job():
            if stopping.is_set():
                return
            # Queues only: the poll job is the one sender, so two flushes never race; it is
            # woken at once so that a reminder leaves at its minute.
            report = reminders.run_job(db_path, settings, clock.now())
            if report.reminders or report.updates:
                log.info("reminders: %s", report.summary())
                scheduler.modify_job("poll", next_run_time=dt.datetime.now(dt.timezone.utc))

        # On the minutes of the hour a send_time is likely to have, in the event's timezone
        # (the scheduler's); at start too, to catch up what fell due while the worker was down.
        scheduler.add_job(reminders_job, "cron", minute=f"*/{REMINDER_CHECK_MINUTES}",
                          id="reminders", replace_existing=True, next_run_time=started)

        def digest_job():
            if stopping.is_set():
                return
            # The digests table decides, not the scheduler: a run before send_time or after
            # today's digest is recorded does nothing, so restarts and catch-ups are safe.
            result = digest.run_job(db_path, settings, clock.now())
            if result.state == "queued":
                log.info("digest: %s", result.summary())
                scheduler.modify_job("poll", next_run_time=dt.datetime.now(dt.timezone.utc))

        send = settings.digest.send_time
        # At send_time in the event's timezone (the scheduler's), and at start: a worker that
        # was down at send_time sends today's digest as soon as it is back.
        scheduler.add_job(digest_job, "cron", hour=send.hour, minute=send.minute,
                          id="digest", replace_existing=True, next_run_time=started)

        def stop(signum, _frame):
            log.info("signal %s: stopping after the current mail", signum)
            stopping.set()
            # wait=True lets the running poll finish its current mail and commit.
            threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("worker started: polling %s every %s s%s", settings.mailbox.host,
                 settings.poll_interval_seconds,
                 ", woken by IMAP IDLE" if settings.mailbox.idle else "")
        scheduler.start()
        log.info("worker stopped")


def idle_loop(settings: Settings, stopping: threading.Event, wake) -> None:
    """Wait in IMAP IDLE and wake the poll when mail arrives; it never handles mail itself.

    A lost connection is opened again (with growing pauses); a server without IDLE leaves the
    worker to its interval polling.
    """
    pause = 1.0
    while not stopping.is_set():
        try:
            with imap.Watcher(settings.mailbox) as watcher:
                if not watcher.can_idle:
                    log.warning("%s offers no IMAP IDLE: polling every %s s instead",
                                settings.mailbox.host, settings.poll_interval_seconds)
                    return
                log.info("IMAP IDLE on %s", settings.mailbox.folder)
                # Whatever arrived while nobody was listening.
                wake()
                pause = 1.0
                while not stopping.is_set():
                    if watcher.wait(IDLE_CHECK_SECONDS):
                        wake()
        except imap.MailboxError as exc:
            log.warning("IMAP IDLE lost (%s): reconnecting in %.0f s", exc, pause)
            stopping.wait(pause)
            pause = min(pause * 2, IDLE_RECONNECT_MAX_SECONDS)
