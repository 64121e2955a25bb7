"""The event log, and what the digest, reminders and health checks record of it."""

from __future__ import annotations

import datetime as dt
import sqlite3

from processor.clock import iso


class EventQueries:
    conn: sqlite3.Connection

    # -- event log --------------------------------------------------------------------------
    def log(self, *, now: dt.datetime, action: str, reason: str, actor: str = "worker",
            email: str | None = None, registration_id: int | None = None,
            message: int | None = None):
        self.conn.execute(
            "INSERT INTO events (at, actor, action, email, registration_id, message, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iso(now), actor, action, email, registration_id, message, reason),
        )

    # -- digest -----------------------------------------------------------------------------
    # A digest covers the events with last_event_id < id <= the high-water mark read in its own
    # write transaction; ids, not clocks, so that nothing falls between two digests.
    def digest_for_day(self, day: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM digests WHERE day = ?", (day,)).fetchone()

    def last_mailed_digest(self) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM digests WHERE outbox_id IS NOT NULL"
            " ORDER BY last_event_id DESC, id DESC LIMIT 1"
        ).fetchone()

    def digests(self) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT d.*, o.state AS outbox_state FROM digests d"
            " LEFT JOIN outbox o ON o.id = d.outbox_id ORDER BY d.id"
        ).fetchall()

    def high_water(self) -> tuple[int, int]:
        """The newest event id and outbox id: the end of what a digest made now covers."""
        row = self.conn.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM events),"
            " (SELECT COALESCE(MAX(id), 0) FROM outbox)"
        ).fetchone()
        return row[0], row[1]

    def digest_events(self, after: int, upto: int) -> list[sqlite3.Row]:
        """Events in the window with the person and the mail behind them, as they are now."""
        return self.conn.execute(
            "SELECT e.id, e.at, e.actor, e.action, e.email, e.registration_id, e.message,"
            " e.reason, e.forgotten, r.name, r.email AS registration_email, r.organisation, r.status,"
            " (SELECT s.name FROM registrations s WHERE s.id = r.substitute_for) AS replaces_name,"
            " (SELECT s.email FROM registrations s WHERE s.id = r.substitute_for) AS replaces_email,"
            " m.arrived_at AS message_arrived_at,"
            " json_extract(m.reading, '$.subject') AS subject"
            " FROM events e LEFT JOIN registrations r ON r.id = e.registration_id"
            " LEFT JOIN messages m ON m.id = e.message"
            " WHERE e.id > ? AND e.id <= ? ORDER BY e.id",
            (after, upto),
        ).fetchall()

    def failed_mail_between(self, after: int, upto: int) -> list[sqlite3.Row]:
        """Mails refused permanently (reply_failed), with their outbox row when it is known:
        the event names the outbox row only by its Message-ID, inside the reason."""
        return self.conn.execute(
            "SELECT e.id, e.at, e.reason, r.name, r.email AS registration_email,"
            " o.kind, o.recipients, o.last_error"
            " FROM events e LEFT JOIN registrations r ON r.id = e.registration_id"
            " LEFT JOIN outbox o ON o.id = (SELECT x.id FROM outbox x WHERE x.state = 'failed'"
            "   AND instr(e.reason, x.message_id) > 0 LIMIT 1)"
            " WHERE e.action = 'reply_failed' AND e.id > ? AND e.id <= ? ORDER BY e.id",
            (after, upto),
        ).fetchall()

    def bounced_registrations_between(self, after: int, upto: int) -> list[sqlite3.Row]:
        """Recipients of bounces received in the window that are (or were) registered; the live
        registration wins over a cancelled one of the same address."""
        return self.conn.execute(
            "SELECT e.id AS event_id, m.id AS message, m.arrived_at, lower(j.value) AS email,"
            " r.id AS registration_id, r.name, r.organisation, r.status"
            " FROM events e JOIN messages m ON m.id = e.message"
            " JOIN json_each(m.reading, '$.bounced_recipients') j"
            " JOIN registrations r ON r.id = (SELECT x.id FROM registrations x"
            "   WHERE x.email = lower(j.value) ORDER BY x.status = 'cancelled', x.id DESC LIMIT 1)"
            " WHERE e.action = 'received_bounce' AND e.id > ? AND e.id <= ?"
            " ORDER BY m.arrived_at, e.id",
            (after, upto),
        ).fetchall()

    def late_reminders_between(self, after: int, upto: int) -> list[sqlite3.Row]:
        """Reminders recorded at the moment of a reminder_late event in the window (the event and
        its reminders share that moment, written in one transaction)."""
        return self.conn.execute(
            "SELECT s.session_number, s.lead_days, s.due_at, s.created_at, r.email, r.name"
            " FROM reminders_sent s JOIN registrations r ON r.id = s.registration_id"
            " WHERE s.covered_by = 'reminder' AND s.created_at IN (SELECT at FROM events"
            "   WHERE action = 'reminder_late' AND id > ? AND id <= ?)"
            " ORDER BY s.due_at, s.session_number, s.id",
            (after, upto),
        ).fetchall()

    def outbox_counts_between(self, after: int, upto: int) -> dict[tuple[int, str], int]:
        return {(r[0], r[1]): r[2] for r in self.conn.execute(
            "SELECT priority, state, COUNT(*) FROM outbox WHERE id > ? AND id <= ?"
            " GROUP BY priority, state", (after, upto))}

    def record_digest(self, *, day: str, last_event_id: int, last_outbox_id: int,
                      now: dt.datetime) -> int | None:
        """The exactly-once gate: the row id, or None when this day's digest is recorded."""
        cur = self.conn.execute(
            "INSERT INTO digests (day, last_event_id, last_outbox_id, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (day) DO NOTHING",
            (day, last_event_id, last_outbox_id, iso(now)),
        )
        return cur.lastrowid if cur.rowcount else None

    def link_digest(self, digest_id: int, outbox_id: int):
        self.conn.execute("UPDATE digests SET outbox_id = ? WHERE id = ?", (outbox_id, digest_id))

    # -- reminders --------------------------------------------------------------------------
    def confirmed_participants(self) -> list[sqlite3.Row]:
        """Confirmed registrations with the moment they got their seat (confirmed_since): a
        reminder is owed only to those who already held a seat when it fell due."""
        return self.conn.execute(
            "SELECT r.id, r.email, r.name, r.organisation, COALESCE("
            "   (SELECT MAX(e.at) FROM events e WHERE e.registration_id = r.id"
            "     AND e.action IN ('confirmed', 'promoted', 'substitute')), r.updated_at)"
            " AS confirmed_since"
            " FROM registrations r WHERE r.status = 'confirmed'"
            " ORDER BY r.arrived_at, r.arrival_uid, r.arrival_index, r.id"
        ).fetchall()

    def reminder_keys(self) -> set[tuple[int, int, int, int]]:
        return {(r[0], r[1], r[2], r[3]) for r in self.conn.execute(
            "SELECT registration_id, session_number, lead_days, sequence FROM reminders_sent"
        )}

    def record_reminder(self, *, registration_id: int, session_number: int, lead_days: int,
                        sequence: int, due_at: dt.datetime, covered_by: str,
                        now: dt.datetime) -> int | None:
        """The exactly-once gate: the row id, or None when this reminder is already recorded."""
        cur = self.conn.execute(
            "INSERT INTO reminders_sent (registration_id, session_number, lead_days, sequence,"
            " due_at, covered_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (registration_id, session_number, lead_days, sequence) DO NOTHING",
            (registration_id, session_number, lead_days, sequence, iso(due_at), covered_by,
             iso(now)),
        )
        return cur.lastrowid if cur.rowcount else None

    def link_reminder(self, reminder_id: int, outbox_id: int):
        self.conn.execute(
            "UPDATE reminders_sent SET outbox_id = ? WHERE id = ?", (outbox_id, reminder_id)
        )

    def reminders_sent(self) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT s.*, r.email, o.state AS outbox_state FROM reminders_sent s"
            " JOIN registrations r ON r.id = s.registration_id"
            " LEFT JOIN outbox o ON o.id = s.outbox_id ORDER BY s.id"
        ).fetchall()

    def supersede_pending_reminders(self, session_number: int, reason: str) -> int:
        """A reminder still waiting in the outbox for a session that changed would be stale."""
        cur = self.conn.execute(
            "UPDATE outbox SET state = 'failed', last_error = ? WHERE state = 'pending'"
            " AND id IN (SELECT outbox_id FROM reminders_sent WHERE session_number = ?"
            "   AND outbox_id IS NOT NULL)",
            (reason, session_number),
        )
        return cur.rowcount

    def session_announcements(self) -> dict[int, sqlite3.Row]:
        return {r["session_number"]: r for r in self.conn.execute(
            "SELECT * FROM session_announcements"
        )}

    def announce_session(self, *, session_number: int, fingerprint: str, sequence: int,
                         cancelled: bool, now: dt.datetime, only_if_new: bool = False):
        conflict = "DO NOTHING" if only_if_new else (
            "DO UPDATE SET fingerprint = excluded.fingerprint, sequence = excluded.sequence,"
            " cancelled = excluded.cancelled, announced_at = excluded.announced_at")
        self.conn.execute(
            "INSERT INTO session_announcements (session_number, fingerprint, sequence, cancelled,"
            f" announced_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_number) {conflict}",
            (session_number, fingerprint, sequence, int(cancelled), iso(now)),
        )

    # -- health (issue 9) ------------------------------------------------------------------
    def record_health(self, job: str, *, ok: bool, error: str | None, now: dt.datetime):
        self.conn.execute(
            "INSERT INTO worker_health (job, last_attempt_at, last_success_at, last_error, failures)"
            " VALUES (?, ?, CASE WHEN ? THEN ? END, ?, CASE WHEN ? THEN 0 ELSE 1 END)"
            " ON CONFLICT (job) DO UPDATE SET last_attempt_at = excluded.last_attempt_at,"
            " last_success_at = COALESCE(excluded.last_success_at, last_success_at),"
            " last_error = excluded.last_error,"
            " failures = CASE WHEN ? THEN 0 ELSE failures + 1 END",
            (job, iso(now), ok, iso(now), error, ok, ok),
        )

    def worker_health(self) -> dict[str, sqlite3.Row]:
        return {r["job"]: r for r in self.conn.execute("SELECT * FROM worker_health")}

    def outbox_backlog(self) -> tuple[int, str | None]:
        """Mails waiting to leave (retries included), and when the oldest of them was queued."""
        row = self.conn.execute(
            "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'").fetchone()
        return row[0], row[1]

    def failed_mail_since(self, since: dt.datetime) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = 'failed' AND created_at >= ?"
            " AND last_error IS NOT 'erased on request'", (iso(since),)).fetchone()[0]

    def message_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT state, COUNT(*) FROM messages GROUP BY state")}
