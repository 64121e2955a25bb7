"""Test helpers: settings pointing at the test servers, and signup mails written for the tests."""

from __future__ import annotations

import copy
import datetime as dt
import signal
import subprocess
import sys
import tomllib
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

from processor import config

PROJECT = Path(__file__).resolve().parent.parent
BRUSSELS = dt.timezone(dt.timedelta(hours=2))
PASSWORD_ENV = "LEERNETWERK_TEST_IMAP_PASSWORD"
# The receiving server the tests' desks trust (issue 16): a cancellation applies at once only
# with its verdict; test mails carry one, a test about forged mail leaves it out.
TEST_AUTHSERV = "mx.test.vlaanderen.be"


def auth_results(email: str, result: str = "pass") -> str:
    """The Authentication-Results header our (test) receiving server writes for a sender."""
    domain = email.rpartition("@")[2]
    return (f"{TEST_AUTHSERV}; spf={result} smtp.mailfrom={domain}; dkim={result} "
            f"header.d={domain}; dmarc={result} header.from={domain}")


def base_config() -> dict:
    return tomllib.loads((PROJECT / "config" / "leernetwerk.toml").read_text(encoding="utf-8"))


def desk_settings(dovecot=None, smtp_server=None, monkeypatch=None, **sections) -> config.Settings:
    raw = copy.deepcopy(base_config())
    if dovecot is not None:
        raw["mailbox"].update(host=dovecot.host, port=dovecot.port, security="none",
                              username=dovecot.username, password_env=PASSWORD_ENV, batch_size=7)
        monkeypatch.setenv(PASSWORD_ENV, dovecot.password)
    raw["mailbox"]["trusted_authserv_ids"] = [TEST_AUTHSERV]
    if smtp_server is not None:
        raw["smtp"].update(host=smtp_server.host, port=smtp_server.port, security="none", username="",
                           password_env="")
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")


def signup(name: str, email: str, organisation: str, *, date: dt.datetime,
           body: str | None = None, subject: str = "Inschrijving Leernetwerk SDG",
           auth: str | None = "pass") -> bytes:
    msg = EmailMessage(policy=SMTP)
    user, _, domain = email.partition("@")
    if auth:
        msg["Authentication-Results"] = auth_results(email, auth)
    msg["From"] = Address(name, user, domain)
    msg["To"] = "duurzameontwikkeling@vlaanderen.be"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = make_msgid(domain=domain)
    msg.set_content(body or (
        "Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk Sustainable Development Goals.\n\n"
        f"Naam: {name}\nOrganisatie: {organisation}\nE-mail: {email}\n\n"
        f"Met vriendelijke groeten,\n{name}\n"
    ))
    return bytes(msg)


class WorkerProcess:
    """`leernetwerk run` in a child process, its output going to a file. Never a pipe read only
    at the end: once some 64 KiB of log wait in it, the worker blocks mid-poll (it did, in
    benchmarks/latency.py, issue 8)."""

    def __init__(self, args: list[str], *, env: dict, log: Path):
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "processor", "run", *args],
                                         cwd=PROJECT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> str:
        """Signal it, wait for it (killing it if it hangs), and return everything it logged."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.output()
