"""OAuth2 access tokens for IMAP and SMTP (Microsoft Entra ID, client-credentials flow) and the SASL XOAUTH2 string."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from typing import TYPE_CHECKING

from processor.config import ConfigError, OAuth2

if TYPE_CHECKING:
    import msal
    import requests

log = logging.getLogger(__name__)

# A token is renewed when it has less than this left: an IMAP or SMTP login can take a while
# behind a slow link, and a token that expires during it fails the whole poll. MSAL applies
# the same 5 minutes to its cache today; this margin does not depend on that staying so.
RENEW_SECONDS = 5 * 60


class TokenError(Exception):
    """No token: names the tenant, the client and the identity provider's error code, never the
    secret. The poll is retried later, so this is not a crash."""


def xoauth2(username: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Exchange Online and Dovecot expect."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01"


class TokenProvider:
    """One app registration's tokens. MSAL keeps them in memory and fetches a new one near expiry."""

    def __init__(self, settings: OAuth2, secret: str):
        self.settings = settings
        self._secret = secret
        self._app: msal.ConfidentialClientApplication | None = None
        # The poll, the outbox flush and the IDLE watcher run in different threads: one request
        # at a time, so that they share one token instead of each fetching its own.
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # names the registration; the secret stays out of any repr
        s = self.settings
        return f"<TokenProvider tenant={s.tenant_id} client={s.client_id}>"

    def _client(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            # Imported here: msal and requests take a fifth of a second to load, and only an
            # OAuth2 set-up needs them (every command and every poll's helper paid it before).
            import msal
            s = self.settings
            self._app = msal.ConfidentialClientApplication(
                s.client_id,
                client_credential=self._secret,
                authority=s.authority,
                # Instance discovery asks login.microsoftonline.com whether the authority's host
                # is a Microsoft one; Microsoft's own hosts never need it and a configured
                # authority (a sovereign cloud, a test stand-in) is trusted as written.
                instance_discovery=False,
                http_client=_http_client(s),
            )
        return self._app

    def token(self) -> str:
        s = self.settings
        with self._lock:
            try:
                result = self._client().acquire_token_for_client(scopes=list(s.scopes))
                if _from_cache(result) and result.get("expires_in", 0) < RENEW_SECONDS:
                    self._forget_cached()
                    result = self._client().acquire_token_for_client(scopes=list(s.scopes))
            except Exception as exc:
                # Discovery or network failures (MSAL raises ValueError or requests' errors);
                # a client that failed half-way is built again on the next try.
                self._app = None
                raise TokenError(self._explain(f"{type(exc).__name__}: {exc}")) from None
        if "access_token" not in result:
            code = result.get("error") or "unknown_error"
            description = (result.get("error_description") or "").splitlines()
            raise TokenError(self._explain(f"{code}: {description[0] if description else ''}"))
        log.debug("OAuth2 token for client %s (%s, %s s left)", s.client_id,
                  result.get("token_source", "identity provider"), result.get("expires_in"))
        return result["access_token"]

    def _forget_cached(self) -> None:
        cache = self._app.token_cache
        for entry in list(cache.search(cache.CredentialType.ACCESS_TOKEN,
                                       target=list(self.settings.scopes))):
            cache.remove_at(entry)

    def _explain(self, problem: str) -> str:
        s = self.settings
        text = (f"OAuth2 token for tenant {s.tenant_id}, client {s.client_id} from {s.authority} "
                f"failed: {problem.strip()}")
        # Belt and braces: whatever an identity provider or a library echoes, the secret
        # never leaves this object in an exception's text.
        return text.replace(self._secret, "***") if self._secret else text


def _http_client(s: OAuth2) -> requests.Session:
    import requests
    import requests.adapters

    session = requests.Session()
    # verify on each request, not on the session: requests lets REQUESTS_CA_BUNDLE from the
    # environment override a session's own setting, which would silently ignore ca_file.
    session.request = functools.partial(session.request, timeout=s.timeout_seconds,
                                        verify=s.ca_file or True)
    # What MSAL does for its own client: one retry on a dropped connection.
    adapter = requests.adapters.HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    return session


def _from_cache(result: dict) -> bool:
    return result.get("token_source") == "cache"


_providers: dict[tuple[OAuth2, str], TokenProvider] = {}
_providers_lock = threading.Lock()


def provider(settings: OAuth2) -> TokenProvider:
    """The shared provider for these settings: IMAP and SMTP with one registration share tokens.

    Keyed by a digest of the secret too, so a changed secret (tests, a rotation picked up by a new
    settings load) gets a new client rather than the old secret's cache.
    """
    try:
        secret = settings.client_secret()
    except ConfigError as exc:
        raise TokenError(str(exc)) from None
    key = (settings, hashlib.sha256(secret.encode()).hexdigest())
    with _providers_lock:
        if key not in _providers:
            _providers[key] = TokenProvider(settings, secret)
        return _providers[key]


def token(settings: OAuth2) -> str:
    """A valid access token for these settings, from the cache when it has long enough left."""
    return provider(settings).token()
