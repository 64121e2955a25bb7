"""Text from a mail, made safe to show a person: on a screen, in a spreadsheet, in a shell.

Whatever a sender wrote (a name, a subject, an address) is shown by `review`, `status`, `export`
and the digest, and some of it ends up in a command an organiser pastes into a shell or a cell
a spreadsheet evaluates (issue 16). These helpers are applied where the text is shown, not
where it is stored: the registry keeps what was received.
"""

from __future__ import annotations

import re
import shlex

# C0 controls (a bare CR rewinds a terminal line and hides what came before), DEL, the C1
# controls (U+009B is a terminal's CSI), and the bidirectional overrides and marks that make
# "gpj.exe" read as "exe.jpg" (U+200E/F, U+202A–E, U+2066–9), plus the Unicode line breaks.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                        "\u2028\u2029]")
_BREAKS = re.compile(r"[\r\n]+")


def printable(text: str | None) -> str:
    """One line without control or bidi characters; line breaks become a space."""
    if not text:
        return ""
    return _INVISIBLE.sub("", _BREAKS.sub(" ", text)).strip()


def shell_command(*args: object) -> str:
    """A `leernetwerk …` command to paste into a shell: every argument quoted, so that an
    address like `"$(touch pwned)"@gent.be` stays an argument and never runs."""
    return " ".join(["leernetwerk", *(shlex.quote(str(a)) for a in args)])


# A cell a spreadsheet would read as a formula (or, after a tab or CR, as the start of one).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A spreadsheet cell that shows its text instead of evaluating it (OWASP's advice: a
    leading apostrophe)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


_URL = re.compile(r"(?:[a-z][a-z0-9+.-]*://|www\.)\S*", re.IGNORECASE)
_DOMAIN_LIKE = re.compile(r"\S+\.[a-z]{2,}(?:/\S*)?", re.IGNORECASE)
MAX_SHOWN_NAME = 40


def short_name(name: str | None, address: str | None) -> str | None:
    """Who did something, as a stranger may read it: a person's name (at most 40 characters,
    no link, no controls), else the address. A display name is written by the sender and was
    the way to put a phishing text in a mail from the team's own address (issue 16, finding 8)."""
    text = printable(name)
    if (not text or len(text) > MAX_SHOWN_NAME or _URL.search(text) or "@" in text
            or _DOMAIN_LIKE.search(text)):
        return address or None
    return text
