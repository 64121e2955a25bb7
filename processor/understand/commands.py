"""What a decision mail says: the token of a mailto: link, or a command written by hand.

Pure: raw bytes in, a CommandMail out. Whether the sender may decide anything is the desk's
question (desk/bymail.py), never this module's. Lines are cut to a bounded length before any
pattern runs, and no pattern has nested repeats: a hostile mail costs linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .parse import parse
from .text import split_body

# A decision code, as desk/tokens.py writes it: LN-<action>-<item>-<expiry>-<mac>. The one
# definition of its shape; the desk checks what it means.
TOKEN_PATTERN = re.compile(r"\bLN-([a-z])-([a-z][0-9]{1,12})-([0-9a-z]{1,10})-([a-z2-7]{24})\b",
                           re.IGNORECASE)
_MAX_LINE = 1000
_MAX_LINES = 40
_MAX_MESSAGE = 4000

_REGISTER = re.compile(r"INSCHRIJVEN[ \t:]+([^<>\n]{0,200}?)[ \t]*<([^<>@ \t]{1,64}@[^<>@ \t]{1,255})>"
                       r"[ \t,]*([^\n]{0,200})$", re.IGNORECASE)
_CANCEL = re.compile(r"AFMELDEN[ \t:]+<?([^<>@ \t]{1,64}@[^<>@ \t]{1,255}?)>?[ \t.]*$",
                     re.IGNORECASE)
_OVERVIEW = re.compile(r"OVERZICHT[ \t.!]*$", re.IGNORECASE)
_ANNOUNCE = re.compile(r"BERICHT[ \t]+sessie[ \t]+([0-9]{1,2})[ \t]*:[ \t]*([^\n]*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    verb: str                     # register | cancel | overview | announce
    line: str                     # the line as written, for the answer
    name: str | None = None
    email: str | None = None
    organisation: str | None = None
    session: int | None = None
    text: str | None = None


@dataclass(frozen=True)
class CommandMail:
    tokens: tuple[str, ...]       # token texts: those in the subject, else those in the own text
    command: Command | None       # the first command written by hand (ignored when a token is given)
    automatic: bool               # Auto-Submitted or another robot header: never a decision
    message_id: str | None


def _automatic(record) -> bool:
    auto = (record.header("auto-submitted") or "").strip().lower()
    return bool(auto and not auto.startswith("no")) or record.has_header("x-autoreply")


def _command(lines: list[str]) -> Command | None:
    for i, raw_line in enumerate(lines):
        line = raw_line.strip()[:_MAX_LINE]
        if not line or line.startswith(">"):
            continue
        if m := _REGISTER.match(line):
            name = " ".join(m.group(1).split()) or None
            org = " ".join(m.group(3).strip(" ,.;").split()) or None
            return Command("register", line, name=name, email=m.group(2).lower(), organisation=org)
        if m := _CANCEL.match(line):
            return Command("cancel", line, email=m.group(1).lower())
        if _OVERVIEW.match(line):
            return Command("overview", line)
        if m := _ANNOUNCE.match(line):
            # The announcement runs on to the end of the organiser's own text (its signature
            # was split off already).
            rest = "\n".join([m.group(2), *(x.rstrip()[:_MAX_LINE] for x in lines[i + 1:])])
            return Command("announce", line, session=int(m.group(1)),
                           text=rest.strip()[:_MAX_MESSAGE])
    return None


def read_command_mail(raw: bytes) -> CommandMail:
    record = parse(raw)
    subject = (record.subject or "")[:_MAX_LINE]
    own = split_body(record.text, subject).own.text
    lines = own.replace("\r\n", "\n").split("\n")[:_MAX_LINES]
    found = [m.group(0) for m in TOKEN_PATTERN.finditer(subject)]
    if not found:
        own_lines = "\n".join(x[:_MAX_LINE] for x in lines if not x.lstrip().startswith(">"))
        found = [m.group(0) for m in TOKEN_PATTERN.finditer(own_lines)]
    tokens = tuple(dict.fromkeys(t for t in found))
    return CommandMail(tokens=tokens, command=None if tokens else _command(lines),
                       automatic=_automatic(record), message_id=record.message_id)
