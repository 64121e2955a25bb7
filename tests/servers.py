"""Real mail servers for the test suite: Dovecot (IMAP) from a throw-away config, aiosmtpd (SMTP) in-process."""

from __future__ import annotations

import collections
import dataclasses
import email
import email.message
import email.policy
import os
import pwd
import grp
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import imapclient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

LOOPBACK = "127.0.0.1"
INSTALL_HINT = (
    "Dovecot is needed for the IMAP integration tests but is not installed. "
    "Install it with `sudo apt-get install dovecot-imapd` (Debian/Ubuntu), "
    "or run `scripts/test`, which installs it."
)
# Debian puts the binaries in /usr/sbin, which is not on a normal user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries its log."""


# --------------------------------------------------------------------------- ports


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago; callers retry on the (rare) race with another process."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    *,
    deadline_s: float,
    alive: Callable[[], bool] = lambda: True,
    ready: Callable[[], bool] = lambda: True,
    describe: Callable[[], str] = lambda: "",
) -> float:
    """Poll until host:port accepts a connection and `ready()` holds; returns the seconds it took.

    Stops early when `alive()` turns false (the server died), and raises with `describe()` (the log).
    """
    start = time.monotonic()
    while True:
        if ready() and port_accepts(host, port) and alive():
            return time.monotonic() - start
        if not alive():
            raise ServerStartError(f"server on {host}:{port} exited during startup\n{describe()}")
        if time.monotonic() - start > deadline_s:
            raise ServerStartError(
                f"server on {host}:{port} did not accept connections within {deadline_s}s\n{describe()}"
            )
        time.sleep(0.02)


# --------------------------------------------------------------------------- TLS


@dataclasses.dataclass(frozen=True)
class TlsCert:
    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this certificate (verification stays on)."""
        return ssl.create_default_context(cafile=str(self.certfile))


def make_self_signed_cert(folder: Path, common_name: str = "localhost") -> TlsCert:
    """Self-signed cert valid for localhost and 127.0.0.1, made with the openssl CLI.

    The openssl CLI is a dependency of Debian's dovecot-core, so it is there whenever the tests can run;
    an EC key keeps generation instant.
    """
    openssl = shutil.which("openssl", path=_SEARCH_PATH)
    if openssl is None:
        raise RuntimeError("the `openssl` command is needed to make a test certificate: apt-get install openssl")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
            "-subj", f"/CN={common_name}",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )
    return TlsCert(cert, key)


# --------------------------------------------------------------------------- Dovecot


def serving(make: Callable[[], DovecotServer]) -> Iterator[DovecotServer]:
    """For a pytest fixture (`yield from serving(DovecotServer)`): a server made by `make`,
    started, and stopped in the background after the test. No Dovecot fails the test with the
    install hint (checked before `make`, which looks for the binaries itself), never skips it:
    a silently skipped IMAP suite would look green."""
    import pytest  # only the tests call this; the benchmarks import this module without pytest

    try:
        find_dovecot()
    except RuntimeError:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = make()
    try:
        server.start()
        yield server
    finally:
        server.close(wait=False)


def find_dovecot() -> tuple[str, str]:
    """Paths of `dovecot` and `doveadm`, or RuntimeError with the install hint."""
    dovecot = shutil.which("dovecot", path=_SEARCH_PATH)
    doveadm = shutil.which("doveadm", path=_SEARCH_PATH)
    if not dovecot or not doveadm:
        raise RuntimeError(INSTALL_HINT)
    return dovecot, doveadm


def _strip_recent(flags: Iterable[bytes]) -> frozenset[bytes]:
    # \Recent depends on which session saw the mail first; it only makes assertions flaky.
    return frozenset(f for f in flags if f.lower() != b"\\recent")


_pending_stops: list[threading.Thread] = []
_pending_lock = threading.Lock()


def wait_for_background_stops(timeout: float = 30.0) -> None:
    """Join the stops that `DovecotServer.close(wait=False)` left running."""
    deadline = time.monotonic() + timeout
    with _pending_lock:
        threads = list(_pending_stops)
        _pending_stops.clear()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


class DovecotServer:
    """One Dovecot instance with its own config, sockets, state and maildir under `root`."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        username: str = "registrations",
        password: str = "s3cret-test-pass",
        start_timeout: float = 15.0,
    ) -> None:
        self.dovecot_bin, self.doveadm_bin = find_dovecot()
        # Login processes run as the mail user and must reach base_dir, so the folder must be
        # traversable by it: pytest's tmp_path lives under a 0700 folder, hence our own mkdtemp.
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="dovecot-test-"))
        self.root.chmod(0o755)
        self.host = LOOPBACK
        self.port = 0
        self.username = username
        self.password = password
        self.start_timeout = start_timeout
        self.conf_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.mail_root = self.root / "mail"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._clients: list[imapclient.IMAPClient] = []

        if os.geteuid() == 0:
            # Dovecot refuses uid 0 as mail user; nobody/nogroup exists on every Debian.
            self.uid, self.gid = 65534, 65534
            self.service_user = pwd.getpwuid(65534).pw_name
        else:
            # Unprivileged run (a developer's laptop): everything runs as the current user.
            self.uid, self.gid = os.getuid(), os.getgid()
            self.service_user = pwd.getpwuid(self.uid).pw_name
        self.service_group = grp.getgrgid(self.gid).gr_name

    # -- lifecycle

    @property
    def maildir(self) -> Path:
        return self.mail_root / self.username

    def _write_config(self) -> None:
        for sub in ("run", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.mail_root, self.uid, self.gid)
        (self.root / "passwd").write_text(f"{self.username}:{{PLAIN}}{self.password}\n")
        (self.root / "passwd").chmod(0o644)
        r = self.root
        self.conf_path.write_text(
            f"""# Written by tests/servers.py for one test run; loopback only, no TLS.
protocols = imap
listen = {self.host}
base_dir = {r}/run
state_dir = {r}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# a refused login answers at once instead of after 2 s: tests of bad credentials stay fast
auth_failure_delay = 0
mail_location = maildir:{self.mail_root}/%u
mail_uid = {self.uid}
mail_gid = {self.gid}
first_valid_uid = 1
first_valid_gid = 1
default_login_user = {self.service_user}
default_internal_user = {self.service_user}
default_internal_group = {self.service_group}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.mail_root}/%u
}}
protocol imap {{
  # the worker, the test's own client and helpers may all be connected at once
  mail_max_userip_connections = 100
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no dovecot log written)"

    def start(self) -> None:
        """Start on a fresh free port (or the current one after a stop), wait until it accepts."""
        if self._proc is not None and self._proc.poll() is None:
            return
        keep_port = self.port != 0
        for attempt in range(3):
            if not keep_port:
                self.port = free_port(self.host)
            self._write_config()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            # -F keeps the master in the foreground so we own its pid (the kill fallback needs it);
            # its own session so that a kill of the group takes all its children with it.
            self._proc = subprocess.Popen(
                [self.dovecot_bin, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self.root / "dovecot.stderr", "ab"),
                start_new_session=True,
            )

            def describe() -> str:
                stderr = (self.root / "dovecot.stderr").read_text(errors="replace")
                return f"--- dovecot stderr ---\n{stderr}\n--- dovecot log ---\n{self.log()}"

            def ours() -> bool:
                # The master logs "starting up" only after it bound its listeners; without this check
                # another server already on the port would pass for ours.
                return "starting up" in self.log()[log_offset:]

            try:
                self.startup_seconds = wait_for_port(
                    self.host, self.port, deadline_s=self.start_timeout,
                    alive=lambda: self._proc is not None and self._proc.poll() is None,
                    ready=ours,
                    describe=describe,
                )
                return
            except ServerStartError:
                self._kill()
                new_log = self.log()[log_offset:]
                if "Address already in use" in new_log + describe() and not keep_port and attempt < 2:
                    continue  # lost the race for the port to another process
                raise

    def stop(self) -> None:
        """`doveadm stop`, then wait; SIGKILL the process group if it does not go."""
        proc, self._proc = self._proc, None
        for c in self._clients:
            try:
                c.shutdown()
            except Exception:
                pass
        self._clients.clear()
        if proc is None or proc.poll() is not None:
            return
        try:
            # doveadm stop polls until the master's pid is gone; the master is our child, so it stays a
            # zombie (and doveadm waits its full 3 s) unless we reap it meanwhile: run both at once.
            stopper = subprocess.Popen(
                [self.doveadm_bin, "-c", str(self.conf_path), "stop"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                proc.wait(timeout=10)
            finally:
                try:
                    stopper.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    stopper.kill()
                    stopper.wait()
        except (subprocess.TimeoutExpired, OSError):
            self._proc = proc
            self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def restart(self) -> None:
        """Stop and start again on the same port (connected clients are dropped, mail is kept)."""
        self.stop()
        self.start()

    def close(self, wait: bool = True) -> None:
        """Stop and remove the folder (if we made it).

        Dovecot's master takes 1-6 s to exit (it waits for its children), so a fixture passes
        `wait=False`: the stop then runs in a (non-daemon) thread; `wait_for_background_stops()` joins.
        """
        if wait:
            self._close_now()
            return
        t = threading.Thread(target=self._close_now, name=f"dovecot-stop-{self.port}")
        t.start()
        with _pending_lock:
            _pending_stops.append(t)

    def _close_now(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- IMAP helpers

    def client(self, timeout: float = 10.0) -> imapclient.IMAPClient:
        """A logged-in client; closed at teardown if the test does not. INTERNALDATEs come back tz-aware."""
        c = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        c.normalise_times = False
        try:
            c.login(self.username, self.password)
        except Exception:
            c.shutdown()
            raise
        self._clients.append(c)
        return c

    def _with_client(self, fn: Callable[[imapclient.IMAPClient], object]):
        c = self.client()
        try:
            return fn(c)
        finally:
            self._clients.remove(c)
            try:
                c.logout()
            except Exception:
                c.shutdown()

    def append(
        self,
        raw: bytes,
        internaldate: datetime,
        folder: str = "INBOX",
        flags: Iterable[bytes | str] = (),
    ) -> int:
        """APPEND one message with the given INTERNALDATE (must be tz-aware); returns its UID."""
        if internaldate.tzinfo is None:
            raise ValueError("internaldate must be timezone-aware (a naive time is ambiguous on the wire)")

        def go(c: imapclient.IMAPClient) -> int:
            if folder.upper() != "INBOX" and not c.folder_exists(folder):
                c.create_folder(folder)
            resp = c.append(folder, raw, flags=tuple(flags), msg_time=internaldate)
            # "[APPENDUID <uidvalidity> <uid>] ..." (Dovecot has UIDPLUS)
            return int(resp.split(b"]", 1)[0].split()[-1])

        return self._with_client(go)

    def flags_of(self, folder: str = "INBOX") -> dict[int, frozenset[bytes]]:
        """UID → flags (without \\Recent), read with EXAMINE so the check itself changes nothing."""

        def go(c: imapclient.IMAPClient) -> dict[int, frozenset[bytes]]:
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            if not uids:
                return {}
            return {uid: _strip_recent(f) for uid, f in c.get_flags(uids).items()}

        return self._with_client(go)

    def messages(self, folder: str = "INBOX") -> dict[int, tuple[datetime, frozenset[bytes], bytes]]:
        """UID → (INTERNALDATE, flags, raw bytes), read with EXAMINE and BODY.PEEK[]."""

        def go(c: imapclient.IMAPClient):
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            if not uids:
                return {}
            data = c.fetch(uids, ["INTERNALDATE", "FLAGS", "BODY.PEEK[]"])
            return {
                uid: (d[b"INTERNALDATE"], _strip_recent(d[b"FLAGS"]), d[b"BODY[]"])
                for uid, d in data.items()
            }

        return self._with_client(go)

    def uidvalidity(self, folder: str = "INBOX") -> int:
        return self._with_client(lambda c: c.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def recreate_inbox(self, keep_messages: bool = False) -> int:
        """Delete and recreate INBOX so that UIDVALIDITY changes and UIDs start again at 1.

        Dovecot refuses to delete INBOX over IMAP or doveadm, so the server is stopped, INBOX's files
        are removed (other folders are kept) and it is started again on the same port. With
        `keep_messages` the same mails come back (same bytes, INTERNALDATE and flags) under new UIDs,
        as after a server migration. Returns the new UIDVALIDITY.
        """
        old = self.uidvalidity()
        kept = list(self.messages().values()) if keep_messages else []
        self.stop()
        if self.maildir.exists():
            for entry in self.maildir.iterdir():
                # Keep sub-folders (".Name") and dovecot-uidvalidity*, which makes the new INBOX's
                # UIDVALIDITY differ from the old one; everything else is INBOX or a rebuildable index.
                if entry.name.startswith(".") or entry.name.startswith("dovecot-uidvalidity"):
                    continue
                if entry.name == "subscriptions":
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.start()
        for date, flags, raw in sorted(kept, key=lambda m: m[0]):
            self.append(raw, date, flags=flags)
        new = self.uidvalidity()
        if new == old:
            raise AssertionError(f"UIDVALIDITY did not change after recreating INBOX ({old})")
        return new


# --------------------------------------------------------------------------- SMTP


@dataclasses.dataclass(frozen=True)
class ReceivedMessage:
    """One message as the SMTP server accepted (or refused) it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: datetime
    peer: str
    tls: bool
    auth_login: str | None
    response: str

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


Responder = Callable[[Envelope], "str | None"]


class _RecordingHandler:
    """aiosmtpd handler: records every DATA, answers with injected failures when asked."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, srv, session: Session, envelope: Envelope, address: str, rcpt_options):
        response = self.server._rcpt_response(address)
        if response is not None:
            return response
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, srv, session: Session, envelope: Envelope) -> str:
        return self.server._on_data(session, envelope)


class SmtpServer:
    """An aiosmtpd Controller on a free loopback port, in a thread of this process."""

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        tls: str | None = None,
        cert: TlsCert | None = None,
        require_starttls: bool | None = None,
        auth_required: bool | None = None,
        rate_clock: Callable[[], float] = time.monotonic,
        smtputf8: bool = True,
    ) -> None:
        """`tls`: None (plain), "starttls" or "implicit" (SMTPS); both need `cert`.

        `smtputf8=False`: a relay that does not offer SMTPUTF8 (non-ASCII addresses refused).

        `auth`: (user, password) enables AUTH PLAIN/LOGIN and, unless `auth_required=False`,
        refuses mail from unauthenticated sessions.
        """
        if tls not in (None, "starttls", "implicit"):
            raise ValueError(f"tls must be None, 'starttls' or 'implicit', not {tls!r}")
        if tls and cert is None:
            raise ValueError("tls needs a cert")
        self.host = LOOPBACK
        self.port = 0
        self.auth = auth
        self.tls = tls
        self.cert = cert
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._attempts: list[ReceivedMessage] = []
        self._queued: collections.deque[str] = collections.deque()
        self._responder: Responder | None = None
        self._rcpt_rejects: dict[str, str] = {}
        self._rate: tuple[int, float, str] | None = None
        self._accepted_times: collections.deque[float] = collections.deque()
        self._rate_clock = rate_clock
        self._controller: Controller | None = None

        kwargs: dict[str, object] = {
            "server_hostname": "localhost",
            "enable_SMTPUTF8": smtputf8,
            "timeout": 30,  # an idle client session is dropped, never held forever
            "ready_timeout": 10.0,
        }
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True if auth_required is None else auth_required
            # Plain AUTH on loopback is what tests of security="none" need; STARTTLS tests still upgrade first.
            kwargs["auth_require_tls"] = False
        if tls == "starttls":
            assert cert is not None
            kwargs["tls_context"] = cert.server_context()
            kwargs["require_starttls"] = bool(require_starttls)
        elif tls == "implicit":
            assert cert is not None
            kwargs["ssl_context"] = cert.server_context()
        self._controller_kwargs = kwargs

    # -- lifecycle

    def start(self) -> SmtpServer:
        last: Exception | None = None
        for _ in range(3):
            port = free_port(self.host)
            controller = Controller(self._make_handler(), hostname=self.host, port=port, **self._controller_kwargs)
            try:
                controller.start()
            except Exception as exc:  # most likely the port was taken between free_port() and bind
                last = exc
                try:
                    controller.stop()
                except Exception:
                    pass
                continue
            self._controller, self.port = controller, port
            wait_for_port(self.host, port, deadline_s=10)
            return self
        raise ServerStartError(f"aiosmtpd did not start on {self.host}: {last!r}")

    def _make_handler(self) -> _RecordingHandler:
        """A subclass may return a handler with more hooks (an `auth_XOAUTH2` mechanism, say)."""
        return _RecordingHandler(self)

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the tests read

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages (2xx), oldest first; a snapshot."""
        with self._lock:
            return list(self._messages)

    @property
    def attempts(self) -> list[ReceivedMessage]:
        """Every DATA the server saw, including the ones it refused (see `.response`)."""
        with self._lock:
            return list(self._attempts)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least n messages were accepted; AssertionError after `timeout` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= n, timeout=timeout):
                raise AssertionError(
                    f"expected {n} message(s) on the SMTP server within {timeout}s, got {len(self._messages)}"
                )
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._attempts.clear()

    # -- failure injection

    def fail_next(self, *responses: str) -> None:
        """Answer the next DATA commands with these responses, one per message, e.g.
        `fail_next("451 4.3.0 Try again later", "550 5.1.1 No such user")`."""
        for r in responses:
            _check_response(r)
        with self._lock:
            self._queued.extend(responses)

    def set_responder(self, responder: Responder | None) -> None:
        """Called for each DATA once the fail_next queue is empty: return a response or None to accept."""
        with self._lock:
            self._responder = responder

    def reject_recipient(self, address: str, response: str = "550 5.1.1 No such user") -> None:
        """Refuse this address at RCPT TO (case-insensitive)."""
        _check_response(response)
        with self._lock:
            self._rcpt_rejects[address.lower()] = response

    def limit_rate(
        self, max_messages: int, per_seconds: float = 60.0,
        response: str = "451 4.7.0 Too many messages, slow down",
    ) -> None:
        """Answer `response` once `max_messages` were accepted within the last `per_seconds`."""
        _check_response(response)
        with self._lock:
            self._rate = (max_messages, per_seconds, response)

    def reset_failures(self) -> None:
        with self._lock:
            self._queued.clear()
            self._responder = None
            self._rcpt_rejects.clear()
            self._rate = None

    # -- handler side (runs in the controller's thread)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if (
            self.auth is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.auth[0]
            and auth_data.password.decode() == self.auth[1]
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def _rcpt_response(self, address: str) -> str | None:
        with self._lock:
            return self._rcpt_rejects.get(address.lower())

    def _on_data(self, session: Session, envelope: Envelope) -> str:
        with self._lock:
            response: str | None = None
            if self._queued:
                response = self._queued.popleft()
            elif self._responder is not None:
                response = self._responder(envelope)
            if response is None and self._rate is not None:
                limit, window, rate_response = self._rate
                now = self._rate_clock()
                while self._accepted_times and now - self._accepted_times[0] >= window:
                    self._accepted_times.popleft()
                if len(self._accepted_times) >= limit:
                    response = rate_response
            if response is None:
                response = "250 2.0.0 Message accepted for delivery"
            auth = getattr(session, "auth_data", None)
            record = ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.original_content or b"",
                received_at=datetime.now(timezone.utc),
                peer=str(session.peer),
                tls=session.ssl is not None or self.tls == "implicit",
                auth_login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                response=response,
            )
            self._attempts.append(record)
            if response.startswith("2"):
                self._messages.append(record)
                self._accepted_times.append(self._rate_clock())
                self._lock.notify_all()
            return response


def _check_response(response: str) -> None:
    code = response[:3]
    if not (code.isdigit() and code[0] in "245" and (len(response) == 3 or response[3] == " ")):
        raise ValueError(f"not an SMTP response line: {response!r}")
