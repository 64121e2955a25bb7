"""Connections, transactions, the migration runner, the worker lock, the sent journal and backups; Store gathers the queries of the store package."""

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
from processor.store.events import EventQueries
from processor.store.messages import MessageQueries
from processor.store.migrations import MIGRATIONS
from processor.store.outbox import OutboxQueries
from processor.store.registrations import RegistrationQueries
from processor.store.values import sha256_hex
from processor.store.requests import RequestQueries

BUSY_TIMEOUT_MS = 10_000


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
    # Migration 10 hashes stored mails in SQL.
    conn.create_function("sha256_hex", 1, sha256_hex, deterministic=True)
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


class Store(MessageQueries, RegistrationQueries, OutboxQueries, EventQueries, RequestQueries):
    """Every query the program makes, as methods on plain data; callers hold the transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def transaction(self):
        return transaction(self.conn)

    @property
    def path(self) -> str:
        """The database file, for the locks that sit beside it."""
        return self.conn.execute("PRAGMA database_list").fetchone()[2]
