"""`leernetwerk check-config`: the file, the secrets, both servers (nothing sent) and every template, one line per problem."""

from __future__ import annotations

import dataclasses
import os
import smtplib
import socket
import ssl
from dataclasses import dataclass
from typing import Callable

from processor import config as config_module
from processor.demo import samples
from processor.config import Server, Settings


@dataclass(frozen=True)
class Problem:
    key: str       # where to fix it: "[mailbox] folder", "templates/waitlist.txt line 7"
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"PROBLEM {self.key}: {self.problem}\n        fix: {self.fix}"

    def as_data(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Report:
    ok: list[str] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    # Works, but not as meant (the exit code stays 0).
    warnings: list[Problem] = dataclasses.field(default_factory=list)

    def problem(self, key: str, problem: str, fix: str) -> None:
        self.problems.append(Problem(key, problem, fix))

    def warning(self, key: str, problem: str, fix: str) -> None:
        self.warnings.append(Problem(key, problem, fix))


Ask = Callable[[str], bool]


def _uses_password(server: Server) -> bool:
    return getattr(server, "auth", "password") == "password"


def _secrets(settings: Settings, report: Report) -> None:
    for server in (settings.mailbox, settings.smtp):
        if _uses_password(server) and server.password_env \
                and server.password_env not in os.environ:
            report.problem(f"[{server.section}] password_env",
                           f"the environment variable {server.password_env} is not set",
                           f"set {server.password_env}=… in the environment (the service reads "
                           "/etc/leernetwerk/secrets.env)")


def _organisers(settings: Settings, report: Report) -> None:
    """Issue 19: decisions by mail need the token key, and organisers who are not the desk."""
    om = settings.organiser_mail
    if not om.enabled:
        report.ok.append("organisers: decisions by mail are off ([organisers] by_mail = false)")
        return
    value = os.environ.get(om.token_secret_env, "")
    if len(value) < 16:
        report.problem("[organisers] token_secret_env",
                       f"the environment variable {om.token_secret_env} is "
                       + ("not set" if not value else "shorter than 16 characters")
                       + ": the digest has no links and no decision by mail is accepted",
                       f"set {om.token_secret_env} to a random key (`openssl rand -base64 32`) "
                       "in /etc/leernetwerk/secrets.env, or set by_mail = false")
    own = {settings.mailbox.address, settings.smtp.from_address}
    mine = sorted(a for a in settings.organisers if a in own)
    if mine:
        others = [a for a in settings.organisers if a not in own]
        report.warning("[organisers] addresses",
                       f"{', '.join(mine)} is the desk's own address: the digest lands in the "
                       "mailbox the desk reads, and mail from it is never taken as a decision"
                       + ("" if others else "; no organiser can decide by mail"),
                       "list the team members' personal addresses instead")
    elif om.enabled:
        report.ok.append(f"organisers: {len(settings.organisers)} address(es) may decide by mail")


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _connection_problem(server: Server, cause: BaseException, report: Report) -> None:
    """Sort a failed connection into the key a person has to change."""
    if isinstance(cause, config_module.ConfigError):
        return  # a secret missing from the environment: _secrets reported it once
    where = f"{server.host}:{server.port}"
    name = type(cause).__name__
    text = str(cause) or name
    login_failed = (isinstance(cause, smtplib.SMTPAuthenticationError)
                    or name == "LoginError" or "authenticat" in text.lower()
                    or "login" in text.lower() and "fail" in text.lower())
    if login_failed:
        secret = (f"the password in {server.password_env}" if _uses_password(server)
                  else "the [oauth2] tenant, client id and secret")
        report.problem(f"[{server.section}] username", f"{where} refused the login of "
                       f"{server.username!r}: {text}",
                       f"check the username and {secret}")
    elif isinstance(cause, smtplib.SMTPNotSupportedError) or "STARTTLS" in text.upper():
        report.problem(f"[{server.section}] security",
                       f"{where} does not offer STARTTLS: {text}",
                       'use security = "tls" with the server\'s TLS port (993 for IMAP, 465 '
                       'for SMTP), or the port where it offers STARTTLS')
    elif isinstance(cause, ssl.SSLCertVerificationError):
        report.problem(f"[{server.section}] ca_file", f"{where}: certificate not trusted: {text}",
                       "check the host name, or give the internal CA in ca_file")
    elif isinstance(cause, ssl.SSLError):
        report.problem(f"[{server.section}] security", f"{where}: TLS failed: {text}",
                       'check security ("tls" for implicit TLS, "starttls") against the port')
    elif isinstance(cause, socket.gaierror):
        report.problem(f"[{server.section}] host", f"{server.host!r} cannot be resolved: {text}",
                       "check the host name (and this machine's DNS)")
    elif isinstance(cause, (OSError, smtplib.SMTPServerDisconnected)):
        report.problem(f"[{server.section}] port", f"cannot connect to {where}: {text}",
                       "check host and port, and that a firewall lets this machine reach it")
    else:
        report.problem(f"[{server.section}] host", f"{where}: {name}: {text}",
                       "check the server settings of this section")


def _imap(settings: Settings, report: Report, create: bool | None, ask: Ask | None) -> None:
    from processor.mail.imap import Mailbox, MailboxError

    s = settings.mailbox
    # INBOX always exists: logging in must not fail on a folder that is merely missing.
    try:
        with Mailbox(dataclasses.replace(s, folder="INBOX")) as mailbox:
            report.ok.append(f"IMAP: logged in to {s.host}:{s.port} as {s.username}")
            for key, folder in (("folder", s.folder), ("move_to", s.move_to)):
                if not folder or mailbox.folder_exists(folder):
                    continue
                wanted = create if create is not None else (
                    ask(f"The folder {folder!r} ([mailbox] {key}) does not exist. Create it?")
                    if ask else False)
                if wanted:
                    mailbox.create_folder(folder)
                    report.ok.append(f"IMAP: created the folder {folder!r}")
                else:
                    report.problem(f"[mailbox] {key}", f"the folder {folder!r} does not exist",
                                   "create it in the mailbox, or run `leernetwerk check-config "
                                   "--create-folders`, or correct the name")
            if s.folder and mailbox.folder_exists(s.folder):
                info = mailbox.client.select_folder(s.folder, readonly=True)
                report.ok.append(f"IMAP: {s.folder!r} holds {int(info.get(b'EXISTS', 0))} mail(s)")
    except MailboxError as exc:
        _connection_problem(s, _root_cause(exc), report)
    except config_module.ConfigError:
        pass  # a missing secret is reported once, by _secrets


def _smtp(settings: Settings, report: Report) -> None:
    from processor.mail import smtp

    s = settings.smtp
    try:
        # Connect, TLS, AUTH, QUIT: exactly what a send does before its first MAIL FROM.
        with smtp.Connection(s):
            pass
    except smtp.SmtpUnavailable as exc:
        _connection_problem(s, _root_cause(exc), report)
        return
    except config_module.ConfigError:
        return
    who = f" as {s.username}" if s.username else ""
    report.ok.append(f"SMTP: connected to {s.host}:{s.port}{who}; nothing sent")


def _templates(settings: Settings, report: Report) -> None:
    problems = samples.check_templates(settings)
    for p in problems:
        key = p.template + (f" line {p.line}" if p.line else "")
        report.problem(key, p.message,
                       f"correct the template; `leernetwerk preview {p.kind}` shows the mail")
    if not problems:
        report.ok.append(f"templates: all {len(samples.KINDS)} kinds render with sample data")


def run(path, *, network: bool = True, create_folders: bool | None = None,
        ask: Ask | None = None, settings: Settings | None = None) -> Report:
    """Every check; one Problem per thing to fix. `settings` skips loading (tests)."""
    report = Report()
    if settings is None:
        try:
            settings = config_module.load(path)
        except config_module.ConfigError as exc:
            text = str(exc)
            file, _, rest = text.partition(": ")
            key, _, problem = rest.partition(": ")
            if not key.startswith("["):  # the file as a whole: missing, not TOML
                key, problem = file, rest
            report.problem(key, problem or text, f"correct it in {file}")
            return report
    report.ok.append(f"config: {settings.source} is valid")
    _secrets(settings, report)
    _organisers(settings, report)
    if not settings.organisations_file.exists():
        report.problem("[understanding] organisations_file",
                       f"{settings.organisations_file} does not exist (organisations will not be "
                       "recognised by mail domain)", "create the file or correct the name")
    if network:
        _imap(settings, report, create_folders, ask)
        _smtp(settings, report)
    _templates(settings, report)
    return report
