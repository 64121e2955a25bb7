"""Shared pytest fixtures: real Dovecot and aiosmtpd servers (see tests/servers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.servers import (
    DovecotServer,
    SmtpServer,
    TlsCert,
    make_self_signed_cert,
    serving,
    wait_for_background_stops,
)


def pytest_configure(config: pytest.Config) -> None:
    # aiosmtpd warns when AUTH is allowed without TLS: on loopback that is exactly what we test.
    config.addinivalue_line("filterwarnings", "ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> TlsCert:
    """A self-signed certificate for localhost/127.0.0.1; `tls_cert.client_context()` trusts it."""
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def _dovecot_reaper() -> Iterator[None]:
    yield
    wait_for_background_stops()


@pytest.fixture
def dovecot(_dovecot_reaper: None) -> Iterator[DovecotServer]:
    """A fresh Dovecot per test (it starts in ~25 ms), stopped even if the test fails.

    The stop at teardown runs in the background (Dovecot's master takes 1-6 s to exit); all
    stops are joined at the end of the session.
    """
    yield from serving(DovecotServer)


@pytest.fixture
def make_smtp_server(tls_cert: TlsCert) -> Iterator[Callable[..., SmtpServer]]:
    """Factory: `make_smtp_server(auth=("user", "pw"), tls="starttls"|"implicit"|None,
    require_starttls=False, auth_required=None)` → a started SmtpServer, stopped at teardown."""
    servers: list[SmtpServer] = []

    def make(**options: object) -> SmtpServer:
        if options.get("tls"):
            options.setdefault("cert", tls_cert)
        server = SmtpServer(**options)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def smtp_server(make_smtp_server: Callable[..., SmtpServer]) -> SmtpServer:
    """A plain SMTP server (no TLS, no AUTH) on a free loopback port."""
    return make_smtp_server()
