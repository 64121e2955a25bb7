"""Render every outgoing mail from the Jinja2 templates and build it as an EmailMessage."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import textwrap
from dataclasses import dataclass
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path

import jinja2
from babel.dates import format_date

from processor.config import Session, Settings
from processor.display import printable

# Replies answer a person; reminders and the digest are generated (RFC 3834).
AUTO_SUBMITTED = {"reply": "auto-replied", "generated": "auto-generated"}


def clean(text: str | None) -> str:
    """Text from a mail goes into headers and templates on one line, without control or bidi
    characters."""
    return printable(text)


# Every reply formats the same few session dates: babel took about 1 ms a mail (profile, issue 8).
@lru_cache(maxsize=512)
def dutch_date(day: dt.date) -> str:
    return format_date(day, "EEEE d MMMM y", locale="nl_BE")


def dutch_hours(session: Session) -> str:
    return f"{session.start:%H.%M} – {session.end:%H.%M} uur"


class _ReusedHeaders(HeaderRegistry):
    """Parses each distinct header once: From, Auto-Submitted, Content-Type … are the same in
    every reply, and parsing them again was a fifth of a backlog's time (profile, issue 8).
    Header objects are immutable, so sharing them changes nothing in the mail."""

    def __init__(self):
        super().__init__()
        self._parsed = lru_cache(maxsize=1024)(super().__call__)
        self._classes: dict[str, type] = {}

    def __getitem__(self, name):
        # The stdlib builds a new class for every header it parses; one per name is the same.
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def __call__(self, name, value):
        if type(value) is str:  # Address lists are not hashable, and differ per reply anyway
            return self._parsed(name, value)
        return super().__call__(name, value)


class _ReplyPolicy(EmailPolicy):
    """email.policy.SMTP, folding each distinct header once (the same reuse, when writing)."""

    _folded: dict = {}
    # Different in every mail: folding them once would only fill the memo.
    _unique = frozenset({"to", "cc", "date", "message-id", "in-reply-to", "references"})

    def _fold(self, name, value, refold_binary=False):
        if (not hasattr(value, "name") or name.lower() in self._unique or "boundary=" in value
                or len(self._folded) > 1024):
            return self._fold_once(name, value, refold_binary)
        # Everything fold() reads: the header's own name and value, and the policy's settings
        # (a clone with another line length or utf8 shares this memo).
        key = (value.name, str(value), type(value).__mro__[1], self.max_line_length,
               self.linesep, self.utf8, self.cte_type)
        folded = self._folded.get(key)
        if folded is None:
            folded = self._folded[key] = self._fold_once(name, value, refold_binary)
        return folded

    def _fold_once(self, name, value, refold_binary=False):
        folded = super()._fold(name, value, refold_binary)
        bare = f"{name}:{self.linesep} "
        if not folded.startswith(bare):
            return folded
        # The stdlib folds a long ASCII Subject right after "Subject:"; Python's parser and some
        # clients then show it with a leading space (issue 18). Fold it at words instead, or
        # (encoded words, which must stay as they are) keep the first line whole: the line is
        # then a little over 78 characters, far under the limit of 998.
        text = str(value)
        if text.isascii() and "=?" not in text and all(len(w) < self.max_line_length - 10
                                                          for w in text.split()):
            lines = textwrap.wrap(text, self.max_line_length - 1, initial_indent=f"{name}: ",
                                  subsequent_indent=" ", break_long_words=False,
                                  break_on_hyphens=False)
            return self.linesep.join(lines) + self.linesep
        return f"{name}: " + folded[len(bare):]


POLICY = _ReplyPolicy(**{attr: getattr(SMTP, attr) for attr in (
    "max_line_length", "linesep", "cte_type", "raise_on_defect", "mangle_from_",
    "message_factory", "utf8", "refold_source")}, header_factory=_ReusedHeaders())


_UTF8_POLICY = POLICY.clone(utf8=True)


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


def closing_words(settings: Settings, now: dt.datetime) -> str:
    """The last words of every mail the desk sends (its footer's last sentence), whitespace folded.

    A reply typed *below* an Outlook quote, which marks no quoted line with '>', starts after them."""
    footer = _environment(settings.templates_dir).get_template("_footer.txt").render(
        event_context(settings, now))
    tail = " ".join(footer.split())[-120:]
    return tail.split(". ", 1)[-1]


# Plain-text parts are read in clients that show lines as they come: templates are wrapped by
# hand, but an event's name, a theme or a person's name inserted into them makes lines of 90 to
# 110 characters (issue 18). So the text is wrapped after rendering, at the width mail uses.
TEXT_WIDTH = 76
# A line that is part of a structure, never merged with the next: an indented line, a list
# item, a quotation, "Label:   value" (columns), the signature's "--".
_LIST = re.compile(r"(?P<lead>[ \t]*(?:[-*•]|\d{1,3}[.)])[ \t]+)\S")
_COLUMN = re.compile(r"(?P<lead>[ \t]*[^\s:]{1,30}(?: [^\s:]{1,30}){0,2}:[ \t]{2,})\S")
_QUOTE = re.compile(r"(?P<lead>(?:>[ \t]?)+)")


def _hanging(line: str) -> tuple[str, str] | None:
    """(first-line prefix, continuation indent) of a structured line; None for prose."""
    if m := _QUOTE.match(line):
        return m["lead"], m["lead"]
    for pattern in (_LIST, _COLUMN):
        if m := pattern.match(line):
            return "", " " * len(m["lead"].expandtabs())
    if line[:1].isspace() or line.rstrip() == "--":
        lead = line[:len(line) - len(line.lstrip())]
        return "", lead
    return None


def _fill(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    # Never inside a word: a URL or an address longer than the line stays whole on its own.
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]


def wrap_text(text: str, width: int = TEXT_WIDTH, *, wrap_items: bool = True) -> str:
    """Lines of at most `width` characters, except a word (URL, address) longer than that.

    Lines that fit are left as the template has them. A long prose line is broken at a word,
    and what is left over is carried to the front of the next line when that one continues the
    same paragraph, so the paragraph stays even instead of ragged. A long list item, column
    or indented line goes on with its own indent; a quotation keeps its "> " on every line.
    `wrap_items=False` leaves those structured lines whole (the digest: its items carry names
    and subjects from mail, which stay on the one line of their item).
    """
    out: list[str] = []
    carry = ""
    for line in text.split("\n"):
        structure = _hanging(line) if line.strip() else None
        if carry:
            if line.strip() and structure is None:
                line = carry + " " + line.lstrip()
            else:
                out.extend(_fill(carry, width))
            carry = ""
        if len(line) <= width:
            out.append(line)
            continue
        if structure is not None and not wrap_items:
            out.append(line)
            continue
        if structure is not None:
            prefix, indent = structure
            body = line[len(prefix):]
            lead = body[:len(body) - len(body.lstrip())]
            out.extend(_fill(body.strip(), width, prefix + lead, indent))
            continue
        lines = _fill(line, width)
        out.append(lines[0])
        carry = " ".join(lines[1:])
    if carry:
        out.extend(_fill(carry, width))
    return "\n".join(out)


def render(settings: Settings, kind: str, context: dict, *, wrap_items: bool = True) -> Rendered:
    """Render <kind>.txt and <kind>.html; the subject is the `subject` the .txt template sets.
    The text is wrapped after rendering (`wrap_text`)."""
    env = _environment(settings.templates_dir)
    text_template = env.get_template(f"{kind}.txt")
    module = text_template.make_module(context)
    subject = clean(getattr(module, "subject", ""))
    if not subject:
        raise jinja2.TemplateError(f"{kind}.txt does not set a subject")
    return Rendered(subject, wrap_text(str(module), wrap_items=wrap_items),
                    env.get_template(f"{kind}.html").render(context))


def new_message_id(settings: Settings) -> str:
    # From the OS's random source: an answer naming one of our Message-IDs may confirm a
    # cancellation, so they must not be predictable (make_msgid uses random.getrandbits, whose
    # state 312 consecutive IDs reveal).
    return f"<{secrets.token_urlsafe(18)}.leernetwerk@{settings.smtp.message_id_domain}>"


# A display name is a greeting, not a message: a 2,000-character one made a header line longer
# than the 998 a relay accepts (issue 16), and a long one is where bait would hide.
MAX_DISPLAY_NAME = 100


def address(name: str | None, email: str) -> Address:
    # The domain follows the last "@"; a quoted local part may hold "@" itself. Splitting at the
    # first one made `"eve@evil.example"@gent.be` a To header that clients read as an address
    # at evil.example (issue 16).
    username, _, domain = email.rpartition("@") if "@" in email else (email, "", "")
    if len(username) >= 2 and username.startswith('"') and username.endswith('"'):
        # Address quotes the local part again where it needs to; quoting twice would name
        # another mailbox.
        username = re.sub(r"\\(.)", r"\1", username[1:-1])
    display = clean(name)
    if len(display) > MAX_DISPLAY_NAME:
        display = display[:MAX_DISPLAY_NAME - 1].rstrip() + "…"
    return Address(display_name=display, username=username, domain=domain)


@lru_cache(maxsize=8)
def _from_header(name: str | None, email: str):
    """The same From in every mail: parsed once (header objects are immutable)."""
    return POLICY.header_factory("From", address(name, email))


def _boundary() -> str:
    return "=_leernetwerk_" + secrets.token_hex(16)


def build(settings: Settings, rendered: Rendered, *, to: list[tuple[str | None, str]],
          cc: list[tuple[str | None, str]] = (), in_reply_to: str | None = None,
          references: tuple[str, ...] = (), auto_submitted: str = "reply",
          now: dt.datetime, message_id: str | None = None,
          attachments: list[tuple[str, str, str, bytes]] = ()) -> EmailMessage:
    everyone = [e for _, e in (*to, *cc)]
    # An address that is not ASCII can only travel as UTF-8 (RFC 6532, sent with SMTPUTF8):
    # an encoded-word inside an address is not an address. smtp.send decides if it can go.
    msg = EmailMessage(policy=POLICY if all(e.isascii() for e in everyone) else _UTF8_POLICY)
    msg["From"] = _from_header(settings.smtp.from_name, settings.smtp.from_address)
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
    # Our own boundaries: the generator's default compiles a new regex per mail to check its
    # random one against the text. "=_" never occurs in quoted-printable, and 128 random bits
    # never by chance in an 8-bit part.
    msg.make_alternative(boundary=_boundary())
    msg.add_alternative(rendered.html, subtype="html")
    if attachments:
        msg.make_mixed(boundary=_boundary())
    for filename, maintype, subtype, data in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg
