"""Decisions by mail: used tokens, and requests waiting for a confirmation (issue 19)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

from processor.clock import iso


class RequestQueries:
    conn: sqlite3.Connection

    # -- tokens -----------------------------------------------------------------------------
    def token_use(self, mac: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM used_tokens WHERE mac = ?", (mac,)).fetchone()

    def use_token(self, *, mac: str, action: str, item: str, by: str, message: int | None,
                  outcome: str, now: dt.datetime) -> bool:
        """Record the token as used; False if it was used already (the PRIMARY KEY decides)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO used_tokens (mac, action, item, used_at, used_by, message, outcome)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", (mac, action, item, iso(now), by, message, outcome))
        return cur.rowcount == 1

    # -- requests ---------------------------------------------------------------------------
    def add_request(self, *, kind: str, email: str, message: int | None,
                    registration_id: int | None, payload: dict, summary: str,
                    now: dt.datetime, expires: dt.datetime) -> int:
        cur = self.conn.execute(
            "INSERT INTO requests (kind, email, message, registration_id, payload, summary,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, email, message, registration_id, json.dumps(payload, ensure_ascii=False),
             summary, iso(now), iso(expires)))
        return cur.lastrowid

    def request(self, request_id: int) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()

    def settle_request(self, request_id: int, *, by: str, outcome: str, now: dt.datetime) -> bool:
        cur = self.conn.execute(
            "UPDATE requests SET settled_at = ?, settled_by = ?, outcome = ?"
            " WHERE id = ? AND settled_at IS NULL", (iso(now), by, outcome, request_id))
        return cur.rowcount == 1

    def open_request_for_registration(self, registration_id: int, kind: str,
                                      now: dt.datetime) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM requests WHERE registration_id = ? AND kind = ? AND settled_at IS NULL"
            " AND expires_at > ? ORDER BY id DESC LIMIT 1",
            (registration_id, kind, iso(now))).fetchone()

    def open_requests_of_registration(self, registration_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM requests WHERE registration_id = ? AND settled_at IS NULL ORDER BY id",
            (registration_id,)).fetchall()

    def open_requests_for(self, message_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM requests WHERE message = ? AND settled_at IS NULL ORDER BY id",
            (message_id,)).fetchall()

    def settle_requests_for(self, message_id: int, *, by: str, outcome: str,
                            now: dt.datetime) -> int:
        """A mail settled another way (an organiser's resolve): its waiting confirmations lapse."""
        cur = self.conn.execute(
            "UPDATE requests SET settled_at = ?, settled_by = ?, outcome = ?"
            " WHERE message = ? AND settled_at IS NULL", (iso(now), by, outcome, message_id))
        return cur.rowcount

    def last_settlement(self, message_id: int) -> sqlite3.Row | None:
        """Who last settled a mail and how (resolve, retry, a confirmed request)."""
        return self.conn.execute(
            "SELECT at, actor, action, reason FROM events WHERE message = ?"
            " AND action IN ('resolved', 'retry', 'reprocessed', 'cancelled', 'substitute')"
            " ORDER BY id DESC LIMIT 1", (message_id,)).fetchone()

    def set_registered_by(self, registration_id: int, email: str, now: dt.datetime) -> None:
        self.conn.execute("UPDATE registrations SET registered_by = ?, updated_at = ? WHERE id = ?",
                          (email, iso(now), registration_id))

    def forget_requests(self, email: str) -> int:
        return self.conn.execute("DELETE FROM requests WHERE email = ?", (email,)).rowcount
