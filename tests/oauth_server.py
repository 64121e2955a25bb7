"""A local stand-in for Microsoft Entra ID's token endpoint, with the token introspection a mail server asks."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.servers import LOOPBACK, TlsCert


@dataclass
class Issued:
    token: str
    client_id: str
    scope: str
    expires_at: float  # time.time()


class TokenService:
    """HTTPS (MSAL insists on https authorities): OpenID discovery and the client-credentials
    token endpoint of one tenant. Plain HTTP on a second port: RFC 7662 introspection for
    Dovecot's oauth2 passdb (loopback only, like the rest of the test servers).

    `grants` maps a client id to the mailbox user its service principal may open, as
    Add-MailboxPermission does in Exchange Online.
    """

    def __init__(self, cert: TlsCert, *, tenant: str, client_id: str, secret: str,
                 mailbox_user: str, lifetime: int = 3600, echo_secret_in_errors: bool = False):
        self.cert = cert
        self.tenant = tenant
        self.clients = {client_id: secret}
        self.grants = {client_id: mailbox_user}
        self.lifetime = lifetime
        self.echo_secret_in_errors = echo_secret_in_errors
        self.issued: list[Issued] = []
        self.token_requests = 0
        self.introspections: list[tuple[str, bool]] = []  # (token, active)
        self._lock = threading.Lock()
        self._https: ThreadingHTTPServer | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- what the tests and the fake mail servers use

    @property
    def authority(self) -> str:
        return f"https://{LOOPBACK}:{self._https.server_address[1]}/{self.tenant}"

    @property
    def introspection_url(self) -> str:
        return f"http://{LOOPBACK}:{self._http.server_address[1]}/introspect"

    def user_for(self, token: str) -> str | None:
        """The mailbox user this token opens, or None (unknown or expired)."""
        with self._lock:
            for item in self.issued:
                if secrets.compare_digest(item.token, token):
                    if item.expires_at <= time.time():
                        return None
                    return self.grants.get(item.client_id)
        return None

    def tokens(self) -> list[str]:
        with self._lock:
            return [i.token for i in self.issued]

    # -- lifecycle

    def start(self) -> "TokenService":
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                return dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))

            def do_GET(self):
                base = service.authority
                if self.path.split("?")[0] == f"/{service.tenant}/v2.0/.well-known/openid-configuration":
                    return self._reply(200, {
                        "issuer": f"{base}/v2.0",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                    })
                self._reply(404, {"error": "not_found"})

            def do_POST(self):
                path = self.path.split("?")[0]
                if path == f"/{service.tenant}/oauth2/v2.0/token":
                    return self._reply(*service._token(self._form()))
                if path == "/introspect":
                    return self._reply(200, service._introspect(self._form()))
                self._reply(404, {"error": "not_found"})

        self._https = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._https.socket = self.cert.server_context().wrap_socket(self._https.socket,
                                                                    server_side=True)
        self._http = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        for server in (self._https, self._http):
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True,
                             name=f"token-service-{server.server_address[1]}").start()
        return self

    def stop(self) -> None:
        for server in (self._https, self._http):
            if server is not None:
                server.shutdown()
                server.server_close()

    def __enter__(self) -> "TokenService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the endpoints

    def _token(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.token_requests += 1
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        client, secret = form.get("client_id", ""), form.get("client_secret", "")
        if client not in self.clients:
            return 400, {"error": "unauthorized_client",
                         "error_description": f"AADSTS700016: Application with identifier "
                                              f"'{client}' was not found in the directory."}
        if not secrets.compare_digest(self.clients[client], secret):
            echo = f" (received {secret!r})" if self.echo_secret_in_errors else ""
            return 401, {"error": "invalid_client", "error_codes": [7000215],
                         "error_description": "AADSTS7000215: Invalid client secret provided."
                                              f"{echo}\r\nTrace ID: 0000\r\nTimestamp: now"}
        if not form.get("scope", "").endswith("/.default"):
            return 400, {"error": "invalid_scope"}
        item = Issued(secrets.token_urlsafe(32), client, form["scope"], time.time() + self.lifetime)
        with self._lock:
            self.issued.append(item)
        return 200, {"token_type": "Bearer", "expires_in": self.lifetime,
                     "ext_expires_in": self.lifetime, "access_token": item.token}

    def _introspect(self, form: dict[str, str]) -> dict:
        token = form.get("token", "")
        user = self.user_for(token)
        with self._lock:
            self.introspections.append((token, user is not None))
        if user is None:
            return {"active": False}
        return {"active": True, "username": user}
