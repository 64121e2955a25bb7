"""The only module that talks SMTP: one connection per flush, each answer sorted into sent/retry/failed."""

from __future__ import annotations

import re
import smtplib
import socket
from dataclasses import dataclass

from processor.mail import oauth
from processor.config import Smtp as SmtpSettings


@dataclass(frozen=True)
class Result:
    status: str          # "sent" | "temporary" | "permanent" | "throttled"
    detail: str = ""


# A relay that says "too many" speaks of the sender, not of this mail: the mail keeps its place
# and the sender slows down. 421 closes the session; 4.7.x is a policy (rate) refusal; Exchange
# and Gmail word their limits with these phrases. Kept narrow: a generic 451 4.3.0 stays an
# ordinary retry of that one mail.
_THROTTLE_TEXT = re.compile(r"too many|rate limit|throttl|slow down|submission quota",
                            re.IGNORECASE)
_THROTTLE_STATUS = re.compile(r"^4\.7\.\d{1,3}\b")


def is_throttle(code: int, text: str) -> bool:
    if not 400 <= code < 500:
        return False
    return code == 421 or bool(_THROTTLE_STATUS.match(text.strip())
                               or _THROTTLE_TEXT.search(text))


class SmtpUnavailable(Exception):
    """The server could not be reached, or the session failed before any mail: retry later."""


class Connection:
    """An SMTP session: TLS, STARTTLS (never a silent fall-back to plain text) or loopback plain."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self) -> "Connection":
        s = self.settings
        context = s.tls_context()
        try:
            if s.security == "tls":
                self.smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_seconds,
                                             context=context)
            else:
                self.smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
            self.smtp.ehlo()
            if s.security == "starttls":
                # Raises SMTPNotSupportedError when the server does not offer STARTTLS.
                self.smtp.starttls(context=context)
                self.smtp.ehlo()
            if s.auth == "oauth2":
                self._xoauth2(s)
            elif s.username:
                self.smtp.login(s.username, s.password())
        except (smtplib.SMTPException, OSError, oauth.TokenError) as exc:
            self.close()
            raise SmtpUnavailable(f"SMTP {s.host}:{s.port}: {_describe(exc)}") from exc
        return self

    def __exit__(self, *exc):
        self.close()

    def _xoauth2(self, s: SmtpSettings) -> None:
        initial = oauth.xoauth2(s.username, oauth.token(s.oauth2))
        # After a refusal the server sends a 334 with an error report; RFC 7628 has the client
        # answer it with an empty line (not the token again) to get the final 535.
        self.smtp.auth("XOAUTH2", lambda challenge=None: initial if challenge is None else "")

    def close(self):
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self.smtp = None

    def send(self, raw: bytes, sender: str, recipients: list[str]) -> Result:
        """A result per mail; a broken connection raises SmtpUnavailable for the caller to stop.

        An address smtplib cannot put in an envelope (non-ASCII, with a relay that does not
        offer SMTPUTF8) is that one recipient's permanent refusal, never an exception: one
        mistyped accent must not stop every mail queued behind it (issue 16, finding 1).
        """
        options: list[str] = []
        unsendable: dict[str, str] = {}
        if not all(a.isascii() for a in (sender, *recipients)):
            if self.smtp.has_extn("smtputf8"):
                options.append("SMTPUTF8")
            else:
                unsendable = {r: "not an ASCII address, and the relay does not offer SMTPUTF8"
                              for r in recipients if not r.isascii()}
                if not sender.isascii():
                    return Result("permanent", f"{sender}: the sender address is not ASCII, "
                                               "and the relay does not offer SMTPUTF8")
        sendable = [r for r in recipients if r not in unsendable]
        if not sendable or recipients[0] in unsendable:
            # The mail is for its first recipient; the others are copies. Without it, it is
            # a failure the digest shows, not a copy sent to the registrant alone.
            return Result("permanent", _refusals(unsendable))
        try:
            refused = self.smtp.sendmail(sender, sendable, raw, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            answers = [(code, _text(m)) for code, m in exc.recipients.values()]
            detail = "; ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in exc.recipients.items())
            if answers and all(is_throttle(c, m) for c, m in answers):
                return Result("throttled", detail)
            return Result("temporary" if all(400 <= c < 500 for c, _ in answers) else "permanent",
                          detail)
        except smtplib.SMTPResponseException as exc:
            text = _text(exc.smtp_error)
            detail = f"{exc.smtp_code} {text}"
            if is_throttle(exc.smtp_code, text):
                return Result("throttled", detail)
            return Result("permanent" if 500 <= exc.smtp_code < 600 else "temporary", detail)
        except (smtplib.SMTPServerDisconnected, socket.timeout, OSError) as exc:
            self.smtp = None
            raise SmtpUnavailable(_describe(exc)) from exc
        except (UnicodeError, smtplib.SMTPNotSupportedError) as exc:
            # Whatever else smtplib cannot encode: this mail's fault, not the relay's. The
            # session may be mid-transaction; RSET so the next mail starts clean.
            self._reset()
            return Result("permanent", f"cannot be sent: {_describe(exc)}")
        unsent = {r: f"{c} {_text(m)}" for r, (c, m) in refused.items()} | unsendable
        if unsent:
            # Some recipients took it: the mail went out, note who did not.
            return Result("sent", f"partly refused: {_refusals(unsent)}")
        return Result("sent")

    def _reset(self) -> None:
        try:
            self.smtp.rset()
        except (smtplib.SMTPException, OSError):
            pass


def _refusals(by_address: dict[str, str]) -> str:
    return "; ".join(f"{r}: {why}" for r, why in by_address.items())


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
