"""The mails the desk has fetched: where the mailbox stands, each mail's state and reading."""

from __future__ import annotations

import datetime as dt
import sqlite3

from processor.clock import iso
from processor.store.values import forgotten_identity, legacy_forgotten_identity


class MessageQueries:
    conn: sqlite3.Connection

    # -- mailbox position -------------------------------------------------------------------
    def mailbox_position(self, folder: str) -> tuple[int, int] | None:
        row = self.conn.execute(
            "SELECT uidvalidity, last_uid FROM mailbox_state WHERE folder = ?", (folder,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def set_mailbox_position(self, folder: str, uidvalidity: int, last_uid: int, now: dt.datetime):
        self.conn.execute(
            "INSERT INTO mailbox_state (folder, uidvalidity, last_uid, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (folder) DO UPDATE SET"
            " uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid,"
            " updated_at = excluded.updated_at",
            (folder, uidvalidity, last_uid, iso(now)),
        )

    # -- messages ---------------------------------------------------------------------------
    def add_message(self, *, identity, folder, uidvalidity, uid, message_id, arrived_at,
                    first_seen_at, raw: bytes, size: int | None = None,
                    truncated: bool = False, internal_date=None) -> bool:
        """Store a fetched mail once. A mail already known (by identity: Message-ID and the hash
        of its bytes) only gets its new location, so that marking it on the server still works
        after a UIDVALIDITY reset; another mail never takes its row, UID or state."""
        if self.conn.execute("SELECT 1 FROM messages WHERE identity IN (?, ?)",
                             (forgotten_identity(identity),
                              legacy_forgotten_identity(message_id, raw))).fetchone():
            return False  # erased on request; seeing it again must not bring it back
        cur = self.conn.execute(
            "INSERT INTO messages (identity, folder, uidvalidity, uid, message_id, arrived_at,"
            " first_seen_at, size, raw, truncated, internal_date)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (identity) DO NOTHING",
            (identity, folder, uidvalidity, uid, message_id, iso(arrived_at), iso(first_seen_at),
             size if size is not None else len(raw), raw, int(truncated),
             iso(internal_date or arrived_at)),
        )
        if cur.rowcount:
            return True
        self.conn.execute(
            "UPDATE OR IGNORE messages SET folder = ?, uidvalidity = ?, uid = ? WHERE identity = ?",
            (folder, uidvalidity, uid, identity),
        )
        return False

    def new_message_ids(self, limit: int) -> list[int]:
        """Mails to apply, oldest arrival first, then UID: the order seats are given in."""
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM messages WHERE state = 'new' ORDER BY arrived_at, uid, id LIMIT ?",
            (limit,),
        )]

    def new_message_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM messages WHERE state = 'new'").fetchone()[0]

    def message(self, message_id: int) -> sqlite3.Row:
        return self.conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()

    def finish_message(self, message_id: int, *, state: str, kind: str | None,
                       reading_json: str | None, error: str | None, now: dt.datetime):
        self.conn.execute(
            "UPDATE messages SET state = ?, kind = ?, reading = ?, error = ?, processed_at = ?"
            " WHERE id = ?",
            (state, kind, reading_json, error, iso(now), message_id),
        )

    def messages_to_mark(self, folder: str, uidvalidity: int,
                         limit: int) -> list[tuple[int, int]]:
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT id, uid FROM messages WHERE marked_on_server = 0 AND state != 'new'"
            " AND folder = ? AND uidvalidity = ? ORDER BY uid LIMIT ?",
            (folder, uidvalidity, limit),
        )]

    def set_marked(self, ids: list[int]):
        self.conn.executemany(
            "UPDATE messages SET marked_on_server = 1 WHERE id = ?", [(i,) for i in ids]
        )

    # -- reprocess (issue 9) ---------------------------------------------------------------
    def stored_messages(self, ids: list[int] | None = None, *,
                        states: tuple[str, ...] = ()) -> list[sqlite3.Row]:
        """Mails by id, or by state, in arrival order (the order seats are given in)."""
        where, params = [], []
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids)) or 'NULL'})")
            params += ids
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += states
        return self.conn.execute(
            "SELECT * FROM messages" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY arrived_at, uid, id", params).fetchall()

    def answered_by(self, message_id: int) -> set[str]:
        """Every address a mail caused a reply to (To and Cc): never a second one for it."""
        return {r[0] for r in self.conn.execute(
            "SELECT DISTINCT j.value FROM outbox o JOIN json_each(o.recipients) j"
            " WHERE o.source_message = ?", (message_id,))}

    def registrations_from(self, message_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM registrations WHERE message_id = ? ORDER BY id", (message_id,)
        ).fetchall()

    def set_reading(self, message_id: int, *, state: str, kind: str | None, reading_json: str,
                    now: dt.datetime):
        self.conn.execute(
            "UPDATE messages SET state = ?, kind = ?, reading = ?, error = NULL, processed_at = ?"
            " WHERE id = ?", (state, kind, reading_json, iso(now), message_id))
