"""When the organisation's own mail server accepted a mail, from the Received header it wrote.

INTERNALDATE is when the mail reached the mailbox. After an outage of the mailbox server, the
receiving server delivers what it queued in any order, often in one second: three signups
accepted in order can arrive in reverse. The receiving server wrote when it accepted each one
in its Received header (RFC 5321 section 4.4), so a trusted one can refine the arrival order.

Pure function; no database, no network.
"""

from __future__ import annotations

import datetime as dt
import re
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime

# A Received time is only believed within this long before INTERNALDATE: a queue of a day is an
# outage someone would know of; anything older (or any time after INTERNALDATE) is a wrong clock
# or a forged header, and INTERNALDATE stands.
MAX_QUEUED = dt.timedelta(hours=24)
# Bounded input (pitfalls: Python's re has no time limit): the headers a mail server writes are
# short, and the ones that matter are at the top.
MAX_HEADERS = 30
MAX_HEADER_CHARS = 2000

_COMMENT = re.compile(r"\([^()]{0,2000}\)")
_BY = re.compile(r"(?:^|[\s)])by\s{1,20}([A-Za-z0-9.\-\[\]:]{1,255})", re.IGNORECASE)


def _head(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end != -1:
            return raw[:end + len(sep)]
    return raw


def _matches(host: str, trusted: frozenset[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == t or host.endswith("." + t) for t in trusted)


def received_by(header: str, trusted: frozenset[str]) -> dt.datetime | None:
    """The time in one Received header, if a trusted host wrote it ("by HOST … ; DATE")."""
    text = " ".join(header[:MAX_HEADER_CHARS].split())
    clauses, sep, date = text.rpartition(";")
    # Comments hold what the client said of itself (HELO, its address): never the writer.
    by = _BY.search(_COMMENT.sub(" ", clauses)) if sep else None
    if by is None or not _matches(by.group(1), trusted):
        return None
    try:
        when = parsedate_to_datetime(date.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:     # "-0000": UTC, with no claim about the local zone
        when = when.replace(tzinfo=dt.timezone.utc)
    return when


def accepted_at(raw: bytes, internaldate: dt.datetime,
                trusted_hosts: frozenset[str]) -> dt.datetime | None:
    """When a trusted receiving host accepted the mail, if that refines INTERNALDATE; else None.

    The topmost Received header that a trusted host wrote is used: a sender can add Received
    headers of their own, but only below the ones our servers add on the way in. Its time counts
    only when it is at most MAX_QUEUED before INTERNALDATE and never after it.
    """
    if not trusted_hosts:
        return None
    headers = BytesHeaderParser(policy=compat32).parsebytes(_head(raw)).get_all("Received") or []
    for header in headers[:MAX_HEADERS]:
        when = received_by(str(header), trusted_hosts)
        if when is None:
            continue
        if internaldate - MAX_QUEUED <= when <= internaldate:
            return when
        return None     # the trusted host's own word is out of range: nothing lower counts
    return None
