"""The understanding stage: raw mail bytes to a Reading (kind, participants, review reasons); pure and total."""
from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field

from .attachments import attachment_text
from .authentication import verdict
from .classify import build_context, classify
from .evidence import BAR, Assessment, assess
from .extract import extract
from .model import KINDS, Options, Participant, Reading
from .parse import MailRecord, is_own_address, parse
from .text import split_body

__all__ = ["understand", "load_domain_organisations", "Options", "Participant", "Reading", "KINDS"]

log = logging.getLogger(__name__)

_EXCERPT_CHARS = 300
# What organisers and other mails show of a Reading: bare CR, C1 controls and bidi overrides can
# hide or reorder text on a screen (U+202E makes "gpj.exe" read "exe.jpg").
_DISPLAY_CONTROLS = re.compile(r"[\r\x80-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown(text: str | None) -> str | None:
    return _DISPLAY_CONTROLS.sub("", text) if text else text


def load_domain_organisations(path) -> dict[str, str]:
    """config/organisations.toml: a [domains] table of 'domain' = 'Organisation' (top-level keys accepted too)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    table = data.get("domains", data)
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, str):
            out[key.strip().lower()] = value.strip()
    return out


def _excerpt(text: str) -> str:
    text = _DISPLAY_CONTROLS.sub("", re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n", text).strip()
    return text[:_EXCERPT_CHARS]


def _read(record: MailRecord, options: Options) -> Reading:
    body = split_body(record.text, record.subject, own_closing=options.own_closing)
    att_text, att_notes = attachment_text(record.attachments) if record.attachments else ("", [])
    ctx = build_context(record, body, options, att_text)
    decision = classify(ctx)
    reasons = [decision.reason, *decision.review]
    participants: tuple[Participant, ...] = ()
    substitutes: tuple[Participant, ...] = ()
    needs_review = bool(decision.review)
    if decision.kind in ("registration", "cancellation"):
        found = extract(ctx, decision.kind)
        # The desk's own address (or a plus-alias of it) in a form or the text is never a person.
        participants = tuple(Participant(_shown(p.name), p.email, _shown(p.organisation))
                             for p in found.participants
                             if not is_own_address(p.email, options.own_addresses))
        substitutes = tuple(Participant(_shown(p.name), p.email, _shown(p.organisation))
                            for p in found.substitutes
                            if not is_own_address(p.email, options.own_addresses))
        reasons += found.review
        needs_review = needs_review or bool(found.review)
        if len(participants) < len(found.participants):
            reasons.append("Het adres van de desk zelf stond als deelnemer in het bericht: weggelaten")
            needs_review = needs_review or not participants
        if att_notes:
            reasons += att_notes
            needs_review = True
    elif decision.kind == "other" and decision.replies_allowed:
        # Questions and unclear mails go to the organisers' list; a plain thank-you does not.
        needs_review = not _just_thanks(body.own.text)
    if record.errors and decision.kind in ("registration", "cancellation"):
        reasons.append("Bericht was beschadigd: " + "; ".join(record.errors)[:200])
        needs_review = True
    excerpt_source = body.own.text or (body.forwarded[0].text if body.forwarded else "")
    sender_domain = record.sender.rsplit("@", 1)[1] if record.sender and "@" in record.sender else None
    auth = verdict(record.headers.get("authentication-results", []), options.trusted_authserv_ids, sender_domain)
    if auth.status == "fail" and decision.kind in ("registration", "cancellation"):
        reasons.append(f"Afzender niet bevestigd: {auth.detail}; mogelijk vervalst")
        needs_review = True
    kind = decision.kind
    replies_allowed = decision.replies_allowed and kind in ("registration", "cancellation", "other")
    assessment = None
    if kind in ("registration", "cancellation"):
        kind, participants, weighed = _weigh(ctx, kind, participants)
        assessment = weighed.assessment
        if kind == "other":
            reasons = [*weighed.reasons, decision.reason]
        else:
            reasons += weighed.reasons
        if weighed.hold:
            needs_review = True
            replies_allowed = False
        if kind == "other":
            substitutes = ()
    return Reading(
        kind=kind,
        sender=record.sender,
        sender_name=_shown(record.sender_name),
        subject=_shown(record.subject) or "",
        message_id=record.message_id,
        in_reply_to=record.in_reply_to,
        references=record.references,
        participants=participants,
        bounced_recipients=tuple(decision.bounced),
        needs_review=needs_review,
        reasons=tuple(reasons),
        excerpt=_excerpt(excerpt_source),
        replies_allowed=replies_allowed,
        is_reply_to_us=ctx.is_reply_to_us,
        substitutes=substitutes,
        authentication=auth.status,
        evidence=assessment.signals if assessment else (),
        confidence=assessment.confidence if assessment else 0,
        bar=assessment.bar if assessment else BAR,
    )


@dataclass
class _Weighed:
    assessment: Assessment
    reasons: list[str] = field(default_factory=list)
    hold: bool = False  # below the bar: kept, set aside, never answered


def _weigh(ctx, kind: str, participants: tuple[Participant, ...]):
    """Act alone only above the bar (see evidence.py); below it the reading waits for an organiser.

    Returns the kind (a signup with no link to this event, or marked as spam or imitation, becomes
    'other'), the participants, and what to add to the reasons."""
    assessment = assess(ctx, kind, participants)
    weighed = _Weighed(assessment)
    what = "inschrijving" if kind == "registration" else "afmelding"
    # 1. Strong evidence against decides alone: not a signup, whatever its words.
    if assessment.strong_against is not None:
        weighed.reasons.append(f"Geen echte {what}: {assessment.strong_against.reason}")
        weighed.hold = True
        return "other", (), weighed
    # 2. No link to this event at all: the team mailbox gets every kind of "register here".
    if assessment.event_known and assessment.linked_to_event is False:
        weighed.reasons.append(f"Lijkt op een {what}, maar verwijst niet naar dit evenement (geen naam, thema of "
                               "sessiedatum, geen antwoord op onze mail): een organisator leest het")
        weighed.hold = True
        return "other", (), weighed
    # 3. A thread with the desk: its sender is already known to us; only someone new is a fresh signup.
    if kind == "registration" and ctx.is_reply_to_us:
        sender = ctx.record.sender
        others = tuple(p for p in participants if p.email != sender)
        if not others:
            weighed.reasons.append("Antwoord op een bericht van de desk, zonder iemand nieuw in te schrijven: "
                                   "geen nieuwe inschrijving")
            weighed.hold = True
            return "other", (), weighed
        participants = others
    # 4. The bar.
    if not assessment.acts:
        # Every signal with its weight, against first: the organiser sees what was missing and what was there.
        ordered = sorted(assessment.signals, key=lambda s: s.weight)
        weighed.reasons.append(f"Niet automatisch verwerkt: bewijs {assessment.confidence} onder de drempel "
                               f"{assessment.bar} (" + "; ".join(f"{s.reason} [{s.weight:+d}]" for s in ordered) + ")")
        weighed.hold = True
    return kind, participants, weighed


_THANKS_ONLY = re.compile(
    r"^\W*(?:(?:hartelijk |heel erg |alvast |nogmaals |many |thanks a lot)?(?:bedankt|dank ?(?:u|je)(?: ?wel)?|merci|thanks|thank you)|"
    r"(?:goed|prima|perfect) ontvangen|ok(?:é|e)?|top|super)\b", re.IGNORECASE)


def _just_thanks(text: str) -> bool:
    text = text.strip()
    return bool(text) and len(text) < 300 and "?" not in text and bool(_THANKS_ONLY.match(text))


def _fallback(raw: bytes, error: Exception) -> Reading:
    sender = None
    try:
        m = re.search(rb"(?im)^from:[^\n]*?(?<![\w.+-])([\w.+-]++@[\w-]+(?:\.[\w-]+)+)", raw[:20000])
        if m:
            sender = m.group(1).decode("ascii", "replace").lower()
    except Exception:  # noqa: BLE001
        sender = None
    return Reading(
        kind="other", sender=sender, sender_name=None, subject="", message_id=None, in_reply_to=None,
        references=(), participants=(), bounced_recipients=(), needs_review=True,
        reasons=(f"Bericht kon niet gelezen worden: {type(error).__name__}: {error}"[:300],),
        excerpt="", replies_allowed=False,
    )


def understand(raw: bytes, options: Options = Options()) -> Reading:
    """Read one raw mail. Never raises: an unreadable mail becomes 'other' with needs_review and the error."""
    try:
        record = parse(raw)
    except MemoryError:
        raise  # over the memory budget: the caller sets the mail aside with that reason
    except Exception as exc:  # noqa: BLE001
        return _fallback(raw if isinstance(raw, bytes) else b"", exc)
    try:
        return _read(record, options)
    except MemoryError:
        raise
    except RecursionError as exc:
        return _fallback(raw, exc)
    except Exception as exc:  # noqa: BLE001 - a bug in one rule must not lose the mail
        log.exception("understanding failed")
        try:
            return Reading(
                kind="other", sender=record.sender, sender_name=record.sender_name, subject=record.subject,
                message_id=record.message_id, in_reply_to=record.in_reply_to, references=record.references,
                participants=(), bounced_recipients=(), needs_review=True,
                reasons=(f"Fout bij het lezen: {type(exc).__name__}: {exc}"[:300],), excerpt="", replies_allowed=False,
            )
        except Exception as exc2:  # noqa: BLE001
            return _fallback(b"", exc2)
