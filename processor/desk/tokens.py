"""One-time decision tokens for mailto: links: an HMAC over (action, item, expiry, target).

Pure functions; the caller records a used token in SQLite (`used_tokens`) in the same transaction
as the decision it authorised, so a token applies once however often its mail is sent.

A token reads `LN-<action>-<item>-<expiry>-<mac>`, e.g. `LN-i-m12-1kq3x5-abcdefghijklmnopqrstuvwx`:
the action and the item are in clear (the desk must know what is asked before it can check it),
and the MAC binds them together with the expiry and, where given, the one address that may send
it (understand/commands.py finds codes in a mail by their shape). Changing any part (another item, another action, a later expiry) makes it invalid.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from processor.understand.commands import TOKEN_PATTERN

# Short codes keep a mailto link well below the 2,000 characters Outlook opens.
ACTIONS = {
    "registration": "i",   # settle a set-aside mail as a signup (resolve --as registration)
    "cancellation": "a",   # … as a cancellation (resolve --as cancellation)
    "nothing": "n",        # … as nothing to do (resolve --as nothing)
    "retry": "r",          # understand a quarantined mail again (retry)
    "unsubscribe": "u",    # cancel a participant whose address bounces (cancel)
    "confirm": "c",        # confirm a pending request (a command by hand, a cancellation)
}
_BY_CODE = {code: action for action, code in ACTIONS.items()}
_MAC_BYTES = 15            # 120 bits: 24 base32 characters, no padding
_VERSION = b"leernetwerk-token-v1"

PATTERN = TOKEN_PATTERN


@dataclass(frozen=True)
class Token:
    action: str            # a key of ACTIONS
    item: str              # "m12" (a mail), "r5" (a registration), "c3" (a pending request)
    expires: dt.datetime
    mac: str

    @property
    def text(self) -> str:
        return f"LN-{ACTIONS[self.action]}-{self.item}-{_b36(_minutes(self.expires))}-{self.mac}"


def _minutes(moment: dt.datetime) -> int:
    return int(moment.timestamp()) // 60


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def _mac(secret: bytes, action: str, item: str, minutes: int, target: str) -> str:
    message = b"|".join([_VERSION, action.encode(), item.encode(), str(minutes).encode(),
                         target.strip().lower().encode()])
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()


def make(secret: bytes, action: str, item: str, expires: dt.datetime, target: str = "") -> Token:
    """A token for exactly this action on this item, valid until `expires`; with `target`, valid
    only in a mail from that address."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    minutes = _minutes(expires)
    return Token(action, item, dt.datetime.fromtimestamp(minutes * 60, dt.timezone.utc),
                 _mac(secret, action, item, minutes, target))


def find(text: str) -> list[str]:
    """The distinct token texts in a subject or body, in order."""
    seen: list[str] = []
    for m in PATTERN.finditer(text or ""):
        token = m.group(0)
        if token.lower() not in (s.lower() for s in seen):
            seen.append(token)
    return seen


def parse(text: str) -> Token | None:
    m = PATTERN.fullmatch(text.strip())
    if not m or m.group(1).lower() not in _BY_CODE:
        return None
    try:
        minutes = int(m.group(3), 36)
        expires = dt.datetime.fromtimestamp(minutes * 60, dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return Token(_BY_CODE[m.group(1).lower()], m.group(2).lower(), expires, m.group(4).lower())


def verify(secret: bytes, token: Token, now: dt.datetime, target: str = "") -> str:
    """"valid", "expired" (a genuine token past its time) or "invalid" (changed or forged).
    The MAC is compared in constant time, and checked before the expiry so that a forged token
    learns nothing from the answer."""
    expected = _mac(secret, token.action, token.item, _minutes(token.expires), target)
    if not hmac.compare_digest(expected.encode(), token.mac.encode()):
        return "invalid"
    if now >= token.expires:
        return "expired"
    return "valid"
