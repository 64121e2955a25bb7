"""Load and validate the TOML config once into frozen settings; secrets come from the environment."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from processor import resources

SECURITY_MODES = ("tls", "starttls", "none")
AUTH_MODES = ("password", "oauth2")
# Exchange Online takes the same client-credentials scope for IMAP and SMTP; kept per protocol
# so that another provider with separate resources needs only a new default here.
DEFAULT_OAUTH2_SCOPES = {
    "mailbox": ("https://outlook.office365.com/.default",),
    "smtp": ("https://outlook.office365.com/.default",),
}


class ConfigError(Exception):
    """A config problem, always naming the file and the key."""


@dataclass(frozen=True)
class Session:
    number: int
    theme: str
    date: dt.date
    start: dt.time
    end: dt.time
    timezone: ZoneInfo
    # Per-session overrides (empty: the event's place / link); `prepare` is shown in reminders.
    place: str = ""
    online_link: str = ""
    prepare: str = ""
    cancelled: bool = False

    @property
    def starts_at(self) -> dt.datetime:
        # zoneinfo resolves the offset for that very day, so DST needs no special case.
        return dt.datetime.combine(self.date, self.start, tzinfo=self.timezone)

    @property
    def ends_at(self) -> dt.datetime:
        return dt.datetime.combine(self.date, self.end, tzinfo=self.timezone)


@dataclass(frozen=True)
class Event:
    name: str
    organiser: str
    organisation: str
    timezone: ZoneInfo
    capacity: int
    place: str
    online_link: str
    contact_email: str
    trainers: str
    sessions: tuple[Session, ...]


@dataclass(frozen=True)
class OAuth2:
    """An app registration (client-credentials flow); the secret is read from the environment only
    when a token is needed, and never kept in the settings."""

    tenant_id: str
    client_id: str
    client_secret_env: str
    authority: str
    scopes: tuple[str, ...]
    source: Path
    ca_file: str = ""  # a CA bundle trusted instead of the system's (an inspecting proxy, tests)
    timeout_seconds: float = 30.0

    def client_secret(self) -> str:
        value = os.environ.get(self.client_secret_env)
        if not value:
            raise ConfigError(
                f"{self.source}: [oauth2] client_secret_env: the environment variable "
                f"{self.client_secret_env} is not set"
            )
        return value


@dataclass(frozen=True)
class Server:
    """An IMAP or SMTP server; the password is read from the environment only when needed."""

    section: str
    host: str
    port: int
    security: str
    username: str
    password_env: str
    timeout_seconds: float
    source: Path
    ca_file: str = ""  # extra trusted CA (an internal one); the system's store is always used
    auth: str = "password"
    oauth2: OAuth2 | None = None  # set when auth == "oauth2"

    def tls_context(self) -> ssl.SSLContext:
        # Certificate and host name checks stay on; only loopback may go without TLS. The extra
        # CA is added to the system's store, so public certificates keep working beside it.
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context

    def password(self) -> str:
        if not self.password_env:
            return ""
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(
                f"{self.source}: [{self.section}] password_env: the environment variable "
                f"{self.password_env} is not set"
            )
        return value


@dataclass(frozen=True)
class Mailbox(Server):
    address: str = ""
    folder: str = "INBOX"
    processed_keyword: str = "$Processed"
    move_to: str = ""
    batch_size: int = 50
    max_message_bytes: int = 10_000_000
    trusted_authserv_ids: frozenset[str] = frozenset()
    # The organisation's own receiving mail servers (a host, or a domain for all its hosts):
    # the topmost Received header one of them wrote gives the time it accepted the mail, which
    # then orders arrivals instead of INTERNALDATE (issue 18). Empty: INTERNALDATE only.
    trusted_received_hosts: frozenset[str] = frozenset()
    # IMAP IDLE wakes the poll as soon as mail arrives; polling stays the fall-back.
    idle: bool = False
    # RFC 2177: servers may drop an IDLE after 30 minutes; renewing sooner also finds a silently
    # dead connection.
    idle_renew_seconds: int = 600


@dataclass(frozen=True)
class Smtp(Server):
    from_address: str = ""
    from_name: str = ""
    message_id_domain: str = ""
    # Exchange Online accepts 30 messages a minute per mailbox; 0: no pacing (a local relay).
    max_per_minute: int = 30
    # The window the relay counts max_per_minute in: a minute for every relay we know. Not in
    # the shipped config; tests and benchmarks shorten it to run minutes in seconds.
    rate_window_seconds: float = 60.0


@dataclass(frozen=True)
class Reminders:
    """How long before each session a reminder goes out, at what local time of day."""

    lead_days: tuple[int, ...] = (7, 1)
    send_time: dt.time = dt.time(10, 0)


@dataclass(frozen=True)
class Digest:
    """When the organisers' daily digest goes out (local time), and whether a quiet day skips it."""

    send_time: dt.time = dt.time(8, 0)
    skip_when_quiet: bool = False


@dataclass(frozen=True)
class OrganiserMail:
    """Organisers settle the digest's items and send commands by mail (issue 19). Each decision
    carries a token: an HMAC keyed with a secret from the environment variable named here."""

    enabled: bool = True
    token_secret_env: str = "LEERNETWERK_TOKEN_SECRET"
    link_days: int = 7        # how long a link in a digest stays valid
    confirm_days: int = 3     # how long a confirmation link (command, cancellation) stays valid

    def secret(self) -> bytes | None:
        """The key, or None when it is not set (then no links are offered and no decision by
        mail is accepted). Never logged."""
        value = os.environ.get(self.token_secret_env, "") if self.token_secret_env else ""
        return value.encode("utf-8") if len(value) >= 16 else None


SUBSTITUTE_POLICIES = ("same_organisation", "anyone", "never")


@dataclass(frozen=True)
class CharterSignatory:
    name: str
    domains: tuple[str, ...]


@dataclass(frozen=True)
class Registration:
    """When signups and promotions stop, and the rules for seats."""

    closes: dt.datetime
    promotion_closes: dt.datetime
    substitutes: str = "same_organisation"
    max_per_organisation: int = 0  # 0: no cap
    charter: tuple[CharterSignatory, ...] = ()


@dataclass(frozen=True)
class Settings:
    source: Path
    event: Event
    mailbox: Mailbox
    smtp: Smtp
    organisers: tuple[str, ...]
    poll_interval_seconds: int
    max_retry_delay_seconds: int
    organisations_file: Path
    max_participants_per_mail: int
    registration: Registration
    retention_days: int = 365
    max_replies_per_day: int = 5
    reminders: Reminders = field(default_factory=Reminders)
    digest: Digest = field(default_factory=Digest)
    organiser_mail: OrganiserMail = field(default_factory=OrganiserMail)
    templates_dir: Path = field(default_factory=resources.templates_dir)

    @property
    def retention_ends(self) -> dt.datetime:
        """Personal data is kept this long after the last session ends."""
        return self.event.sessions[-1].ends_at + dt.timedelta(days=self.retention_days)

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(
            a.lower() for a in (self.mailbox.address, self.smtp.from_address, *self.organisers) if a
        )


class _Section:
    """Typed access to one TOML table that names the file and key in every error."""

    def __init__(self, source: Path, name: str, data: Any):
        self.source, self.name = source, name
        if not isinstance(data, dict):
            self.fail("", "must be a table")
        self.data = data

    def fail(self, key: str, problem: str):
        where = f"[{self.name}] {key}".rstrip()
        raise ConfigError(f"{self.source}: {where}: {problem}")

    def get(self, key: str, kind: type, default: Any = ..., *, choices=None):
        if key not in self.data:
            if default is ...:
                self.fail(key, "is missing")
            return default
        value = self.data[key]
        # TOML ints are acceptable where a float is asked for; bools are never ints here.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            self.fail(key, f"must be a {names}, not {value!r}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def positive(self, key: str, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            self.fail(key, f"must be a positive number, not {value}")
        return value

    def time(self, key: str) -> dt.time:
        value = self.get(key, str)
        try:
            return dt.time.fromisoformat(value)
        except ValueError:
            self.fail(key, f"must be a time like \"14:00\", not {value!r}")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ca_file(sec: _Section) -> str:
    value = sec.get("ca_file", str, "")
    if value and not Path(value).is_file():
        sec.fail("ca_file", f"no such file: {value}")
    return value


def _server_fields(sec: _Section, raw: dict | None = None) -> dict:
    host = sec.get("host", str)
    security = sec.get("security", str, choices=SECURITY_MODES)
    if security == "none" and not is_loopback(host):
        sec.fail("security", f'"none" (plain text) is only allowed for a loopback host, not {host!r}')
    port = sec.positive("port")
    return dict(
        section=sec.name,
        host=host,
        port=port,
        security=security,
        username=sec.get("username", str, ""),
        password_env=sec.get("password_env", str, ""),
        timeout_seconds=sec.get("timeout_seconds", float, 30.0),
        source=sec.source,
        ca_file=_ca_file(sec),
        **_auth_fields(sec, raw or {}),
    )


def _auth_fields(sec: _Section, raw: dict) -> dict:
    auth = sec.get("auth", str, "password", choices=AUTH_MODES)
    if auth == "password":
        return dict(auth=auth)
    if not sec.get("username", str, ""):
        sec.fail("username", 'is needed with auth = "oauth2": the mailbox the app signs in to')
    if "oauth2" not in raw:
        raise ConfigError(f'{sec.source}: [oauth2]: is missing; [{sec.name}] auth = "oauth2" needs it')
    return dict(auth=auth, oauth2=_oauth2(_Section(sec.source, "oauth2", raw["oauth2"]), sec.name))


def _oauth2(sec: _Section, protocol: str) -> OAuth2:
    tenant = sec.get("tenant_id", str).strip()
    client = sec.get("client_id", str).strip()
    for key, value in (("tenant_id", tenant), ("client_id", client)):
        if not value or any(c in value for c in "/?# "):
            sec.fail(key, f"must be an id (a GUID, or the tenant's domain for tenant_id), not {value!r}")
    secret_env = sec.get("client_secret_env", str)
    if not secret_env.replace("_", "").isalnum():
        # A pasted secret here would end up in the file and in every error message.
        sec.fail("client_secret_env", "must be the NAME of an environment variable (letters, "
                 "digits, _), never the secret itself")
    authority = sec.get("authority", str, f"https://login.microsoftonline.com/{tenant}").rstrip("/")
    if not authority.startswith("https://") or authority.count("/") < 3:
        sec.fail("authority", f"must be an https URL with the tenant in its path, like "
                 f"https://login.microsoftonline.com/{tenant}, not {authority!r}")
    scopes = tuple(_strings(sec, "scopes")) or DEFAULT_OAUTH2_SCOPES[protocol]
    return OAuth2(
        tenant_id=tenant,
        client_id=client,
        client_secret_env=secret_env,
        authority=authority,
        scopes=scopes,
        source=sec.source,
        ca_file=_ca_file(sec),
        timeout_seconds=sec.get("timeout_seconds", float, 30.0),
    )


def _event(source: Path, raw: dict) -> Event:
    sec = _Section(source, "event", raw.get("event", {}))
    tz_name = sec.get("timezone", str, "Europe/Brussels")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        sec.fail("timezone", f"unknown timezone {tz_name!r}")
    sessions_raw = raw.get("sessions")
    if not isinstance(sessions_raw, list) or not sessions_raw:
        raise ConfigError(f"{source}: [[sessions]]: at least one session is needed")
    sessions = []
    for i, item in enumerate(sessions_raw, start=1):
        s = _Section(source, f"sessions #{i}", item)
        date = s.get("date", dt.date)
        start, end = s.time("start"), s.time("end")
        if end <= start:
            s.fail("end", "must be after start")
        sessions.append(Session(s.positive("number"), s.get("theme", str), date, start, end, tz,
                                place=s.get("place", str, ""),
                                online_link=s.get("online_link", str, ""),
                                prepare=s.get("prepare", str, ""),
                                cancelled=s.get("cancelled", bool, False)))
    numbers = [x.number for x in sessions]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"{source}: [[sessions]] number: session numbers must be unique")
    return Event(
        name=sec.get("name", str),
        organiser=sec.get("organiser", str),
        organisation=sec.get("organisation", str, ""),
        timezone=tz,
        capacity=sec.positive("capacity"),
        place=sec.get("place", str),
        online_link=sec.get("online_link", str, ""),
        contact_email=sec.get("contact_email", str),
        trainers=sec.get("trainers", str, ""),
        sessions=tuple(sorted(sessions, key=lambda x: x.starts_at)),
    )


def _moment(sec: _Section, key: str, default: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    value = sec.get(key, (str, dt.datetime), "")
    if value == "":
        return default
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            sec.fail(key, f"must be a moment like 2018-06-26T14:00:00, not {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=tz)


def _charter(source: Path, file_name: str) -> tuple[CharterSignatory, ...]:
    if not file_name:
        return ()
    path = source.parent / file_name
    raw = _read_toml(path, f"{source}: [registration] charter_file: no such file: {path}")
    items = raw.get("signatory", [])
    if not isinstance(items, list):
        raise ConfigError(f"{path}: [[signatory]]: must be a list of tables")
    signatories = []
    for i, item in enumerate(items, start=1):
        sec = _Section(path, f"signatory #{i}", item)
        domains = sec.get("domains", list, [])
        if not all(isinstance(d, str) and d for d in domains):
            sec.fail("domains", "must be a list of mail domains like \"gent.be\"")
        signatories.append(CharterSignatory(sec.get("name", str),
                                            tuple(d.lower().lstrip("@") for d in domains)))
    return tuple(signatories)


def _registration(source: Path, raw: dict, event: Event) -> Registration:
    sec = _Section(source, "registration", raw.get("registration", {}))
    sessions = event.sessions
    # Sessions build on each other: by default a newcomer may still join until the second one.
    default_close = sessions[1].starts_at if len(sessions) > 1 else sessions[0].starts_at
    closes = _moment(sec, "closes", default_close, event.timezone)
    return Registration(
        closes=closes,
        promotion_closes=_moment(sec, "promotion_closes", closes, event.timezone),
        substitutes=sec.get("substitutes", str, "same_organisation", choices=SUBSTITUTE_POLICIES),
        max_per_organisation=_non_negative(sec, "max_per_organisation"),
        charter=_charter(source, sec.get("charter_file", str, "")),
    )


def _idle_renew(sec: _Section) -> int:
    value = sec.positive("idle_renew_seconds", 600)
    if value > 29 * 60:
        sec.fail("idle_renew_seconds", f"must be at most 1740 (29 minutes, RFC 2177), not {value}")
    return value


def _strings(sec: _Section, key: str) -> list[str]:
    value = sec.get(key, list, [])
    if not all(isinstance(v, str) and v for v in value):
        sec.fail(key, "must be a list of non-empty strings")
    return value


def _non_negative(sec: _Section, key: str, default: int = 0) -> int:
    value = sec.get(key, int, default)
    if value < 0:
        sec.fail(key, f"must be 0 (no limit) or more, not {value}")
    return value


def _rate_window(sec: _Section) -> float:
    value = sec.get("rate_window_seconds", float, 60.0)
    if value <= 0:
        sec.fail("rate_window_seconds", f"must be a positive number of seconds, not {value}")
    return value


def _read_toml(path: Path, missing: str) -> dict:
    """A TOML file, or a ConfigError that names it (`missing` says which key pointed at it)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(missing) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load(path: str | os.PathLike | None = None) -> Settings:
    source = Path(path) if path else resources.default_config()
    raw = _read_toml(source, f"{source}: the config file does not exist")
    return from_dict(raw, source)


def from_dict(raw: dict, source: Path) -> Settings:
    event = _event(source, raw)

    mb = _Section(source, "mailbox", raw.get("mailbox", {}))
    mailbox = Mailbox(
        **_server_fields(mb, raw),
        address=mb.get("address", str).lower(),
        folder=mb.get("folder", str, "INBOX"),
        processed_keyword=mb.get("processed_keyword", str, "$Processed"),
        move_to=mb.get("move_to", str, ""),
        batch_size=mb.positive("batch_size", 50),
        max_message_bytes=mb.positive("max_message_bytes", 10_000_000),
        trusted_authserv_ids=frozenset(a.lower() for a in _strings(mb, "trusted_authserv_ids")),
        trusted_received_hosts=frozenset(h.lower().strip(".")
                                         for h in _strings(mb, "trusted_received_hosts")),
        idle=mb.get("idle", bool, False),
        idle_renew_seconds=_idle_renew(mb),
    )
    sm = _Section(source, "smtp", raw.get("smtp", {}))
    from_address = sm.get("from_address", str).lower()
    smtp = Smtp(
        **_server_fields(sm, raw),
        from_address=from_address,
        from_name=sm.get("from_name", str, ""),
        message_id_domain=sm.get("message_id_domain", str, from_address.rpartition("@")[2]),
        max_per_minute=_non_negative(sm, "max_per_minute", 30),
        rate_window_seconds=_rate_window(sm),
    )
    org = _Section(source, "organisers", raw.get("organisers", {}))
    organisers = org.get("addresses", list)
    if not organisers or not all(isinstance(a, str) and "@" in a for a in organisers):
        org.fail("addresses", "must be a non-empty list of mail addresses")
    wk = _Section(source, "worker", raw.get("worker", {}))
    und = _Section(source, "understanding", raw.get("understanding", {}))
    organisations_file = source.parent / und.get("organisations_file", str, "organisations.toml")
    return Settings(
        source=source,
        event=event,
        mailbox=mailbox,
        smtp=smtp,
        organisers=tuple(a.lower() for a in organisers),
        poll_interval_seconds=wk.positive("poll_interval_seconds", 60),
        max_retry_delay_seconds=wk.positive("max_retry_delay_seconds", 3600),
        organisations_file=organisations_file,
        max_participants_per_mail=und.positive("max_participants_per_mail", 10),
        registration=_registration(source, raw, event),
        max_replies_per_day=wk.positive("max_replies_per_address_per_day", 5),

        retention_days=_Section(source, "privacy", raw.get("privacy", {})).positive(
            "retention_days", 365),
        reminders=_reminders(source, raw),
        digest=_digest(source, raw),
        organiser_mail=OrganiserMail(
            enabled=org.get("by_mail", bool, True),
            token_secret_env=org.get("token_secret_env", str, "LEERNETWERK_TOKEN_SECRET"),
            link_days=org.positive("link_days", 7),
            confirm_days=org.positive("confirm_days", 3),
        ),
    )


def _digest(source: Path, raw: dict) -> Digest:
    sec = _Section(source, "digest", raw.get("digest", {}))
    send_time = sec.time("send_time") if "send_time" in sec.data else Digest.send_time
    return Digest(send_time=send_time, skip_when_quiet=sec.get("skip_when_quiet", bool, False))


def _reminders(source: Path, raw: dict) -> Reminders:
    sec = _Section(source, "reminders", raw.get("reminders", {}))
    leads = sec.get("lead_days", list, [7, 1])
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in leads) \
            or len(set(leads)) != len(leads):
        sec.fail("lead_days", f"must be a list of different positive numbers of days, not {leads!r}")
    send_time = sec.time("send_time") if "send_time" in sec.data else dt.time(10, 0)
    # Longest lead first: the order reminders go out in.
    return Reminders(lead_days=tuple(sorted(leads, reverse=True)), send_time=send_time)
