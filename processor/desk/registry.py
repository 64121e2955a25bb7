"""Apply what a mail or an organiser means to the registry: seats, the waiting list, replies, the log.

Every function here runs inside the caller's transaction (pipeline.apply_one, organiser.act), so a
change, the replies it causes and the event-log row explaining it commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field

from processor.mail import compose, ical
from processor.clock import iso
from processor.config import Settings
from processor.display import short_name
from processor.store.db import Store
from processor.names import fold, is_webmail, name_key, org_key
from processor.understand.model import Participant, Reading

REPLY_PRIORITY = 0
WORKER = "worker"
# Over the daily cap these may be dropped: they repeat what the person was already told, or
# answer a sender about nobody's status. Every other reply tells a change (a seat, a place,
# a promotion, a cancellation) and is deferred until the cap allows it, never dropped.
DROPPABLE_WHEN_CAPPED = frozenset({"already_registered", "not_registered"})


@dataclass
class Outcome:
    """What applying one mail or command did; `state` is the message's final state."""

    state: str = "processed"
    notes: list[str] = field(default_factory=list)
    replies: int = 0

    def review(self, note: str) -> None:
        self.state = "review"
        self.notes.append(note)


@dataclass(frozen=True)
class Origin:
    """Where a change comes from: its mail (if any), its arrival (the queue's sort key), its actor."""

    message: int | None
    arrived_at: str
    uid: int
    sender: str | None
    sender_name: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    actor: str = WORKER

    @property
    def source(self) -> str:
        return "mail" if self.actor == WORKER else "organiser"


def origin_of(message: sqlite3.Row, reading: Reading, actor: str = WORKER) -> Origin:
    return Origin(
        message=message["id"],
        arrived_at=message["arrived_at"],
        uid=message["uid"],
        sender=reading.sender,
        sender_name=reading.sender_name,
        in_reply_to=reading.message_id,
        references=reading.references,
        actor=actor,
    )


def by_hand(actor: str, now: dt.datetime) -> Origin:
    """A change an organiser makes (phone, desk): it arrives now, with no mail behind it."""
    return Origin(message=None, arrived_at=iso(now), uid=0, sender=None, sender_name=None,
                  in_reply_to=None, references=(), actor=actor)


def is_charter(settings: Settings, organisation: str | None, email: str | None) -> bool:
    domain = email.rpartition("@")[2].lower() if email else ""
    folded = fold(organisation)
    for signatory in settings.registration.charter:
        if folded and folded == fold(signatory.name):
            return True
        if domain and any(domain == d or domain.endswith("." + d) for d in signatory.domains):
            return True
    return False


def queue_reply(store: Store, settings: Settings, kind: str, *, person: dict, origin: Origin,
                registration_id: int | None, now: dt.datetime, extra: dict,
                copy_sender: bool = True) -> None:
    """Render the reply now and store it whole, so that a resend after a crash is the same mail."""
    context = compose.event_context(settings, now) | {"person": person} | extra
    rendered = compose.render(settings, kind, context)
    own = settings.own_addresses
    cc = []
    if (copy_sender and origin.sender and origin.sender != person["email"]
            and origin.sender not in own):
        cc.append((origin.sender_name, origin.sender))
    not_before = None
    if origin.actor == WORKER:
        # A copy is only a copy: over the cap it is left out, and the person still hears.
        cc = [c for c in cc if not _over_cap(store, settings, c[1], origin, now)]
        slot = _cap_slot(store, settings, person["email"], now)
        if slot is not None and kind in DROPPABLE_WHEN_CAPPED:
            _log_capped(store, settings, person["email"], origin, now)
            return
        if slot is not None:
            not_before = slot
            store.log(now=now, action="reply_deferred", email=person["email"],
                      registration_id=registration_id, message=origin.message,
                      reason=f"{kind} mail to {person['email']} deferred to {iso(slot)}: already "
                             f"{settings.max_replies_per_day} automatic mails in 24 hours")
    attach = ical.ATTACHMENTS.get(kind)
    msg = compose.build(
        settings, rendered, to=[(person["name"], person["email"])], cc=cc,
        in_reply_to=origin.in_reply_to, references=origin.references, now=now,
        attachments=attach(store, settings, now, extra) if attach else (),
    )
    recipients = [person["email"], *(e for _, e in cc)]
    outbox_id = store.queue_mail(
        kind=kind, priority=REPLY_PRIORITY, order_key=origin.arrived_at,
        sender=settings.smtp.from_address, recipients=recipients,
        message_id=msg["Message-ID"], raw=bytes(msg), registration_id=registration_id,
        source_message=origin.message, now=now, not_before=not_before,
    )
    store.log_replies(recipients, outbox_id, not_before or now)


def _over_cap(store: Store, settings: Settings, address: str, origin: Origin,
              now: dt.datetime) -> bool:
    """A handful of automatic mails per address and day at most: a loop with a robot, or a
    stranger making us write to someone over and over, stops here; the digest shows it."""
    if _cap_slot(store, settings, address, now) is None:
        return False
    _log_capped(store, settings, address, origin, now)
    return True


def _log_capped(store: Store, settings: Settings, address: str, origin: Origin,
                now: dt.datetime) -> None:
    store.log(now=now, action="reply_capped", email=address, message=origin.message,
              reason=f"no automatic mail to {address}: already {settings.max_replies_per_day} "
                     "in the last 24 hours")


def _cap_slot(store: Store, settings: Settings, address: str,
              now: dt.datetime) -> dt.datetime | None:
    """None if one more automatic mail to `address` fits in the cap now; else the first moment
    it fits: a day after the cap-th most recent one (mails deferred before count, at their own
    later moment, so deferred mails line up one after another)."""
    cap = settings.max_replies_per_day
    if store.replies_to_since(address, now - dt.timedelta(days=1)) < cap:
        return None
    at = dt.datetime.fromisoformat(store.nth_latest_reply(address, cap))
    return max(now, at + dt.timedelta(days=1, seconds=1))


def _person(row: sqlite3.Row) -> dict:
    return {"name": row["name"], "email": row["email"], "organisation": row["organisation"]}


def _registered_by(origin: Origin, email: str) -> str | None:
    """Who signed a person up, as that person reads it: a short, cleaned name or the address,
    never the sender's display name verbatim (it may hold a phishing text or a link)."""
    if origin.sender and origin.sender != email:
        return short_name(origin.sender_name, origin.sender)
    return None


def register(store: Store, settings: Settings, person: Participant, index: int, origin: Origin,
             now: dt.datetime, outcome: Outcome) -> int | None:
    """One person signs up: a seat if one is free in arrival order, else the waiting list."""
    existing = store.live_registration(person.email)
    if existing is not None:
        if origin.sender == person.email and existing["registered_by"] not in (None, person.email):
            # The person's own signup supersedes whoever registered them (issue 16): from now
            # on only they (or an organiser) may withdraw them.
            store.set_registered_by(existing["id"], person.email, now)
            store.log(now=now, actor=origin.actor, action="registrant_superseded",
                      email=person.email, registration_id=existing["id"], message=origin.message,
                      reason=f"{person.email} signed up themselves; {existing['registered_by']} "
                             "who registered them earlier can no longer cancel them")
        position = store.waitlist_position(existing["id"])
        # Her status goes to her; whoever names her is copied only if they signed her up
        # themselves. A stranger is never told another person's seat or place (issue 16).
        queue_reply(store, settings, "already_registered", person=_person(existing),
                    origin=origin, registration_id=existing["id"], now=now,
                    extra={"status": existing["status"], "position": position},
                    copy_sender=existing["registered_by"] == origin.sender)
        store.log(now=now, actor=origin.actor, action="already_registered", email=person.email,
                  registration_id=existing["id"], message=origin.message,
                  reason=f"{person.email} is already {existing['status']}"
                  + (f" (waiting list position {position})" if position else "")
                  + "; no second seat, told where they stand")
        outcome.replies += 1
        return existing["id"]

    closes = settings.registration.closes
    if origin.source == "mail" and dt.datetime.fromisoformat(origin.arrived_at) > closes:
        queue_reply(store, settings, "registration_closed", person=person.__dict__,
                    origin=origin, registration_id=None, now=now, extra={})
        store.log(now=now, actor=origin.actor, action="registration_closed", email=person.email,
                  message=origin.message,
                  reason=f"arrived {origin.arrived_at}, after registration closed at "
                         f"{iso(closes)}; no seat, told so")
        outcome.replies += 1
        return None

    key = org_key(person.organisation, person.email)
    charter = is_charter(settings, person.organisation, person.email)
    cap = settings.registration.max_per_organisation
    registration_id = store.add_registration(
        email=person.email, name=person.name, name_key=name_key(person.name),
        organisation=person.organisation, org_key=key, charter=charter,
        arrived_at=origin.arrived_at, arrival_uid=origin.uid, arrival_index=index,
        message_id=origin.message, registered_by=origin.sender,
        capacity=settings.event.capacity, max_per_org=cap, source=origin.source, now=now,
    )
    row = store.registration(registration_id)
    extra = {"registered_by": _registered_by(origin, person.email), "charter": charter}
    if row["status"] == "confirmed":
        reason = (f"seat given: fewer than {settings.event.capacity} confirmed at arrival "
                  f"{origin.arrived_at}")
        queue_reply(store, settings, "confirmation", person=_person(row), origin=origin,
                    registration_id=registration_id, now=now, extra=extra)
    else:
        position = store.waitlist_position(registration_id)
        if store.confirmed_count() < settings.event.capacity:
            why = f"the maximum of {cap} confirmed seats per organisation is reached"
            store.set_wait_reason(registration_id, why)
        else:
            why = f"all {settings.event.capacity} seats were taken"
        reason = f"waitlisted at position {position}: {why} at arrival {origin.arrived_at}"
        queue_reply(store, settings, "waitlist", person=_person(row), origin=origin,
                    registration_id=registration_id, now=now,
                    extra=extra | {"position": position, "organisation_cap": cap
                                   if "per organisation" in why else 0})
    if charter:
        reason += "; organisation signed the SDG charter (coaching)"
    store.log(now=now, actor=origin.actor, action=row["status"], email=person.email,
              registration_id=registration_id, message=origin.message, reason=reason)
    outcome.replies += 1
    return registration_id


def cancel(store: Store, settings: Settings, registration: sqlite3.Row, origin: Origin,
           now: dt.datetime, outcome: Outcome, reason: str = "",
           substitute_name: str | None = None) -> None:
    """Withdraw one live registration; a freed seat goes to the waiting list at once."""
    was_confirmed = registration["status"] == "confirmed"
    store.set_status(registration["id"], "cancelled", now)
    store.log(now=now, actor=origin.actor, action="cancelled", email=registration["email"],
              registration_id=registration["id"], message=origin.message,
              reason=reason or f"cancellation received (was {registration['status']})")
    queue_reply(store, settings, "cancelled", person=_person(registration), origin=origin,
                registration_id=registration["id"], now=now,
                extra={"was_waitlisted": not was_confirmed, "substitute_name": substitute_name})
    outcome.replies += 1
    if was_confirmed and substitute_name is None:
        fill_free_seats(store, settings, origin, now, outcome)


def fill_free_seats(store: Store, settings: Settings, origin: Origin, now: dt.datetime,
                    outcome: Outcome) -> None:
    """Give free seats to the head of the waiting list, in arrival order, in this transaction."""
    if now >= settings.registration.promotion_closes:
        store.log(now=now, actor=origin.actor, action="no_promotion", message=origin.message,
                  reason=f"a seat came free, but promotion closed at "
                         f"{iso(settings.registration.promotion_closes)}")
        return
    cap = settings.registration.max_per_organisation
    while store.confirmed_count() < settings.event.capacity:
        first = store.first_waiting(cap)
        if first is None:
            return
        promote(store, settings, first, origin, now, outcome,
                reason=f"a seat came free; first on the waiting list (arrived {first['arrived_at']})")


def promote(store: Store, settings: Settings, registration: sqlite3.Row, origin: Origin,
            now: dt.datetime, outcome: Outcome, reason: str) -> None:
    store.set_status(registration["id"], "confirmed", now)
    store.set_wait_reason(registration["id"], None)
    store.log(now=now, actor=origin.actor, action="promoted", email=registration["email"],
              registration_id=registration["id"], message=origin.message, reason=reason)
    # The promotion mail answers the person's own signup, not the mail that freed the seat.
    signup = store.message(registration["message_id"]) if registration["message_id"] else None
    own_thread = Origin(
        message=registration["message_id"], arrived_at=registration["arrived_at"],
        uid=registration["arrival_uid"], sender=None, sender_name=None,
        in_reply_to=signup["message_id"] if signup else None, references=(), actor=origin.actor,
    )
    queue_reply(store, settings, "promoted", person=_person(registration), origin=own_thread,
                registration_id=registration["id"], now=now,
                extra={"charter": bool(registration["charter"])})
    outcome.replies += 1


_DOMAIN_ORGANISATIONS: dict[tuple[str, float], dict[str, str]] = {}


def domain_organisation(settings: Settings, email: str | None) -> str | None:
    """The organisation an address belongs to, from config/organisations.toml (its domain or a
    parent domain); never from what a mail says about itself."""
    if not email or not settings.organisations_file.exists():
        return None
    from processor.understand import load_domain_organisations

    path = settings.organisations_file
    key = (str(path), path.stat().st_mtime)
    if key not in _DOMAIN_ORGANISATIONS:
        _DOMAIN_ORGANISATIONS.clear()
        _DOMAIN_ORGANISATIONS[key] = load_domain_organisations(path)
    table = _DOMAIN_ORGANISATIONS[key]
    domain = email.rpartition("@")[2].lower()
    while domain:
        if domain in table:
            return table[domain]
        domain = domain.partition(".")[2]
    return None


def same_organisation(settings: Settings, newcomer: Participant, withdrawn: sqlite3.Row) -> bool:
    """Decided by the addresses alone (issue 16): the newcomer's domain names, in the
    organisations table, the organisation the withdrawn person registered with, or the two share
    a work mail domain. The organisation a mail writes beside the newcomer's name proves nothing."""
    domain = newcomer.email.rpartition("@")[2].lower()
    if domain == withdrawn["email"].rpartition("@")[2].lower() and not is_webmail(domain):
        return True
    theirs = domain_organisation(settings, newcomer.email)
    mine = withdrawn["organisation"] or domain_organisation(settings, withdrawn["email"])
    return bool(theirs and mine and org_key(theirs, None) == org_key(mine, None))


def substitute_allowed(store: Store, settings: Settings, withdrawn: sqlite3.Row,
                       newcomer: Participant) -> bool:
    policy = settings.registration.substitutes
    if policy == "never" or not newcomer.email:
        return False
    if store.live_registration(newcomer.email) is not None:
        return False
    return policy != "same_organisation" or same_organisation(settings, newcomer, withdrawn)


def substitute(store: Store, settings: Settings, withdrawn: sqlite3.Row, newcomer: Participant,
               origin: Origin, now: dt.datetime, outcome: Outcome) -> bool:
    """A colleague takes over a seat (or a place on the waiting list) where the rules allow it;
    anything less clear is left for an organiser and returns False."""
    policy = settings.registration.substitutes
    if not substitute_allowed(store, settings, withdrawn, newcomer):
        return False
    same_org = same_organisation(settings, newcomer, withdrawn)
    # The organisation comes from the address (the table), else the seat's own if they share it.
    organisation = domain_organisation(settings, newcomer.email) or (
        withdrawn["organisation"] if same_org else None)
    cancel(store, settings, withdrawn, origin, now, outcome,
           reason=f"replaced by {newcomer.email}, who takes over the "
                  f"{'seat' if withdrawn['status'] == 'confirmed' else 'waiting-list place'}",
           substitute_name=newcomer.name or newcomer.email)
    registration_id = store.add_registration(
        email=newcomer.email, name=newcomer.name, name_key=name_key(newcomer.name),
        organisation=organisation, org_key=org_key(organisation, newcomer.email),
        charter=is_charter(settings, organisation, newcomer.email),
        arrived_at=withdrawn["arrived_at"], arrival_uid=withdrawn["arrival_uid"],
        arrival_index=withdrawn["arrival_index"], message_id=origin.message,
        registered_by=origin.sender, capacity=settings.event.capacity, max_per_org=0,
        source=origin.source, now=now, substitute_for=withdrawn["id"],
        status=withdrawn["status"],
    )
    row = store.registration(registration_id)
    store.log(now=now, actor=origin.actor, action="substitute", email=newcomer.email,
              registration_id=registration_id, message=origin.message,
              reason=f"takes the place of {withdrawn['email']} ({withdrawn['status']}), "
                     f"policy {policy}")
    queue_reply(store, settings, "substitute", person=_person(row), origin=origin,
                registration_id=registration_id, now=now,
                extra={"replaces": withdrawn["name"] or withdrawn["email"],
                       "status": row["status"], "position": store.waitlist_position(registration_id),
                       "charter": bool(row["charter"])})
    outcome.replies += 1
    return True


@dataclass
class CancellationTargets:
    found: list[sqlite3.Row] = field(default_factory=list)
    unknown: list[Participant] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def cancellation_targets(store: Store, sender: str | None,
                         people: tuple[Participant, ...]) -> CancellationTargets:
    """Whom a cancellation withdraws. Only a participant's own address, or whoever registered
    them, may withdraw them; a name counts only when it matches exactly one registration that
    the sender made."""
    out = CancellationTargets()
    for person in people or (Participant(None, sender, None),):
        if person.email:
            row = store.live_registration(person.email)
            if row is None:
                out.unknown.append(person)
            elif sender in (row["email"], row["registered_by"]):
                out.found.append(row)
            else:
                out.problems.append(f"{sender} asks to cancel {person.email}, whom they did not "
                                    "register; only the person or their registrant may")
            continue
        matches = store.live_by_name(name_key(person.name) or "")
        mine = [r for r in matches if r["registered_by"] == sender or r["email"] == sender]
        if len(mine) == 1:
            out.found.append(mine[0])
        elif not matches:
            out.unknown.append(person)
        else:
            out.problems.append(f"the name {person.name!r} matches {len(matches)} registration(s), "
                                f"{len(mine)} of them made by {sender}: an organiser must choose")
    return out


def tell_not_registered(store: Store, settings: Settings, person: Participant, origin: Origin,
                        now: dt.datetime, outcome: Outcome) -> None:
    to = {"name": origin.sender_name, "email": origin.sender, "organisation": None}
    if origin.sender and origin.sender not in settings.own_addresses:
        queue_reply(store, settings, "not_registered", person=to, origin=origin,
                    registration_id=None, now=now, copy_sender=False,
                    extra={"named": person.name or person.email})
        outcome.replies += 1
    store.log(now=now, actor=origin.actor, action="cancel_unknown",
              email=person.email or origin.sender, message=origin.message,
              reason=f"cancellation for {person.email or person.name}, who is not registered; "
                     "told the sender, and an organiser should look")
    outcome.review("cancellation for someone not registered")
