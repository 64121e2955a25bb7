"""Recognise delivery failure reports and find the recipients that failed permanently."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .parse import MailRecord

log = logging.getLogger(__name__)

# Anchored at the start of a run of address characters, the run taken whole: from every position
# of a long line without "@" the local part was rescanned each time (quadratic).
_ADDRESS = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[A-Za-z0-9][\w.!#$%&'*+/=?^`{|}~-]*+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

MACHINE_LOCALPARTS = re.compile(
    r"^(?:mailer-daemon|mailer_daemon|maildaemon|postmaster|mail-daemon|mdaemon|mailerdaemon|"
    r"microsoftexchange[0-9a-f]*|exchange|bounces?|bounce[-+].*|.*-bounces?(?:[-+].*)?|root|"
    r"no-?reply|do-?not-?reply|donotreply|noreply[-+.].*|nepasrepondre|ne-pas-repondre|geen-?antwoord|"
    r"notifications?|auto-?reply|autoresponder|daemon|smtp|mail-?system|mailsystem)$",
    re.IGNORECASE,
)

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|not delivered|non[- ]?delivery|delivery (?:status notification \((?:failure|failed)\)|"
    r"failure|failed|has failed|problem|notification: failed)|returned mail|returned to sender|"
    r"mail delivery (?:failed|failure|system)|failure notice|delivery status notification(?! \((?:delay|relay|success)\))|"
    r"onbestelbaar|niet (?:afgeleverd|bezorgd|bestelbaar)|kan niet worden bezorgd|bezorging (?:mislukt|is mislukt)|"
    r"non remis|non distribuable|échec de (?:la )?(?:remise|distribution)|impossible de remettre|"
    r"unzustellbar|nicht zustellbar|nondeliverable|could not be delivered|mail system error|"
    r"rejected|permanent (?:error|failure)|message blocked|address not found",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(
    r"delay|delayed|vertraag|vertraging|retard|verzögert|not yet been delivered|still (?:being )?retried|"
    r"warning: message|waarschuwing", re.IGNORECASE)
_FAILURE_TEXT = re.compile(
    r"could not be delivered|couldn'?t be delivered|undeliverable|permanent(?:ly)? (?:error|fatal|failure|failed)|"
    r"delivery (?:to the following recipients? )?(?:has )?failed|user unknown|unknown user|no such user|"
    r"mailbox (?:unavailable|not found|does not exist|is full|full)|recipient (?:address )?rejected|"
    r"does not exist|address not found|not found|was not delivered|kon niet worden bezorgd|kan niet worden bezorgd|"
    r"onbekende (?:ontvanger|gebruiker)|bestaat niet|n'a pas pu être remis|n'a pas pu être distribué|"
    r"adresse introuvable|utilisateur inconnu|this is a permanent error|550[ -]|5\.\d\.\d+",
    re.IGNORECASE,
)
_QUOTED_ORIGINAL = re.compile(
    r"^[ \t]*+(?:-{2,}[ \t]*(?:Below this line is a copy of the message|Original message|Original Message|"
    r"Oorspronkelijk bericht|Message d'origine|The original message|Undelivered message)|"
    r"-{2,}\s*This is a copy of the message|"
    r"Original message headers:|Oorspronkelijke berichtkoppen:|En-têtes de message d'origine|"
    r"------ This is a copy of the message|Return-Path:|Received:)",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class BounceFinding:
    permanent: tuple[str, ...]
    temporary: tuple[str, ...]
    how: str


def is_machine_sender(address: str | None) -> bool:
    if not address:
        return True
    local = address.split("@", 1)[0]
    return bool(MACHINE_LOCALPARTS.match(local))


def _flufl(record: MailRecord) -> tuple[set[str], set[str], list[str]]:
    """Run flufl.bounce's detectors one by one: one raising must not hide the others (pitfalls.md)."""
    permanent: set[str] = set()
    temporary: set[str] = set()
    names: list[str] = []
    if record.message is None:
        return permanent, temporary, names
    try:
        from flufl.bounce._scan import _DETECTORS
    except Exception:  # noqa: BLE001 - a changed private layout falls back to the public call
        _DETECTORS = None
    if _DETECTORS is None:
        try:
            from flufl.bounce import all_failures
            temp, perm = all_failures(record.message)
            return {_b(a) for a in perm}, {_b(a) for a in temp}, ["flufl.bounce"]
        except Exception:  # noqa: BLE001
            return permanent, temporary, names
    for detector in _DETECTORS:
        try:
            temp, perm = detector().process(record.message)
        except Exception as exc:  # noqa: BLE001
            log.debug("flufl detector %s raised %r", detector.__name__, exc)
            continue
        if temp or perm:
            permanent.update(_b(a) for a in perm)
            temporary.update(_b(a) for a in temp)
            names.append(detector.__name__)
            break
    return permanent, temporary, names


def _b(address) -> str:
    if isinstance(address, bytes):
        address = address.decode("utf-8", "replace")
    return str(address).strip().strip("<>").lower()


def _dsn_fields(record: MailRecord) -> tuple[set[str], set[str]]:
    permanent, temporary = set(), set()
    for block in record.delivery_status:
        action = block.get("action", "").lower()
        status = block.get("status", "")
        # Original-Recipient is the address we wrote to; Final-Recipient may be an internal alias.
        recipient = ""
        for key in ("original-recipient", "final-recipient"):
            value = block.get(key) or ""
            if ";" in value:
                value = value.split(";", 1)[1]
            value = value.strip().strip("<>").lower()
            if _ADDRESS.fullmatch(value) and ".." not in value:
                recipient = value
                break
        if not recipient or "@" not in recipient:
            continue
        if action.startswith(("failed", "fail", "error")) or (not action and status.startswith("5")):
            permanent.add(recipient)
        elif action.startswith("delayed") or status.startswith("4"):
            temporary.add(recipient)
    return permanent, temporary


def _report_text(record: MailRecord) -> str:
    """The human-readable part of a report, without the returned original."""
    text = record.plain or record.text
    m = _QUOTED_ORIGINAL.search(text)
    if m and m.start() > 0:
        text = text[:m.start()]
    return text


def _text_recipients(record: MailRecord, exclude: set[str]) -> set[str]:
    """Addresses named in the report's own text next to failure wording (Exchange, qmail, plain notices)."""
    text = _report_text(record)
    found: list[str] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        for addr in _ADDRESS.findall(line):
            addr = addr.lower().strip(".")
            if addr in exclude or is_machine_sender(addr):
                continue
            window = "\n".join(lines[max(0, i - 3): i + 4])
            if _FAILURE_TEXT.search(window) or re.match(r"^\s*+<[^>]+>:?\s*$", line) or \
                    re.search(r"(?i)recipients?|ontvanger|destinataire|empfänger|failed|mislukt", window):
                found.append(addr)
    return set(found)


def find_bounce(record: MailRecord, own_addresses: frozenset[str]) -> BounceFinding | None:
    """A finding when this mail is a delivery report; None when it is not one."""
    subject = record.subject or ""
    machine = is_machine_sender(record.sender) or bool(
        record.header("return-path") is not None and record.header("return-path").strip() in ("<>", ""))
    is_dsn = record.content_type == "multipart/report" and record.report_type == "delivery-status"
    looks_bounce = bool(_BOUNCE_SUBJECT.search(subject))
    if not (is_dsn or machine or looks_bounce or record.delivery_status):
        return None
    exclude = set(own_addresses) | {record.sender or ""}
    permanent, temporary = _dsn_fields(record)
    how = "DSN-velden"
    fl_perm, fl_temp, names = _flufl(record)
    if fl_perm and not permanent:
        permanent, how = fl_perm, "flufl.bounce " + ",".join(names)
    # With RFC 3464 fields present they are the authority; flufl's guesses would only add noise.
    temporary |= fl_temp
    delay = bool(_DELAY_SUBJECT.search(subject)) and not re.search(r"(?i)failure|failed|undeliver|onbestelbaar", subject)
    if not permanent and not temporary and not delay and (looks_bounce or (machine and _FAILURE_TEXT.search(_report_text(record)))):
        permanent = _text_recipients(record, exclude)
        how = "tekst van het rapport"
    permanent -= exclude
    temporary -= permanent
    if permanent:
        return BounceFinding(tuple(sorted(permanent)), tuple(sorted(temporary)), how)
    if temporary or delay:
        return BounceFinding((), tuple(sorted(temporary)), "vertraging")
    if is_dsn or looks_bounce:
        return BounceFinding((), (), "rapport zonder adres")
    return None
