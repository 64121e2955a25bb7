"""Registrations and the people behind them: seats, the waiting list, history, erasure."""

from __future__ import annotations

import datetime as dt
import sqlite3

from processor.clock import iso
from processor.store.values import forgotten_identity


class RegistrationQueries:
    conn: sqlite3.Connection

    # -- registrations ----------------------------------------------------------------------
    def live_registration(self, email: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM registrations WHERE email = ? AND status != 'cancelled'", (email,)
        ).fetchone()

    def registration(self, registration_id: int) -> sqlite3.Row:
        return self.conn.execute(
            "SELECT * FROM registrations WHERE id = ?", (registration_id,)
        ).fetchone()

    def add_registration(self, *, email, name, name_key, organisation, org_key, charter: bool,
                         arrived_at: str, arrival_uid: int, arrival_index: int,
                         message_id: int | None, registered_by: str | None, capacity: int,
                         max_per_org: int, source: str, now: dt.datetime,
                         substitute_for: int | None = None, status: str | None = None) -> int:
        """The seat decision, in SQL inside the caller's transaction: confirmed while fewer than
        capacity are confirmed (and, when a cap is set, fewer than max_per_org of the same
        organisation), else waitlisted. A seat once given is never re-decided here, so a mail that
        turns up late with an older arrival time joins the queue by arrival only."""
        cur = self.conn.execute(
            "INSERT INTO registrations (email, name, name_key, organisation, org_key, charter, status,"
            " arrived_at, arrival_uid, arrival_index, message_id, registered_by, source,"
            " substitute_for, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, COALESCE(?, CASE"
            "   WHEN (SELECT COUNT(*) FROM registrations WHERE status = 'confirmed') >= ?"
            "     THEN 'waitlisted'"
            "   WHEN ? > 0 AND (SELECT COUNT(*) FROM registrations"
            "     WHERE status = 'confirmed' AND org_key = ?) >= ? THEN 'waitlisted'"
            "   ELSE 'confirmed' END), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (email, name, name_key, organisation, org_key, int(charter), status, capacity, max_per_org,
             org_key, max_per_org, arrived_at, arrival_uid, arrival_index, message_id,
             registered_by, source, substitute_for, iso(now), iso(now)),
        )
        return cur.lastrowid

    def set_wait_reason(self, registration_id: int, reason: str | None):
        self.conn.execute("UPDATE registrations SET wait_reason = ? WHERE id = ?",
                          (reason, registration_id))

    def waitlist_position(self, registration_id: int) -> int | None:
        # Length minus those behind: the newest person (the usual question) costs one index seek.
        row = self.conn.execute(
            "SELECT r.status, (SELECT waiting FROM waitlist_size)"
            " - (SELECT COUNT(*) FROM registrations o WHERE o.status = 'waitlisted'"
            "   AND (o.arrived_at, o.arrival_uid, o.arrival_index, o.id)"
            "     > (r.arrived_at, r.arrival_uid, r.arrival_index, r.id))"
            " FROM registrations r WHERE r.id = ?",
            (registration_id,),
        ).fetchone()
        return row[1] if row and row[0] == "waitlisted" else None

    def set_status(self, registration_id: int, status: str, now: dt.datetime):
        self.conn.execute(
            "UPDATE registrations SET status = ?, updated_at = ? WHERE id = ?",
            (status, iso(now), registration_id),
        )

    def first_waiting(self, max_per_org: int = 0) -> sqlite3.Row | None:
        """The head of the waiting list; with an organisation cap, the first whose organisation
        is still under it (the others keep their place)."""
        return self.conn.execute(
            "SELECT * FROM registrations r WHERE status = 'waitlisted'"
            " AND (? = 0 OR (SELECT COUNT(*) FROM registrations c WHERE c.status = 'confirmed'"
            "                AND c.org_key = r.org_key) < ?)"
            " ORDER BY arrived_at, arrival_uid, arrival_index, id LIMIT 1",
            (max_per_org, max_per_org),
        ).fetchone()

    def live_by_name(self, name_key: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM registrations WHERE name_key = ? AND status != 'cancelled'"
            " ORDER BY id", (name_key,),
        ).fetchall()

    def confirmed_count(self) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM registrations WHERE status = 'confirmed'"
        ).fetchone()[0]

    def registry(self) -> list[sqlite3.Row]:
        """Confirmed, then the waiting list, then cancelled; each in queue order."""
        return self.conn.execute(
            "SELECT * FROM registrations ORDER BY"
            " CASE status WHEN 'confirmed' THEN 0 WHEN 'waitlisted' THEN 1 ELSE 2 END,"
            " arrived_at, arrival_uid, arrival_index, id"
        ).fetchall()

    # -- organisers ------------------------------------------------------------------------
    def set_message_state(self, message_id: int, state: str, now: dt.datetime):
        self.conn.execute("UPDATE messages SET state = ?, processed_at = ? WHERE id = ?",
                          (state, iso(now), message_id))

    def message_was_answered(self, message_id: int) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM outbox WHERE source_message = ? LIMIT 1", (message_id,)
        ).fetchone() is not None

    def messages_needing_a_person(self) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT id, arrived_at, state, kind, reading, error FROM messages"
            " WHERE state IN ('review', 'quarantined') ORDER BY arrived_at, uid"
        ).fetchall()

    def desk_reasons(self, message_id: int, actions: tuple[str, ...]) -> list[str]:
        """Why the desk itself set a mail aside (not what the reading said), in order."""
        marks = ",".join("?" * len(actions))
        return [r[0] for r in self.conn.execute(
            f"SELECT reason FROM events WHERE message = ? AND action IN ({marks}) ORDER BY id",
            (message_id, *actions))]

    def history(self, email: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM events WHERE email = ? OR registration_id IN"
            " (SELECT id FROM registrations WHERE email = ?) ORDER BY id",
            (email, email),
        ).fetchall()

    def forget(self, email: str, now: dt.datetime) -> dict[str, int]:
        """Erase one person's personal data and raw mails; anonymous counts stay."""
        ids = [r[0] for r in self.conn.execute(
            "SELECT id FROM registrations WHERE email = ?", (email,))]
        marks = ",".join("?" * len(ids)) or "NULL"
        messages = [r[0] for r in self.conn.execute(
            f"SELECT id FROM messages WHERE id IN (SELECT message_id FROM registrations"
            f" WHERE id IN ({marks})) OR json_extract(reading, '$.sender') = ?", (*ids, email))]
        mmarks = ",".join("?" * len(messages)) or "NULL"
        counts = {"registrations": len(ids), "messages": len(messages)}
        self.conn.execute(
            f"UPDATE registrations SET email = 'vergeten-' || id || '@invalid', name = NULL,"
            f" name_key = NULL, registered_by = NULL, forgotten = 1, updated_at = ?"
            f" WHERE id IN ({marks})", (iso(now), *ids))
        self.conn.execute("UPDATE registrations SET registered_by = NULL WHERE registered_by = ?",
                          (email,))
        self.conn.execute("DELETE FROM reply_log WHERE address = ?", (email,))
        # Confirmations waiting for this person, or asked by a mail of theirs, hold their data.
        self.conn.execute(f"DELETE FROM requests WHERE email = ? OR registration_id IN ({marks})"
                          f" OR message IN ({mmarks})", (email, *ids, *messages))
        for message_id, identity in self.conn.execute(
                f"SELECT id, identity FROM messages WHERE id IN ({mmarks})", messages).fetchall():
            self.conn.execute(
                "UPDATE messages SET identity = ?, raw = x'', reading = NULL, message_id = NULL,"
                " error = NULL WHERE id = ?", (forgotten_identity(identity), message_id))
        counts["mails_out"] = self.conn.execute(
            f"UPDATE outbox SET raw = x'', recipients = '[]',"
            f" state = CASE state WHEN 'pending' THEN 'failed' ELSE state END,"
            f" last_error = CASE state WHEN 'pending' THEN 'erased on request' ELSE last_error END"
            f" WHERE registration_id IN ({marks}) OR source_message IN ({mmarks})"
            f" OR recipients LIKE ?", (*ids, *messages, f'%"{email}"%')).rowcount
        counts["events"] = self.conn.execute(
            f"UPDATE events SET email = NULL, reason = 'gegevens gewist op verzoek', forgotten = 1"
            f" WHERE email = ? OR registration_id IN ({marks}) OR message IN ({mmarks})",
            (email, *ids, *messages)).rowcount
        return counts

    def emails_with_personal_data(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT email FROM registrations WHERE forgotten = 0 UNION"
            " SELECT DISTINCT json_extract(reading, '$.sender') FROM messages"
            " WHERE reading IS NOT NULL AND json_extract(reading, '$.sender') IS NOT NULL")]

    def erase_all_raw_mail(self) -> int:
        rows = self.conn.execute("SELECT id, identity FROM messages WHERE identity NOT LIKE"
                                 " 'forgotten:%'").fetchall()
        for message_id, identity in rows:
            self.conn.execute(
                "UPDATE messages SET identity = ?, raw = x'', reading = NULL, message_id = NULL,"
                " error = NULL WHERE id = ?", (forgotten_identity(identity), message_id))
        self.conn.execute("UPDATE outbox SET raw = x'', recipients = '[]'")
        self.conn.execute("DELETE FROM reply_log")
        return len(rows)
