"""Embedded loopback mail servers for `leernetwerk demo`: pymap (IMAP, in memory) and aiosmtpd (SMTP)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

import imapclient
from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"
TIMEOUT = 10.0  # seconds, for every socket operation below

# pymap runs in its own process rather than a thread: its main() installs signal handlers, which
# only the main thread may do, and a child process cannot leave a stuck event loop in ours.
# The child watches its stdin, a pipe from us: EOF means the demo is gone (even after a SIGKILL),
# and it then stops itself, so no orphaned server keeps the port.
_PYMAP_BOOT = r"""
import os, signal, sys, threading

def _watch_parent():
    try:
        sys.stdin.buffer.read()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=_watch_parent, daemon=True).start()
sys.argv[0] = "pymap"
from pymap.main import main
main()
"""


class EmbeddedServerError(RuntimeError):
    """An embedded server did not start; the message carries its output."""


@dataclasses.dataclass(frozen=True)
class ImapEndpoint:
    host: str
    port: int
    username: str
    password: str


@dataclasses.dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: datetime


@dataclasses.dataclass
class SmtpEndpoint:
    host: str
    port: int
    messages: list[ReceivedMail]
    _cond: threading.Condition = dataclasses.field(default_factory=threading.Condition, repr=False)

    def wait_for(self, n: int, timeout: float = TIMEOUT) -> list[ReceivedMail]:
        """Block until at least n mails arrived; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= n, timeout=timeout):
                raise TimeoutError(f"expected {n} mail(s) within {timeout}s, got {len(self.messages)}")
            return list(self.messages)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _connect(endpoint: ImapEndpoint, timeout: float = TIMEOUT) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient(endpoint.host, port=endpoint.port, ssl=False, timeout=timeout)
    try:
        client.login(endpoint.username, endpoint.password)
    except Exception:
        client.shutdown()
        raise
    return client


def _empty_inbox(endpoint: ImapEndpoint) -> None:
    """Make sure the demo starts from an empty INBOX.

    pymap's dict backend loads sample mails only with `--demo-data`, which we never pass, so this
    normally finds nothing; it is here so that a pymap version that changes that default cannot
    mix its samples into the demo's registrations.
    """
    client = _connect(endpoint)
    try:
        if client.select_folder("INBOX")[b"EXISTS"]:
            uids = client.search("ALL")
            client.delete_messages(uids)
            client.expunge()
    finally:
        client.logout()


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        if proc.stdin:
            proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def _start_pymap(username: str, password: str, log) -> tuple[subprocess.Popen[bytes], int]:
    """Start pymap on a free port and wait until it answers; retries if the port was taken meanwhile."""
    output = ""
    for _ in range(3):
        port = _free_port()
        log.seek(0)
        log.truncate()
        proc = subprocess.Popen(
            [sys.executable, "-c", _PYMAP_BOOT,
             "--host", LOOPBACK, "--port", str(port),
             "--no-service", "admin",
             "dict", "--demo-user", username, "--demo-password", password],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30  # a cold interpreter importing pymap on a slow machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection((LOOPBACK, port), timeout=0.5) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"* OK"):
                        return proc, port
            except OSError:
                pass
            time.sleep(0.05)
        _stop_process(proc)
        log.seek(0)
        output = log.read().decode(errors="replace")
        if "address already in use" not in output.lower():
            break
    raise EmbeddedServerError(f"the embedded IMAP server (pymap) did not start:\n{output}")


@contextlib.contextmanager
def embedded_imap(username: str = "demo", password: str = "demo") -> Iterator[ImapEndpoint]:
    """An in-memory IMAP server (pymap) on loopback with one user and an empty INBOX.

    Everything it holds is lost when the block ends. UIDs in pymap start at 101, not 1.
    """
    with tempfile.TemporaryFile() as log:
        proc, port = _start_pymap(username, password, log)
        try:
            endpoint = ImapEndpoint(LOOPBACK, port, username, password)
            _empty_inbox(endpoint)
            yield endpoint
        finally:
            _stop_process(proc)


class _RecordingHandler:
    def __init__(self, endpoint_ref: list[SmtpEndpoint]) -> None:
        self._ref = endpoint_ref

    async def handle_DATA(self, server, session, envelope) -> str:
        endpoint = self._ref[0]
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            received_at=datetime.now(timezone.utc),
        )
        with endpoint._cond:
            endpoint.messages.append(mail)
            endpoint._cond.notify_all()
        return "250 2.0.0 Message accepted for delivery"


@contextlib.contextmanager
def embedded_smtp() -> Iterator[SmtpEndpoint]:
    """An SMTP server (aiosmtpd, no TLS, no AUTH) on loopback that keeps every mail it receives."""
    ref: list[SmtpEndpoint] = []
    last_error: Exception | None = None
    for _ in range(3):
        port = _free_port()
        controller = Controller(
            _RecordingHandler(ref), hostname=LOOPBACK, port=port, server_hostname="localhost",
            ready_timeout=TIMEOUT, enable_SMTPUTF8=True, timeout=30,
        )
        endpoint = SmtpEndpoint(LOOPBACK, port, [])
        ref[:] = [endpoint]
        try:
            controller.start()
        except Exception as exc:  # most likely: the port was taken between _free_port() and bind
            last_error = exc
            with contextlib.suppress(Exception):
                controller.stop()
            continue
        try:
            yield endpoint
        finally:
            controller.stop()
        return
    raise EmbeddedServerError(f"the embedded SMTP server (aiosmtpd) did not start: {last_error!r}")


def append_messages(
    endpoint: ImapEndpoint,
    messages: Iterable[tuple[bytes, datetime]],
    folder: str = "INBOX",
    timeout: float = TIMEOUT,
) -> list[int]:
    """APPEND each (raw bytes, INTERNALDATE) to the folder over one connection; returns their UIDs.

    INTERNALDATE must be timezone-aware: it is the arrival time the registry orders by.
    """
    uids: list[int] = []
    client = _connect(endpoint, timeout)
    try:
        if folder.upper() != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)
        for raw, internaldate in messages:
            if internaldate.tzinfo is None:
                raise ValueError("INTERNALDATE must be timezone-aware")
            response = client.append(folder, raw, msg_time=internaldate)
            # "[APPENDUID <uidvalidity> <uid>] ..." (pymap and Dovecot both have UIDPLUS)
            uids.append(int(response.split(b"]", 1)[0].split()[-1]))
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return uids
