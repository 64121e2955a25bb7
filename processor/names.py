"""Keys that let names and organisations be compared the way a person would (case, accents, order)."""

from __future__ import annotations

import re
import unicodedata

_TITLES = {"dhr", "mevr", "mevrouw", "meneer", "mr", "mrs", "ms", "dr", "prof", "ir", "m", "mme"}


def fold(text: str | None) -> str:
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.findall(r"[a-z0-9]+", plain))


def name_key(name: str | None) -> str | None:
    """'Mevr. Ann-Sofie D'Hondt' and 'dhondt ann sofie' give the same key: word order is free."""
    words = [w for w in fold(name).split() if w not in _TITLES]
    return " ".join(sorted(words)) or None


def org_key(organisation: str | None, email: str | None) -> str | None:
    """The organisation a seat counts against: its folded name, else the mail domain."""
    if organisation and fold(organisation):
        return fold(organisation)
    if email and "@" in email:
        return "@" + email.rpartition("@")[2].lower()
    return None


# Addresses anyone can get: sharing one of these domains says nothing about an employer.
WEBMAIL = frozenset({
    "gmail.com", "googlemail.com", "hotmail.com", "hotmail.be", "outlook.com", "outlook.be",
    "live.com", "live.be", "msn.com", "yahoo.com", "yahoo.fr", "icloud.com", "me.com",
    "telenet.be", "skynet.be", "proximus.be", "scarlet.be", "pandora.be", "gmx.com", "gmx.net",
    "protonmail.com", "proton.me", "orange.fr", "free.fr", "laposte.net",
})


def is_webmail(domain: str) -> bool:
    return domain.lower() in WEBMAIL
