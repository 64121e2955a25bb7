"""The only module that talks to SQLite: connections, transactions, numbered migrations."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from processor.clock import iso

BUSY_TIMEOUT_MS = 10_000

# Numbered, named migrations; each runs once, in its own transaction, and is recorded.
# Never edit one that has shipped: add the next number.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        8,
        "outbox by the mail it answers",
        """
        -- The review list asks, per mail, whether it was already answered.
        CREATE INDEX outbox_by_source ON outbox (source_message);
        """,
    ),
    (
        1,
        "registry, messages, outbox and event log",
        """
        CREATE TABLE mailbox_state (
            folder       TEXT PRIMARY KEY,
            uidvalidity  INTEGER NOT NULL,
            last_uid     INTEGER NOT NULL,
            updated_at   TEXT NOT NULL
        );

        -- Every mail fetched, raw, exactly once. identity is the Message-ID, or a hash of the
        -- bytes when there is none, so a re-poll or a UIDVALIDITY reset adds no second row.
        CREATE TABLE messages (
            id               INTEGER PRIMARY KEY,
            identity         TEXT NOT NULL UNIQUE,
            folder           TEXT NOT NULL,
            uidvalidity      INTEGER NOT NULL,
            uid              INTEGER NOT NULL,
            message_id       TEXT,
            arrived_at       TEXT NOT NULL,   -- the server's INTERNALDATE, UTC
            first_seen_at    TEXT NOT NULL,   -- when we fetched it (INTERNALDATE can be client-set)
            size             INTEGER NOT NULL,
            raw              BLOB NOT NULL,
            state            TEXT NOT NULL DEFAULT 'new'
                             CHECK (state IN ('new', 'processed', 'review', 'quarantined')),
            kind             TEXT,
            reading          TEXT,            -- the understanding, as JSON
            error            TEXT,
            processed_at     TEXT,
            marked_on_server INTEGER NOT NULL DEFAULT 0,
            UNIQUE (folder, uidvalidity, uid)
        );
        CREATE INDEX messages_by_state ON messages (state, arrived_at, uid);
        CREATE INDEX messages_to_mark ON messages (marked_on_server, state);

        CREATE TABLE registrations (
            id             INTEGER PRIMARY KEY,
            email          TEXT NOT NULL,
            name           TEXT,
            organisation   TEXT,
            status         TEXT NOT NULL CHECK (status IN ('confirmed', 'waitlisted', 'cancelled')),
            -- Queue order: server arrival, then the mail's UID, then the order listed in the mail.
            arrived_at     TEXT NOT NULL,
            arrival_uid    INTEGER NOT NULL,
            arrival_index  INTEGER NOT NULL,
            message_id     INTEGER REFERENCES messages (id),
            registered_by  TEXT,
            created_at     TEXT NOT NULL,
            updated_at     TEXT NOT NULL
        );
        -- One live registration per address; a cancelled person may sign up again.
        CREATE UNIQUE INDEX registrations_live_email ON registrations (email)
            WHERE status != 'cancelled';
        CREATE INDEX registrations_queue
            ON registrations (status, arrived_at, arrival_uid, arrival_index);

        CREATE TABLE outbox (
            id               INTEGER PRIMARY KEY,
            kind             TEXT NOT NULL,
            priority         INTEGER NOT NULL,      -- 0 replies, 1 reminders, 2 digest
            order_key        TEXT NOT NULL,         -- arrival of what it answers
            sender           TEXT NOT NULL,
            recipients       TEXT NOT NULL,         -- JSON list of envelope recipients
            message_id       TEXT NOT NULL UNIQUE,  -- fixed before the first attempt
            raw              BLOB NOT NULL,
            registration_id  INTEGER REFERENCES registrations (id),
            source_message   INTEGER REFERENCES messages (id),
            state            TEXT NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'sent', 'failed')),
            attempts         INTEGER NOT NULL DEFAULT 0,
            next_attempt_at  TEXT NOT NULL,
            last_error       TEXT,
            created_at       TEXT NOT NULL,
            sent_at          TEXT
        );
        CREATE INDEX outbox_due ON outbox (state, priority, order_key, id);

        -- What was decided and why; rows are only ever added.
        CREATE TABLE events (
            id               INTEGER PRIMARY KEY,
            at               TEXT NOT NULL,
            actor            TEXT NOT NULL,
            action           TEXT NOT NULL,
            email            TEXT,
            registration_id  INTEGER,
            message          INTEGER,
            reason           TEXT NOT NULL
        );
        CREATE INDEX events_by_email ON events (email, id);
        CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        """,
    ),
    (
        2,
        "waiting list lifecycle: charter, organisation key, substitutes, forgetting",
        """
        ALTER TABLE registrations ADD COLUMN org_key TEXT;
        ALTER TABLE registrations ADD COLUMN name_key TEXT;
        CREATE INDEX registrations_by_name ON registrations (name_key, status);
        ALTER TABLE registrations ADD COLUMN charter INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE registrations ADD COLUMN source TEXT NOT NULL DEFAULT 'mail';
        ALTER TABLE registrations ADD COLUMN wait_reason TEXT;
        ALTER TABLE registrations ADD COLUMN substitute_for INTEGER REFERENCES registrations (id);
        ALTER TABLE registrations ADD COLUMN forgotten INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX registrations_by_org ON registrations (status, org_key);
        CREATE INDEX registrations_by_sender ON registrations (registered_by, status);
        ALTER TABLE events ADD COLUMN forgotten INTEGER NOT NULL DEFAULT 0;
        -- The log stays append-only, except that a person's data may be blanked on request.
        DROP TRIGGER events_append_only_update;
        CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
            WHEN NOT (NEW.forgotten = 1 AND NEW.id = OLD.id AND NEW.at = OLD.at
                      AND NEW.actor = OLD.actor AND NEW.action = OLD.action)
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        """,
    ),
    (
        6,
        "automatic replies per recipient, for the daily cap",
        """
        -- One row per recipient of every automatic mail queued, so a cap per address and day
        -- can be checked with one indexed count (no loops with robots, no flooding a person).
        CREATE TABLE reply_log (
            address  TEXT NOT NULL,
            at       TEXT NOT NULL,
            outbox   INTEGER REFERENCES outbox (id)
        );
        CREATE INDEX reply_log_by_address ON reply_log (address, at);
        -- Mails over the size limit are kept as headers only, for a person to look at.
        ALTER TABLE messages ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        3,
        "reminders sent and sessions announced",
        """
        -- One row per reminder owed to a participant: the UNIQUE key is the exactly-once
        -- guarantee, written in the same transaction as the outbox row (outbox_id). A reminder
        -- made needless by an update mail about its session is recorded with no outbox row.
        -- sequence is the session's announced version: a moved session gets its reminders anew.
        CREATE TABLE reminders_sent (
            id               INTEGER PRIMARY KEY,
            registration_id  INTEGER NOT NULL REFERENCES registrations (id),
            session_number   INTEGER NOT NULL,
            lead_days        INTEGER NOT NULL,
            sequence         INTEGER NOT NULL DEFAULT 0,
            due_at           TEXT NOT NULL,
            outbox_id        INTEGER REFERENCES outbox (id),
            covered_by       TEXT NOT NULL CHECK (covered_by IN ('reminder', 'update')),
            created_at       TEXT NOT NULL,
            UNIQUE (registration_id, session_number, lead_days, sequence)
        );
        CREATE INDEX reminders_sent_by_session ON reminders_sent (session_number);

        -- What participants were last told about each session (date, hours, place, cancelled),
        -- so that a change in the config is noticed once and announced with SEQUENCE raised.
        CREATE TABLE session_announcements (
            session_number   INTEGER PRIMARY KEY,
            fingerprint      TEXT NOT NULL,
            sequence         INTEGER NOT NULL,
            cancelled        INTEGER NOT NULL DEFAULT 0,
            announced_at     TEXT NOT NULL
        );
        """,
    ),
    (
        4,
        "the organisers' daily digest",
        """
        -- One row per local day (UNIQUE: the exactly-once gate), written in the same transaction
        -- as the digest's outbox row. last_event_id is where the next digest starts reading the
        -- event log, so "since the last digest" survives a day the worker was down. A quiet day
        -- skipped by config has no outbox row and keeps the previous last_event_id.
        CREATE TABLE digests (
            id               INTEGER PRIMARY KEY,
            day              TEXT NOT NULL UNIQUE,  -- local date in the event's timezone
            last_event_id    INTEGER NOT NULL,
            last_outbox_id   INTEGER NOT NULL,
            outbox_id        INTEGER REFERENCES outbox (id),
            created_at       TEXT NOT NULL
        );
        """,
    ),
)


# Issue 8: the hot path reads only what is new. Each index below replaced a scan that grew with
# the whole history (checked with EXPLAIN QUERY PLAN in tests/test_query_plans.py).
MIGRATIONS += (
    (
        5,
        "indexes for a backlog: unmarked mail, events per registration",
        """
        -- Marking on the server looked at every mail of the folder ever fetched, each poll.
        CREATE INDEX messages_unmarked ON messages (folder, uidvalidity, uid)
            WHERE marked_on_server = 0;
        -- Reminders and history look up a registration's events; without it, a scan per person.
        CREATE INDEX events_by_registration ON events (registration_id, action);
        """,
    ),
)

# Issue 9: `leernetwerk health` reads when the worker last reached the mailbox and the relay.
MIGRATIONS += (
    (
        7,
        "worker health: the last poll and send, for monitoring",
        """
        -- One row per job ('poll': mailbox fetch and apply; 'send': the relay), overwritten each
        -- cycle: monitoring asks how long ago the last success was, not for a history.
        CREATE TABLE worker_health (
            job              TEXT PRIMARY KEY,
            last_attempt_at  TEXT NOT NULL,
            last_success_at  TEXT,
            last_error       TEXT,
            failures         INTEGER NOT NULL DEFAULT 0   -- in a row, since the last success
        );
        """,
    ),
)

# Issue 8: telling a new person their place must not count the whole waiting list. SQLite has no
# O(1) COUNT, so triggers keep the list's length; a newcomer's place is that length minus the few
# who arrived after them (none, for mail handled in arrival order). Never INSERT OR REPLACE into
# registrations: the row REPLACE removes fires no DELETE trigger, and the length would drift.
MIGRATIONS += (
    (
        9,
        "the waiting list's length, kept by triggers",
        """
        CREATE TABLE waitlist_size (
            one      INTEGER PRIMARY KEY CHECK (one = 1),
            waiting  INTEGER NOT NULL
        );
        INSERT INTO waitlist_size (one, waiting)
            VALUES (1, (SELECT COUNT(*) FROM registrations WHERE status = 'waitlisted'));
        CREATE TRIGGER waitlist_size_insert AFTER INSERT ON registrations
            WHEN new.status = 'waitlisted'
        BEGIN
            UPDATE waitlist_size SET waiting = waiting + 1;
        END;
        CREATE TRIGGER waitlist_size_delete AFTER DELETE ON registrations
            WHEN old.status = 'waitlisted'
        BEGIN
            UPDATE waitlist_size SET waiting = waiting - 1;
        END;
        CREATE TRIGGER waitlist_size_update AFTER UPDATE OF status ON registrations
            WHEN (old.status = 'waitlisted') != (new.status = 'waitlisted')
        BEGIN
            UPDATE waitlist_size
                SET waiting = waiting + (new.status = 'waitlisted') - (old.status = 'waitlisted');
        END;
        """,
    ),
)


class AlreadyRunning(Exception):
    """Another worker holds the database."""


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """Open the database, bring its schema up to date, and return a connection in autocommit mode.

    Autocommit (isolation_level=None) so that every transaction is explicit: see transaction().
    """
    # The worker's scheduler runs jobs in pool threads, one at a time per job (max_instances=1).
    conn = sqlite3.connect(os.fspath(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front, so two processes never decide the same seat."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite rolls back by itself on some errors (SQLITE_FULL): keep the real error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection) -> list[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    done = []
    # Sorted: numbers may be added to the tuple out of order by parallel work.
    for version, name, sql in sorted(MIGRATIONS):
        if version in applied:
            continue
        # executescript would commit on its own; run statement by statement inside one transaction.
        with transaction(conn):
            if conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
            ).fetchone():
                continue  # another process migrated first
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, iso(dt.datetime.now(dt.timezone.utc))),
            )
        done.append(version)
    return done


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


class WorkerLock:
    """An OS-level lock: the kernel releases it when the process dies, so a SIGKILL leaves no
    stale lock behind (unlike a PID file)."""

    def __init__(self, db_path: str | os.PathLike, *, path: Path | None = None,
                 what: str | None = None):
        self.path = path or Path(os.fspath(db_path) + ".lock")
        self.what = what or str(Path(os.fspath(db_path)))
        self._fd: int | None = None

    def acquire(self) -> "WorkerLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise AlreadyRunning(
                f"another worker ({holder}) is already using {self.what}; "
                "stop it first, or use a different --db"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class SentJournal:
    """Outbox rows the relay accepted while a backlog was being applied, written the moment it
    said 250 by the thread that sends alongside (outbox.Alongside). A file of its own beside the
    database: this write never waits for the apply's write lock, so the window in which a crash
    makes a mail go out twice stays as short as when sending after the apply. Whoever sends next
    folds it into the outbox first (outbox.fold_sent_journal), and a backup folds it into its copy.

    Each entry names the mail by its Message-ID as well as its row: a journal left beside a
    database restored from a backup must not mark another mail, which took that row, as sent."""

    def __init__(self, db_path: str | os.PathLike):
        self.path = sent_journal_path(db_path)
        self.conn = sqlite3.connect(self.path, isolation_level=None,
                                    timeout=BUSY_TIMEOUT_MS / 1000)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS sent (outbox_id INTEGER PRIMARY KEY,"
                          " sent_at TEXT NOT NULL, message_id TEXT)")
        # A journal a crash left behind under the version before this column.
        if "message_id" not in {c[1] for c in self.conn.execute("PRAGMA table_info(sent)")}:
            self.conn.execute("ALTER TABLE sent ADD COLUMN message_id TEXT")

    def add(self, outbox_id: int, message_id: str, now: dt.datetime) -> None:
        self.conn.execute("INSERT OR IGNORE INTO sent (outbox_id, message_id, sent_at)"
                          " VALUES (?, ?, ?)", (outbox_id, message_id, iso(now)))

    def entries(self) -> list[tuple[int, str | None, dt.datetime]]:
        return [(i, m, dt.datetime.fromisoformat(at)) for i, m, at in self.conn.execute(
            "SELECT outbox_id, message_id, sent_at FROM sent ORDER BY outbox_id")]

    def clear(self) -> None:
        self.conn.execute("DELETE FROM sent")

    def close(self) -> None:
        self.conn.close()


class UnreadableJournal(sqlite3.DatabaseError):
    """The sent journal exists but cannot be read; `reason` is what SQLite (or the file) said."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(
            f"the sent journal {path} cannot be read ({reason}); nothing is sent until it is"
            " repaired or moved aside, which may send the few mails it held again")


def read_sent_journal(db_path: str | os.PathLike) -> list[tuple[int, str | None, dt.datetime]]:
    """What the sent journal beside a database holds; [] if there is none."""
    path = sent_journal_path(db_path)
    if not path.exists():
        return []
    journal = None
    try:
        journal = SentJournal(db_path)
        return journal.entries()
    except (sqlite3.DatabaseError, ValueError) as exc:
        # Sending on could repeat what it holds; a person decides (it holds at most the few
        # mails of the moment before a crash, all the rest is in the outbox already).
        raise UnreadableJournal(path, str(exc)) from exc
    finally:
        if journal is not None:
            journal.close()


def clear_sent_journal(db_path: str | os.PathLike) -> None:
    journal = SentJournal(db_path)
    try:
        journal.clear()
    finally:
        journal.close()


def record_journaled(store: "Store", entries) -> tuple[int, list[tuple[int, str | None]]]:
    """Mark sent the outbox rows the journal names (caller holds the transaction): how many
    were still pending, and the entries that name no mail of this database (ignored)."""
    folded, foreign = 0, []
    for outbox_id, message_id, sent_at in entries:
        if message_id is not None and not store.holds_mail(outbox_id, message_id):
            foreign.append((outbox_id, message_id))
            continue
        folded += store.mark_sent(outbox_id, sent_at)
    return folded, foreign


def sent_journal_path(db_path: str | os.PathLike) -> Path:
    return Path(os.fspath(db_path) + ".sent")


@dataclass(frozen=True)
class BackupResult:
    pages: int
    journaled: int = 0                 # replies the sent journal held, recorded in the copy
    journal_error: str | None = None   # the journal could not be read: the copy lacks those


def backup(conn: sqlite3.Connection, target: str | os.PathLike) -> BackupResult:
    """A consistent copy through SQLite's online backup, safe while the worker writes, with the
    sent journal folded in: restoring it does not send again a reply the relay had accepted
    before the backup began."""
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists; choose a new file name")
    source = Store(conn).path
    partial = target.with_name(target.name + ".partial")
    journal_error = None
    entries: dict[int, tuple] = {}

    def read_journal() -> None:
        nonlocal journal_error
        try:
            entries.update((entry[0], entry) for entry in read_sent_journal(source))
        except UnreadableJournal as exc:
            journal_error = f"the sent journal {exc.path} cannot be read ({exc.reason})"

    try:
        dest = sqlite3.connect(partial, isolation_level=None)
        try:
            # Read before the copy too: the worker may record an entry in the outbox after the
            # copy's snapshot and clear the journal before the read after it. A reply accepted
            # during the copy is like one accepted after it: the copy cannot know.
            read_journal()
            conn.backup(dest, pages=1024)
            read_journal()
            with transaction(dest):
                folded, _ignored = record_journaled(Store(dest), entries.values())
            check = dest.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"the copy failed its integrity check: {check}")
            pages = dest.execute("PRAGMA page_count").fetchone()[0]
        finally:
            dest.close()
    except BaseException:
        partial.unlink(missing_ok=True)   # no half-made copy left beside the backups
        raise
    partial.rename(target)  # a half-written copy never carries the final name
    return BackupResult(pages, folded, journal_error)


def _json_list(value) -> str:
    import json

    return json.dumps(list(value))


def forgotten_identity(identity: str) -> str:
    """What stays of a mail's identity after erasure: enough to recognise it, nothing to read."""
    import hashlib

    return "forgotten:" + hashlib.sha256(identity.encode("utf-8", "replace")).hexdigest()


class Store:
    """Every query the program makes, as methods on plain data; callers hold the transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def transaction(self):
        return transaction(self.conn)

    @property
    def path(self) -> str:
        """The database file, for the locks that sit beside it."""
        return self.conn.execute("PRAGMA database_list").fetchone()[2]

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
                    truncated: bool = False) -> bool:
        """Store a fetched mail once. A mail already known (by identity) only gets its new
        location, so that marking it on the server still works after a UIDVALIDITY reset."""
        if self.conn.execute("SELECT 1 FROM messages WHERE identity = ?",
                             (forgotten_identity(identity),)).fetchone():
            return False  # erased on request; seeing it again must not bring it back
        cur = self.conn.execute(
            "INSERT INTO messages (identity, folder, uidvalidity, uid, message_id, arrived_at,"
            " first_seen_at, size, raw, truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (identity) DO NOTHING",
            (identity, folder, uidvalidity, uid, message_id, iso(arrived_at), iso(first_seen_at),
             size if size is not None else len(raw), raw, int(truncated)),
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

    # -- outbox -----------------------------------------------------------------------------
    def queue_mail(self, *, kind, priority, order_key, sender, recipients, message_id, raw: bytes,
                   registration_id, source_message, now: dt.datetime) -> int:
        cur = self.conn.execute(
            "INSERT INTO outbox (kind, priority, order_key, sender, recipients, message_id, raw,"
            " registration_id, source_message, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, priority, order_key, sender, _json_list(recipients), message_id, raw,
             registration_id, source_message, iso(now), iso(now)),
        )
        return cur.lastrowid

    def replies_to_since(self, address: str, since: dt.datetime) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM reply_log WHERE address = ? AND at >= ?", (address, iso(since))
        ).fetchone()[0]

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

    def holds_mail(self, outbox_id: int, message_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM outbox WHERE id = ? AND message_id = ?",
                                 (outbox_id, message_id)).fetchone() is not None

    def mark_sent(self, outbox_id: int, now: dt.datetime) -> int:
        """1 if the row was pending and is now sent, 0 if it was already recorded."""
        return self.conn.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1,"
            " last_error = NULL WHERE id = ? AND state = 'pending'",
            (iso(now), outbox_id),
        ).rowcount

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
