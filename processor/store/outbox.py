"""The outbox: replies queued, due, sent, retried or failed, and the daily cap per address."""

from __future__ import annotations

import datetime as dt
import sqlite3

from processor.clock import iso
from processor.store.values import json_list


class OutboxQueries:
    conn: sqlite3.Connection

    # -- outbox -----------------------------------------------------------------------------
    def queue_mail(self, *, kind, priority, order_key, sender, recipients, message_id, raw: bytes,
                   registration_id, source_message, now: dt.datetime,
                   not_before: dt.datetime | None = None) -> int:
        """`not_before`: a mail deferred by the daily cap waits in the queue until then."""
        cur = self.conn.execute(
            "INSERT INTO outbox (kind, priority, order_key, sender, recipients, message_id, raw,"
            " registration_id, source_message, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, priority, order_key, sender, json_list(recipients), message_id, raw,
             registration_id, source_message, iso(max(now, not_before or now)), iso(now)),
        )
        return cur.lastrowid

    def replies_to_since(self, address: str, since: dt.datetime) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM reply_log WHERE address = ? AND at >= ?", (address, iso(since))
        ).fetchone()[0]

    def nth_latest_reply(self, address: str, n: int) -> str | None:
        """When the n-th most recent automatic mail to `address` was (or is to be) sent."""
        row = self.conn.execute(
            "SELECT at FROM reply_log WHERE address = ? ORDER BY at DESC LIMIT 1 OFFSET ?",
            (address, n - 1)).fetchone()
        return row[0] if row else None

    def log_replies(self, addresses: list[str], outbox_id: int, now: dt.datetime):
        self.conn.executemany("INSERT INTO reply_log (address, at, outbox) VALUES (?, ?, ?)",
                              [(a, iso(now), outbox_id) for a in addresses])

    def due_mail(self, now: dt.datetime, limit: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY priority, order_key, id LIMIT ?",
            (iso(now), limit),
        ).fetchall()

    def due_mail_of(self, now: dt.datetime, priority: int, limit: int) -> list[sqlite3.Row]:
        """The head of one priority's queue: due mail in the order of what it answers."""
        return self.conn.execute(
            "SELECT * FROM outbox WHERE state = 'pending' AND priority = ?"
            " AND next_attempt_at <= ? ORDER BY order_key, id LIMIT ?",
            (priority, iso(now), limit),
        ).fetchall()

    def recipients_of_sent(self, message_ids: list[str]) -> set[str]:
        """Everyone the desk's sent mails with these Message-IDs went to (lowercased)."""
        if not message_ids:
            return set()
        marks = ",".join("?" * len(message_ids))
        return {r[0] for r in self.conn.execute(
            "SELECT DISTINCT lower(j.value) FROM outbox o JOIN json_each(o.recipients) j"
            f" WHERE o.message_id IN ({marks}) AND o.state = 'sent'", message_ids)}

    def registrations_mailed_alone(self, message_ids: list[str], address: str) -> set[int]:
        """The registrations whose sent mails with these Message-IDs went to `address` alone."""
        if not message_ids:
            return set()
        marks = ",".join("?" * len(message_ids))
        return {r[0] for r in self.conn.execute(
            "SELECT DISTINCT o.registration_id FROM outbox o"
            f" WHERE o.message_id IN ({marks}) AND o.state = 'sent' AND o.registration_id IS NOT NULL"
            " AND json_array_length(o.recipients) = 1"
            " AND lower(json_extract(o.recipients, '$[0]')) = ?", (*message_ids, address.lower()))}

    def holds_mail(self, outbox_id: int, message_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM outbox WHERE id = ? AND message_id = ?",
                                 (outbox_id, message_id)).fetchone() is not None

    def mark_sent(self, outbox_id: int, now: dt.datetime, relayed_at: float | None = None) -> int:
        """1 if the row was pending and is now sent, 0 if it was already recorded.
        `relayed_at`: the pacer's clock at the relay's 250 (seconds), what pacing counts."""
        return self.conn.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?, relayed_at = ?,"
            " attempts = attempts + 1, last_error = NULL WHERE id = ? AND state = 'pending'",
            (iso(now), relayed_at, outbox_id),
        ).rowcount

    def relayed_since(self, since: float) -> list[float]:
        """When the relay accepted each mail from `since` on (the pacer's clock), oldest first."""
        return [r[0] for r in self.conn.execute(
            "SELECT relayed_at FROM outbox WHERE relayed_at >= ? ORDER BY relayed_at", (since,))]

    def mark_retry(self, outbox_id: int, error: str, next_attempt_at: dt.datetime):
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
            " WHERE id = ? AND state = 'pending'",
            (error, iso(next_attempt_at), outbox_id),
        )

    def mark_throttled(self, outbox_id: int, error: str):
        """The relay asked us to slow down: noted, but neither an attempt nor a later slot, so
        the mail keeps its place in the queue (first come, first answered)."""
        self.conn.execute(
            "UPDATE outbox SET last_error = ? WHERE id = ? AND state = 'pending'",
            (error, outbox_id),
        )

    def mark_failed(self, outbox_id: int, error: str):
        self.conn.execute(
            "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?"
            " WHERE id = ? AND state = 'pending'",
            (error, outbox_id),
        )

    def outbox_rows(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()
