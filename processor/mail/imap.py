"""The only module that talks IMAP: new mail since the last UID, with the server's arrival time."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import select
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from imapclient import IMAPClient

from processor.mail import oauth
from processor.config import Mailbox as MailboxSettings
from processor.store.db import WorkerLock

log = logging.getLogger(__name__)

# BODY.PEEK leaves \Seen alone: fetching must change nothing on the server.
# Sizes first, so that a mail over the limit is never downloaded whole.
SIZE_ITEMS = [b"INTERNALDATE", b"RFC822.SIZE"]
BODY_ITEMS = [b"BODY.PEEK[]"]
HEADER_ITEMS = [b"BODY.PEEK[HEADER]"]


def worker_lock(settings: MailboxSettings) -> WorkerLock:
    """One worker per mailbox on this machine, whatever database each one uses."""
    key = hashlib.sha256(f"{settings.host.lower()}:{settings.port}:{settings.username.lower()}:"
                         f"{settings.folder}".encode()).hexdigest()
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return WorkerLock("", path=folder / f"leernetwerk-mailbox-{key[:20]}.lock",
                      what=f"the mailbox {settings.username}@{settings.host}:{settings.port}/"
                           f"{settings.folder}")


MARK_CHUNK = 1000


def uid_set(uids: list[int]) -> str:
    """Sorted UIDs as an IMAP sequence set of ranges: [1, 2, 3, 7] → "1:3,7"."""
    parts, ordered = [], sorted(set(uids))
    first = prev = ordered[0]
    for uid in ordered[1:] + [None]:
        if uid is not None and uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{first}:{prev}" if prev != first else str(first))
        if uid is not None:
            first = prev = uid
    return ",".join(parts)


class MailboxError(Exception):
    """The mailbox could not be reached or refused an operation; the poll is retried later."""


@dataclass(frozen=True)
class FetchedMail:
    uidvalidity: int
    uid: int
    arrived_at: dt.datetime      # INTERNALDATE, aware
    size: int
    raw: bytes
    truncated: bool = False      # only the headers: the mail was larger than the limit


class Mailbox:
    """One IMAP session on the configured folder. Use as a context manager."""

    def __init__(self, settings: MailboxSettings):
        self.settings = settings
        self.client: IMAPClient | None = None
        self.uidvalidity: int | None = None

    def __enter__(self) -> "Mailbox":
        s = self.settings
        try:
            self.client = IMAPClient(
                s.host, port=s.port, ssl=s.security == "tls",
                ssl_context=s.tls_context() if s.security == "tls" else None,
                timeout=s.timeout_seconds,
            )
            # Aware datetimes straight from the server, not converted to this machine's zone.
            self.client.normalise_times = False
            if s.security == "starttls":
                self.client.starttls(s.tls_context())
            if s.auth == "oauth2":
                # SASL XOAUTH2 (Exchange Online takes no passwords); imapclient redacts
                # AUTHENTICATE in its debug log.
                self.client.oauth2_login(s.username, oauth.token(s.oauth2))
            else:
                self.client.login(s.username, s.password())
            info = self.client.select_folder(s.folder)
        except MailboxError:
            raise
        except Exception as exc:
            self._close()
            raise MailboxError(f"IMAP {s.host}:{s.port} ({s.folder}): {_describe(exc)}") from exc
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        return self

    def __exit__(self, *exc):
        self._close()

    def _close(self):
        if self.client is not None:
            try:
                self.client.logout()
            except Exception:  # the connection may already be gone; nothing to save
                pass
            self.client = None

    def new_uids(self, after_uid: int) -> list[int]:
        # "N:*" always matches the highest UID even when it is below N, hence the filter.
        uids = self.client.search(["UID", f"{after_uid + 1}:*"])
        return sorted(u for u in uids if u > after_uid)

    def fetch(self, uids: list[int]) -> Iterator[FetchedMail]:
        """Fetch in batches so a backlog never sits in memory whole."""
        size = self.settings.batch_size
        for start in range(0, len(uids), size):
            batch = uids[start:start + size]
            try:
                sizes = self.client.fetch(batch, SIZE_ITEMS)
                limit = self.settings.max_message_bytes
                small = [u for u in batch if u in sizes and sizes[u][b"RFC822.SIZE"] <= limit]
                large = [u for u in batch if u in sizes and sizes[u][b"RFC822.SIZE"] > limit]
                bodies = self.client.fetch(small, BODY_ITEMS) if small else {}
                heads = self.client.fetch(large, HEADER_ITEMS) if large else {}
            except Exception as exc:
                raise MailboxError(f"IMAP fetch failed: {_describe(exc)}") from exc
            for uid in batch:
                raw = (bodies.get(uid) or {}).get(b"BODY[]")
                if raw is None:
                    raw = (heads.get(uid) or {}).get(b"BODY[HEADER]")
                if uid not in sizes or raw is None:
                    # Deleted or moved by a person between SEARCH and FETCH: nothing to keep.
                    log.info("mail UID %s disappeared before it could be fetched", uid)
                    continue
                arrived = sizes[uid][b"INTERNALDATE"]
                if arrived.tzinfo is None:
                    arrived = arrived.replace(tzinfo=dt.timezone.utc)
                yield FetchedMail(self.uidvalidity, uid, arrived, int(sizes[uid][b"RFC822.SIZE"]),
                                  raw, truncated=uid in heads)

    def mark_processed(self, uids: list[int]) -> None:
        """Flag handled mail (never delete); optionally move it out of the way."""
        if not uids:
            return
        s = self.settings
        can_move = bool(s.move_to) and self.client.has_capability("MOVE")
        if s.move_to and not can_move:
            # COPY + EXPUNGE would delete: without MOVE the mail stays where it is.
            log.warning("the server has no MOVE; handled mail stays in %s", s.folder)
        try:
            # Servers cap a command's length (Dovecot refuses 20,000 UIDs in one STORE):
            # chunks, each written as ranges ("1:500,502").
            for start in range(0, len(uids), MARK_CHUNK):
                chunk = uid_set(uids[start:start + MARK_CHUNK])
                # .SILENT: no FETCH echo of thousands of flags (imapclient would also try to
                # read the range string back as single UIDs).
                self.client.add_flags(chunk, [b"\\Seen", s.processed_keyword.encode()],
                                      silent=True)
                if can_move:
                    self.client.move(chunk, s.move_to)
        except Exception as exc:
            raise MailboxError(f"IMAP marking failed: {_describe(exc)}") from exc

    def folder_exists(self, name: str) -> bool:
        """For `check-config`: a folder the worker reads or moves mail to."""
        try:
            return bool(self.client.folder_exists(name))
        except Exception as exc:
            raise MailboxError(f"IMAP LIST failed: {_describe(exc)}") from exc

    def create_folder(self, name: str) -> None:
        try:
            self.client.create_folder(name)
        except Exception as exc:
            raise MailboxError(f"IMAP CREATE {name!r} failed: {_describe(exc)}") from exc


class Watcher(Mailbox):
    """A second IMAP session that only waits in IDLE and tells when new mail arrived.

    It never fetches: the poll does that. imapclient's idle_check() swallows an EOF and returns
    [] as if nothing happened, so after every empty check the socket itself is asked whether the
    server hung up, and the IDLE is renewed every idle_renew_seconds (a connection that died
    without a word fails at the renewal).
    """

    def __enter__(self) -> "Watcher":
        super().__enter__()
        self.idling_since: float | None = None
        return self

    @property
    def can_idle(self) -> bool:
        return self.client is not None and self.client.has_capability("IDLE")

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when new mail arrived. MailboxError: reconnect."""
        try:
            now = time.monotonic()
            if self.idling_since is not None \
                    and now - self.idling_since >= self.settings.idle_renew_seconds:
                responses = self.client.idle_done()[1]
                self.idling_since = None
                if _new_mail(responses):
                    return True
            if self.idling_since is None:
                self.client.idle()
                self.idling_since = time.monotonic()
            responses = self.client.idle_check(timeout=timeout)
        except Exception as exc:
            raise MailboxError(f"IMAP IDLE failed: {_describe(exc)}") from exc
        if any(r[:1] == (b"BYE",) for r in responses if isinstance(r, tuple)):
            raise MailboxError("IMAP IDLE: the server said BYE")
        if not responses and self._hung_up():
            raise MailboxError("IMAP IDLE: the server closed the connection")
        return _new_mail(responses)

    def _hung_up(self) -> bool:
        sock = self.client.socket()
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if isinstance(sock, ssl.SSLSocket):
                # Readable right after idle_check() drained every line: only an EOF is left.
                return not sock.pending()
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def _close(self):
        if self.client is not None and getattr(self, "idling_since", None) is not None:
            try:
                self.client.idle_done()
            except Exception:  # a dead connection cannot leave IDLE politely
                pass
            self.idling_since = None
        super()._close()


def _new_mail(responses) -> bool:
    return any(isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT")
               for r in responses)


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
