"""Render every outgoing mail from the Jinja2 templates and build it as an EmailMessage."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from pathlib import Path

import jinja2
from babel.dates import format_date

from processor.config import Session, Settings

# Replies answer a person; reminders and the digest are generated (RFC 3834).
AUTO_SUBMITTED = {"reply": "auto-replied", "generated": "auto-generated"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_LINE_BREAKS = re.compile(r"[\r\n]+")


def clean(text: str | None) -> str:
    """Text from a mail goes into headers and templates on one line, without control characters."""
    if not text:
        return ""
    return _CONTROL.sub("", _LINE_BREAKS.sub(" ", text)).strip()


# Every reply formats the same few session dates: babel took about 1 ms a mail (profile, issue 8).
@lru_cache(maxsize=512)
def dutch_date(day: dt.date) -> str:
    return format_date(day, "EEEE d MMMM y", locale="nl_BE")


def dutch_hours(session: Session) -> str:
    return f"{session.start:%H.%M} – {session.end:%H.%M} uur"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=8)
def _environment(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        # An undefined variable is a bug in a template, never a blank in a participant's mail.
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dutch_date"] = dutch_date
    env.filters["dutch_hours"] = dutch_hours
    return env


def event_context(settings: Settings, now: dt.datetime) -> dict:
    ev = settings.event
    sessions = [
        {
            "number": s.number,
            "theme": s.theme,
            "date": dutch_date(s.date),
            "hours": dutch_hours(s),
            "ahead": s.starts_at > now,
        }
        for s in ev.sessions
        if not s.cancelled  # a session the organisers called off is no longer announced
    ]
    return {
        "event": {
            "name": ev.name,
            "organiser": ev.organiser,
            "organisation": ev.organisation,
            "capacity": ev.capacity,
            "place": ev.place,
            "online_link": ev.online_link,
            "contact_email": ev.contact_email,
            "trainers": ev.trainers,
            "retention_until": dutch_date(settings.retention_ends.date()),
        },
        "sessions": sessions,
        "sessions_ahead": [s for s in sessions if s["ahead"]],
    }


def render(settings: Settings, kind: str, context: dict) -> Rendered:
    """Render <kind>.txt and <kind>.html; the subject is the `subject` the .txt template sets."""
    env = _environment(settings.templates_dir)
    text_template = env.get_template(f"{kind}.txt")
    module = text_template.make_module(context)
    subject = clean(getattr(module, "subject", ""))
    if not subject:
        raise jinja2.TemplateError(f"{kind}.txt does not set a subject")
    return Rendered(subject, str(module), env.get_template(f"{kind}.html").render(context))


def new_message_id(settings: Settings) -> str:
    return make_msgid(idstring="leernetwerk", domain=settings.smtp.message_id_domain)


def address(name: str | None, email: str) -> Address:
    username, _, domain = email.partition("@")
    return Address(display_name=clean(name), username=username, domain=domain)


def build(settings: Settings, rendered: Rendered, *, to: list[tuple[str | None, str]],
          cc: list[tuple[str | None, str]] = (), in_reply_to: str | None = None,
          references: tuple[str, ...] = (), auto_submitted: str = "reply",
          now: dt.datetime, message_id: str | None = None,
          attachments: list[tuple[str, str, str, bytes]] = ()) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = address(settings.smtp.from_name, settings.smtp.from_address)
    msg["To"] = [address(n, e) for n, e in to]
    if cc:
        msg["Cc"] = [address(n, e) for n, e in cc]
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(now.astimezone(settings.event.timezone))
    msg["Message-ID"] = message_id or new_message_id(settings)
    if in_reply_to:
        msg["In-Reply-To"] = clean(in_reply_to)
        msg["References"] = " ".join(clean(r) for r in (*references, in_reply_to) if r)
    msg["Auto-Submitted"] = AUTO_SUBMITTED[auto_submitted]
    # Ask Exchange not to answer us with its own automatic replies (no mail loops).
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    for filename, maintype, subtype, data in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg
