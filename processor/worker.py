"""APScheduler wiring only: run the poll cycle on its interval until SIGTERM/SIGINT."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading

from apscheduler.schedulers.blocking import BlockingScheduler

from processor import db, mailbox, pipeline, reminders
from processor import digest
from processor.clock import Clock
from processor.config import Settings

log = logging.getLogger(__name__)

# A late run still runs (the default grace of 1 s silently drops it); runs never pile up.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
REMINDER_CHECK_MINUTES = 5


def run(settings: Settings, db_path: str, clock: Clock) -> None:
    with db.WorkerLock(db_path), mailbox.worker_lock(settings.mailbox):
        store = db.Store(db.connect(db_path))
        stopping = threading.Event()
        scheduler = BlockingScheduler(timezone=settings.event.timezone, job_defaults=JOB_DEFAULTS)

        def poll_job():
            if stopping.is_set():
                return
            report = pipeline.poll(store, settings, clock, should_stop=stopping.is_set)
            log.info("poll: %s", report.summary())

        scheduler.add_job(poll_job, "interval", seconds=settings.poll_interval_seconds,
                          id="poll", replace_existing=True, next_run_time=clock.now())

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
                          id="reminders", replace_existing=True, next_run_time=clock.now())

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
                          id="digest", replace_existing=True, next_run_time=clock.now())

        def stop(signum, _frame):
            log.info("signal %s: stopping after the current mail", signum)
            stopping.set()
            # wait=True lets the running poll finish its current mail and commit.
            threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("worker started: polling %s every %s s", settings.mailbox.host,
                 settings.poll_interval_seconds)
        scheduler.start()
        log.info("worker stopped")
