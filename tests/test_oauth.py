"""Microsoft 365 sign-in: OAuth2 client-credentials tokens (MSAL) used as SASL XOAUTH2 against a real
Dovecot (oauth2 passdb, token introspection) and aiosmtpd (an XOAUTH2 mechanism), with a local
stand-in for the Entra ID token endpoint that issued the tokens both servers check."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import imapclient
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from processor import config
from processor.store import db
from processor.mail import oauth
from processor.desk import pipeline
from processor.clock import Clock
from tests.desk import PROJECT, base_config, desk_settings, signup
from tests.oauth_server import TokenService
from tests.servers import DovecotServer, SmtpServer, _RecordingHandler, serving

TENANT = "3f0a1c2e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
CLIENT = "9e8d7c6b-5a4f-4e3d-2c1b-0a9f8e7d6c5b"
SECRET = "Qx8~test.client-secret_value~42"
SECRET_ENV = "LEERNETWERK_TEST_OAUTH2_SECRET"
NOW = Clock(dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc))
ARRIVED = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))


# --------------------------------------------------------------------------- servers


class OAuthDovecot(DovecotServer):
    """Dovecot that also takes XOAUTH2, checking each token at the stand-in's introspection
    endpoint (RFC 7662, POST), as a production Dovecot would at its identity provider.

    The password passdb stays first, for the test's own helpers (append, flags); the oauth2
    passdb only answers XOAUTH2, so a token is never checked as a password or the other way."""

    def __init__(self, introspection_url: str, **kwargs):
        super().__init__(**kwargs)
        self.introspection_url = introspection_url

    def _write_config(self) -> None:
        super()._write_config()
        ext = self.root / "dovecot-oauth2.conf.ext"
        ext.write_text(
            "introspection_mode = post\n"
            f"introspection_url = {self.introspection_url}\n"
            # the token must open this very mailbox, and be current
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
        )
        with open(self.conf_path, "a") as conf:
            # Later settings override earlier ones in Dovecot's config.
            conf.write(
                "\nauth_mechanisms = plain login xoauth2\n"
                "passdb {\n"
                "  driver = oauth2\n"
                "  mechanisms = xoauth2\n"
                f"  args = {ext}\n"
                "}\n"
            )


class _XOAuth2Handler(_RecordingHandler):
    async def auth_XOAUTH2(self, server, args) -> AuthResult:
        """SASL XOAUTH2 as Exchange Online speaks it: accepted only for a token the stand-in
        issued, not expired, for the mailbox in `user=`."""
        if len(args) == 2:
            blob = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer[len("Bearer "):] if bearer.startswith("Bearer ") else ""
        owner = self.server.tokens.user_for(token)
        self.server.xoauth2_attempts.append((user, token, owner == user))
        if owner is not None and owner == user:
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        # The error report as a 334 challenge; the client's empty answer ends the exchange.
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, message="535 5.7.3 Authentication unsuccessful")


class XOAuth2SmtpServer(SmtpServer):
    """STARTTLS required, then AUTH XOAUTH2 only (no passwords), as smtp.office365.com."""

    def __init__(self, tokens: TokenService, **kwargs):
        super().__init__(tls="starttls", require_starttls=True, **kwargs)
        self.tokens = tokens
        self.xoauth2_attempts: list[tuple[str, str, bool]] = []
        self._controller_kwargs.update(auth_required=True, auth_require_tls=True,
                                       auth_exclude_mechanism=["PLAIN", "LOGIN"])

    def _make_handler(self) -> _RecordingHandler:
        return _XOAuth2Handler(self)


@pytest.fixture
def tokens(tls_cert) -> Iterator[TokenService]:
    with TokenService(tls_cert, tenant=TENANT, client_id=CLIENT, secret=SECRET,
                      mailbox_user="registrations") as service:
        yield service


@pytest.fixture
def oauth_dovecot(_dovecot_reaper, tokens) -> Iterator[OAuthDovecot]:
    yield from serving(lambda: OAuthDovecot(tokens.introspection_url, username="registrations"))


@pytest.fixture
def oauth_smtp(tokens, tls_cert) -> Iterator[XOAuth2SmtpServer]:
    server = XOAuth2SmtpServer(tokens, cert=tls_cert)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def oauth_sections(dovecot, smtp, tokens, tls_cert) -> dict:
    return dict(
        mailbox={"auth": "oauth2", "password_env": ""},
        smtp={"auth": "oauth2", "security": "starttls", "host": "localhost", "port": smtp.port,
              "username": dovecot.username, "password_env": "", "ca_file": str(tls_cert.certfile)},
        oauth2={"tenant_id": TENANT, "client_id": CLIENT, "client_secret_env": SECRET_ENV,
                "authority": tokens.authority, "ca_file": str(tls_cert.certfile),
                "timeout_seconds": 10},
    )


def oauth_settings(dovecot, smtp, tokens, tls_cert, monkeypatch, secret=SECRET):
    monkeypatch.setenv(SECRET_ENV, secret)
    settings = desk_settings(dovecot, smtp, monkeypatch,
                             **oauth_sections(dovecot, smtp, tokens, tls_cert))
    # No password anywhere: a login that fell back to one would fail.
    monkeypatch.delenv("LEERNETWERK_TEST_IMAP_PASSWORD")
    return settings


def secret_forms(*values: str) -> set[str]:
    """Each value as it could leak: plain, and inside a base64 XOAUTH2 blob or form body."""
    out = set()
    for v in values:
        out.add(v)
        out.add(base64.b64encode(oauth.xoauth2("registrations", v).encode()).decode())
    return out


def leaks(caplog, values: set[str]) -> list[str]:
    # mail.log is aiosmtpd: the stand-in server's own log of what it received, not ours.
    texts = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    texts += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    return [t for t in texts for v in values if v in t]


# --------------------------------------------------------------------------- config


def raw_with(**sections) -> dict:
    raw = base_config()
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


OAUTH2 = {"tenant_id": TENANT, "client_id": CLIENT, "client_secret_env": SECRET_ENV}


def test_config_password_stays_the_default():
    settings = config.from_dict(base_config(), PROJECT / "config" / "leernetwerk.toml")
    assert settings.mailbox.auth == settings.smtp.auth == "password"
    assert settings.mailbox.oauth2 is None


def test_config_oauth2_defaults_to_the_tenants_authority_and_the_exchange_scope():
    raw = raw_with(mailbox={"auth": "oauth2"}, smtp={"auth": "oauth2"}, oauth2=OAUTH2)
    settings = config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")
    for server in (settings.mailbox, settings.smtp):
        assert server.auth == "oauth2"
        assert server.oauth2.authority == f"https://login.microsoftonline.com/{TENANT}"
        assert server.oauth2.scopes == ("https://outlook.office365.com/.default",)
    # Same registration, same scopes: IMAP and SMTP share one token provider.
    assert settings.mailbox.oauth2 == settings.smtp.oauth2


@pytest.mark.parametrize("sections, where", [
    ({"mailbox": {"auth": "kerberos"}}, "[mailbox] auth: must be one of password, oauth2"),
    ({"smtp": {"auth": "oauth2"}}, "[oauth2]: is missing; [smtp] auth"),
    ({"mailbox": {"auth": "oauth2", "username": ""}, "oauth2": OAUTH2}, "[mailbox] username"),
    ({"smtp": {"auth": "oauth2"}, "oauth2": {**OAUTH2, "tenant_id": ""}}, "[oauth2] tenant_id"),
    ({"smtp": {"auth": "oauth2"}, "oauth2": {"tenant_id": TENANT, "client_secret_env": "X"}},
     "[oauth2] client_id: is missing"),
    ({"smtp": {"auth": "oauth2"}, "oauth2": {**OAUTH2, "authority": "http://idp.example/t"}},
     "[oauth2] authority: must be an https URL"),
    ({"smtp": {"auth": "oauth2"}, "oauth2": {**OAUTH2, "scopes": "x"}}, "[oauth2] scopes"),
])
def test_config_errors_name_the_file_and_the_key(sections, where):
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(raw_with(**sections), PROJECT / "config" / "leernetwerk.toml")
    assert str(err.value).startswith(f"{PROJECT / 'config' / 'leernetwerk.toml'}: ")
    assert where in str(err.value)


def test_a_secret_pasted_as_the_variable_name_is_refused_and_not_repeated():
    raw = raw_with(smtp={"auth": "oauth2"}, oauth2={**OAUTH2, "client_secret_env": SECRET})
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")
    assert "[oauth2] client_secret_env: must be the NAME" in str(err.value)
    assert SECRET not in str(err.value)


def test_a_missing_secret_variable_is_named(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    raw = raw_with(smtp={"auth": "oauth2"}, oauth2=OAUTH2)
    settings = config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")
    with pytest.raises(oauth.TokenError, match=f"client_secret_env: the environment variable "
                                               f"{SECRET_ENV} is not set"):
        oauth.token(settings.smtp.oauth2)


# --------------------------------------------------------------------------- tokens


def oauth2_settings(tokens, tls_cert, **overrides) -> config.OAuth2:
    values = dict(tenant_id=TENANT, client_id=CLIENT, client_secret_env=SECRET_ENV,
                  authority=tokens.authority, scopes=("https://outlook.office365.com/.default",),
                  source=PROJECT / "config" / "leernetwerk.toml", ca_file=str(tls_cert.certfile),
                  timeout_seconds=10.0)
    return config.OAuth2(**(values | overrides))


def test_xoauth2_string():
    assert oauth.xoauth2("a@b.be", "tok") == "user=a@b.be\x01auth=Bearer tok\x01\x01"


def test_a_token_is_fetched_once_and_reused_while_it_has_long_enough_left(
        tokens, tls_cert, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = oauth2_settings(tokens, tls_cert)
    first = oauth.token(settings)
    assert oauth.token(settings) == first
    assert tokens.token_requests == 1
    assert tokens.user_for(first) == "registrations"


def test_a_token_near_its_expiry_is_renewed_before_it_is_used(tokens, tls_cert, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    # Valid for 7 minutes, so MSAL's own cache would hand it out again; with a margin of
    # 8 minutes it is already too close to its end to start a login with.
    tokens.lifetime = 7 * 60
    monkeypatch.setattr(oauth, "RENEW_SECONDS", 8 * 60)
    settings = oauth2_settings(tokens, tls_cert)
    first = oauth.token(settings)
    second = oauth.token(settings)
    assert second != first and tokens.token_requests == 2
    # With the usual 5 minutes the same 7-minute token is still good to use.
    monkeypatch.setattr(oauth, "RENEW_SECONDS", 5 * 60)
    assert oauth.token(settings) == second and tokens.token_requests == 2


def test_a_wrong_secret_names_tenant_client_and_error_code_but_not_the_secret(
        tokens, tls_cert, monkeypatch):
    tokens.echo_secret_in_errors = True  # an identity provider that repeats what it got
    monkeypatch.setenv(SECRET_ENV, "wrong-" + SECRET)
    with pytest.raises(oauth.TokenError) as err:
        oauth.token(oauth2_settings(tokens, tls_cert))
    text = str(err.value)
    assert TENANT in text and CLIENT in text and "invalid_client" in text and "AADSTS7000215" in text
    assert SECRET not in text and "wrong-" not in text
    # no chained exception carries the provider's raw answer either
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_an_unreachable_authority_is_a_clear_error(tokens, tls_cert, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = oauth2_settings(tokens, tls_cert, authority=tokens.authority.replace(TENANT, "nope"))
    with pytest.raises(oauth.TokenError, match=f"tenant {TENANT}, client {CLIENT} from "
                                               f"https://127.0.0.1:\\d+/nope failed"):
        oauth.token(settings)


# --------------------------------------------------------------------------- end to end


def test_a_poll_over_imap_and_smtp_with_oauth2_answers_a_signup(
        oauth_dovecot, oauth_smtp, tokens, tls_cert, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    # logs.setup keeps imaplib's trace (every FETCHed mail) at INFO (issue 16); this test turns
    # the trace on by hand, to prove that even a full trace holds no token.
    caplog.set_level(logging.DEBUG, logger="imapclient.imaplib")
    settings = oauth_settings(oauth_dovecot, oauth_smtp, tokens, tls_cert, monkeypatch)
    oauth_dovecot.append(signup("Ann Peeters", "ann.peeters@gent.be", "Stad Gent",
                                date=ARRIVED), ARRIVED)
    store = db.Store(db.connect(tmp_path / "state.sqlite"))

    report = pipeline.poll(store, settings, NOW)

    assert report.mailbox_error is None and report.fetched == 1 and report.applied == 1
    [reply] = oauth_smtp.wait_for(1)
    assert reply.rcpt_tos == ("ann.peeters@gent.be",)
    assert reply.message["Subject"].startswith("Inschrijving bevestigd")
    assert reply.tls and reply.auth_login == "registrations"
    # One token, issued by the stand-in, checked by both servers.
    [token] = tokens.tokens()
    assert tokens.introspections == [(token, True)]
    assert oauth_smtp.xoauth2_attempts == [("registrations", token, True)]
    assert "method=XOAUTH2" in oauth_dovecot.log()
    # The IMAP conversation itself was logged (at debug), and still no token in it.
    assert any(r.name.startswith("imapclient") and "AUTHENTICATE" in r.getMessage()
               for r in caplog.records)
    assert not leaks(caplog, secret_forms(token, SECRET))


def test_an_expired_token_is_renewed_before_use(
        oauth_dovecot, oauth_smtp, tokens, tls_cert, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    tokens.lifetime = 2
    settings = oauth_settings(oauth_dovecot, oauth_smtp, tokens, tls_cert, monkeypatch)
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    oauth_dovecot.append(signup("Ann Peeters", "ann.peeters@gent.be", "Stad Gent",
                                date=ARRIVED), ARRIVED)
    assert pipeline.poll(store, settings, NOW).applied == 1
    oauth_smtp.wait_for(1)
    used_first = tokens.tokens()

    time.sleep(2.2)
    assert all(tokens.user_for(t) is None for t in used_first)  # expired now
    oauth_dovecot.append(signup("Bert Claes", "bert.claes@leuven.be", "Stad Leuven",
                                date=ARRIVED), ARRIVED + dt.timedelta(minutes=5))
    report = pipeline.poll(store, settings, NOW)

    assert report.mailbox_error is None and report.applied == 1
    assert [m.rcpt_tos for m in oauth_smtp.wait_for(2)] == [("ann.peeters@gent.be",),
                                                            ("bert.claes@leuven.be",)]
    fresh = [t for t in tokens.tokens() if t not in used_first]
    assert fresh
    # Every token the program presented was accepted: it never tried an expired one.
    assert all(active for _, active in tokens.introspections)
    assert all(ok for _, _, ok in oauth_smtp.xoauth2_attempts)
    assert {t for _, t, _ in oauth_smtp.xoauth2_attempts} & set(fresh)
    assert {t for t, _ in tokens.introspections} & set(fresh)
    assert not leaks(caplog, secret_forms(*tokens.tokens(), SECRET))
    # And the servers do refuse an expired token (last: Dovecot slows down after a failure).
    client = imapclient.IMAPClient(oauth_dovecot.host, port=oauth_dovecot.port, ssl=False,
                                   timeout=10)
    try:
        with pytest.raises(imapclient.exceptions.LoginError, match="AUTHENTICATIONFAILED"):
            client.oauth2_login("registrations", used_first[0])
    finally:
        client.shutdown()


def test_a_wrong_secret_stops_the_poll_with_a_clear_error_and_no_secret(
        oauth_dovecot, oauth_smtp, tokens, tls_cert, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng~" + SECRET[::-1]
    settings = oauth_settings(oauth_dovecot, oauth_smtp, tokens, tls_cert, monkeypatch,
                              secret=wrong)
    store = db.Store(db.connect(tmp_path / "state.sqlite"))

    report = pipeline.poll(store, settings, NOW)

    assert "invalid_client" in report.mailbox_error
    assert TENANT in report.mailbox_error and CLIENT in report.mailbox_error
    assert tokens.tokens() == [] and tokens.introspections == []
    out = capsys.readouterr()
    assert not leaks(caplog, {wrong}) and wrong not in out.out + out.err
    assert wrong not in report.mailbox_error


def write_oauth_config(tmp_path, dovecot, smtp, tokens, tls_cert):
    """The shipped config with the test servers and an [oauth2] table, as a file for the CLI."""
    text = (PROJECT / "config" / "leernetwerk.toml").read_text(encoding="utf-8")
    s = oauth_sections(dovecot, smtp, tokens, tls_cert)
    text = text.replace('\nauth = "password"\n', "\n")
    replacements = {
        'host = "outlook.office365.com"\nport = 993\nsecurity = "tls"\n'
        'username = "duurzameontwikkeling@vlaanderen.be"\n'
        'password_env = "LEERNETWERK_IMAP_PASSWORD"\n':
            f'host = "{dovecot.host}"\nport = {dovecot.port}\nsecurity = "none"\n'
            f'username = "{dovecot.username}"\nauth = "oauth2"\n',
        'host = "smtp.office365.com"\nport = 587\nsecurity = "starttls"\n'
        'username = "duurzameontwikkeling@vlaanderen.be"\n'
        'password_env = "LEERNETWERK_SMTP_PASSWORD"\n':
            f'host = "localhost"\nport = {smtp.port}\nsecurity = "starttls"\n'
            f'username = "{dovecot.username}"\nauth = "oauth2"\n'
            f'ca_file = "{tls_cert.certfile}"\n',
    }
    for old, new in replacements.items():
        assert old in text, "the shipped config changed: update this test's replacements"
        text = text.replace(old, new)
    text += "\n[oauth2]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in s["oauth2"].items())
    folder = tmp_path / "config"
    folder.mkdir()
    for other in (PROJECT / "config").glob("*.toml"):
        (folder / other.name).write_text(other.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "leernetwerk.toml").write_text(text, encoding="utf-8")
    return folder / "leernetwerk.toml"


@pytest.mark.parametrize("secret, answered", [(SECRET, True), ("Wr0ng~" + SECRET[::-1], False)],
                         ids=["right secret", "wrong secret"])
def test_the_poll_command_with_oauth2(oauth_dovecot, oauth_smtp, tokens, tls_cert, tmp_path,
                                      secret, answered):
    cfg = write_oauth_config(tmp_path, oauth_dovecot, oauth_smtp, tokens, tls_cert)
    oauth_dovecot.append(signup("Ann Peeters", "ann.peeters@gent.be", "Stad Gent",
                                date=ARRIVED), ARRIVED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEERNETWERK_")}
    env[SECRET_ENV] = secret
    result = subprocess.run(
        [sys.executable, "-m", "processor", "poll", "--config", str(cfg),
         "--db", str(tmp_path / "state.sqlite"), "--now", "2018-05-20T12:00:00+02:00"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert secret not in output
    for token in tokens.tokens():
        assert token not in output
    if answered:
        assert result.returncode == 0, output
        assert len(oauth_smtp.wait_for(1)) == 1
    else:
        assert result.returncode == 1, output
        assert f"tenant {TENANT}, client {CLIENT}" in output and "invalid_client" in output
        assert oauth_smtp.messages == []
