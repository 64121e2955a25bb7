"""Send due outbox rows in priority and arrival order; retry temporary failures with growing delays."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from processor import smtp
from processor.config import Settings
from processor.db import Store

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 60


@dataclass
class FlushReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    unavailable: str | None = None


def retry_delay(attempts: int, ceiling: int) -> dt.timedelta:
    """1, 2, 4, 8 … minutes after the first, second, third … failure, up to the ceiling."""
    return dt.timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), ceiling))


def flush(store: Store, settings: Settings, now: dt.datetime, *, limit: int = 1000,
          connect=smtp.Connection) -> FlushReport:
    """Send what is due over one connection. A row is marked sent only after the server's 250."""
    report = FlushReport()
    rows = store.due_mail(now, limit)
    if not rows:
        return report
    try:
        with connect(settings.smtp) as conn:
            for row in rows:
                result = conn.send(row["raw"], row["sender"], json.loads(row["recipients"]))
                _record(store, settings, row, result, now, report)
    except smtp.SmtpUnavailable as exc:
        report.unavailable = str(exc)
        log.warning("SMTP unavailable, will retry: %s", exc)
        # Rows not reached in this flush keep their schedule; the next flush tries again.
    return report


def _record(store: Store, settings: Settings, row, result: smtp.Result, now: dt.datetime,
            report: FlushReport) -> None:
    with store.transaction():
        if result.status == "sent":
            store.mark_sent(row["id"], now)
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
