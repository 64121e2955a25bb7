"""Apply what a mail means to the registry: seats in arrival order, the waiting list, replies, the log.

Every function here runs inside the caller's transaction (see pipeline.apply_one), so a
registration, the replies it causes and the event-log row explaining it commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field

from processor import compose
from processor.config import Settings
from processor.db import Store
from processor.understand.model import Participant, Reading

REPLY_PRIORITY = 0


@dataclass
class Outcome:
    """What applying one mail did; `state` is the message's final state."""

    state: str = "processed"
    notes: list[str] = field(default_factory=list)
    replies: int = 0


@dataclass(frozen=True)
class Origin:
    """Where a registration comes from: its mail and arrival, the queue's sort key."""

    message: int | None
    arrived_at: str
    uid: int
    sender: str | None
    sender_name: str | None
    in_reply_to: str | None
    references: tuple[str, ...]


def origin_of(message: sqlite3.Row, reading: Reading) -> Origin:
    return Origin(
        message=message["id"],
        arrived_at=message["arrived_at"],
        uid=message["uid"],
        sender=reading.sender,
        sender_name=reading.sender_name,
        in_reply_to=reading.message_id,
        references=reading.references,
    )


def queue_reply(store: Store, settings: Settings, kind: str, *, person: dict, origin: Origin,
                registration_id: int | None, now: dt.datetime, extra: dict) -> None:
    """Render the reply now and store it whole, so that a resend after a crash is the same mail."""
    context = compose.event_context(settings, now) | {"person": person} | extra
    rendered = compose.render(settings, kind, context)
    own = settings.own_addresses
    cc = []
    if origin.sender and origin.sender != person["email"] and origin.sender not in own:
        cc.append((origin.sender_name, origin.sender))
    msg = compose.build(
        settings, rendered, to=[(person["name"], person["email"])], cc=cc,
        in_reply_to=origin.in_reply_to, references=origin.references, now=now,
    )
    store.queue_mail(
        kind=kind, priority=REPLY_PRIORITY, order_key=origin.arrived_at,
        sender=settings.smtp.from_address,
        recipients=[person["email"], *(e for _, e in cc)],
        message_id=msg["Message-ID"], raw=bytes(msg), registration_id=registration_id,
        source_message=origin.message, now=now,
    )


def _person(row: sqlite3.Row) -> dict:
    return {"name": row["name"], "email": row["email"], "organisation": row["organisation"]}


def register(store: Store, settings: Settings, person: Participant, index: int, origin: Origin,
             now: dt.datetime, outcome: Outcome, actor: str = "worker") -> None:
    existing = store.live_registration(person.email)
    if existing is not None:
        position = store.waitlist_position(existing["id"])
        queue_reply(store, settings, "already_registered", person=_person(existing),
                    origin=origin, registration_id=existing["id"], now=now,
                    extra={"status": existing["status"], "position": position})
        store.log(now=now, actor=actor, action="already_registered", email=person.email,
                  registration_id=existing["id"], message=origin.message,
                  reason=f"{person.email} is already {existing['status']}"
                  + (f" (waiting list position {position})" if position else "")
                  + "; no second seat, told where they stand")
        outcome.replies += 1
        return
    registration_id = store.add_registration(
        email=person.email, name=person.name, organisation=person.organisation,
        arrived_at=origin.arrived_at, arrival_uid=origin.uid, arrival_index=index,
        message_id=origin.message, registered_by=origin.sender,
        capacity=settings.event.capacity, now=now,
    )
    row = store.registration(registration_id)
    registered_by = None
    if origin.sender and origin.sender != person.email:
        registered_by = origin.sender_name or origin.sender
    if row["status"] == "confirmed":
        reason = (f"seat given: fewer than {settings.event.capacity} confirmed at arrival "
                  f"{origin.arrived_at}")
        queue_reply(store, settings, "confirmation", person=_person(row), origin=origin,
                    registration_id=registration_id, now=now,
                    extra={"registered_by": registered_by})
    else:
        position = store.waitlist_position(registration_id)
        reason = (f"waitlisted at position {position}: all {settings.event.capacity} seats "
                  f"were taken at arrival {origin.arrived_at}")
        queue_reply(store, settings, "waitlist", person=_person(row), origin=origin,
                    registration_id=registration_id, now=now,
                    extra={"registered_by": registered_by, "position": position})
    store.log(now=now, actor=actor, action=row["status"], email=person.email,
              registration_id=registration_id, message=origin.message, reason=reason)
    outcome.replies += 1


def cancel(store: Store, settings: Settings, email: str, origin: Origin, now: dt.datetime,
           outcome: Outcome, actor: str = "worker", reason: str = "") -> bool:
    existing = store.live_registration(email)
    if existing is None:
        return False
    was_confirmed = existing["status"] == "confirmed"
    store.set_status(existing["id"], "cancelled", now)
    store.log(now=now, actor=actor, action="cancelled", email=email,
              registration_id=existing["id"], message=origin.message,
              reason=reason or f"cancellation received for {email} (was {existing['status']})")
    queue_reply(store, settings, "cancelled", person=_person(existing), origin=origin,
                registration_id=existing["id"], now=now,
                extra={"was_waitlisted": not was_confirmed})
    outcome.replies += 1
    if was_confirmed:
        promote_first_waiting(store, settings, origin, now, outcome, actor)
    return True


def promote_first_waiting(store: Store, settings: Settings, origin: Origin, now: dt.datetime,
                          outcome: Outcome, actor: str = "worker") -> None:
    """Fill free seats from the head of the waiting list, in arrival order, in this transaction."""
    while store.confirmed_count() < settings.event.capacity:
        first = store.first_waiting()
        if first is None:
            return
        store.set_status(first["id"], "confirmed", now)
        store.log(now=now, actor=actor, action="promoted", email=first["email"],
                  registration_id=first["id"], message=origin.message,
                  reason=f"a seat came free; first on the waiting list (arrived {first['arrived_at']})")
        # The promotion mail answers the person's own signup, not the mail that freed the seat.
        signup = store.message(first["message_id"]) if first["message_id"] else None
        reading_origin = Origin(
            message=first["message_id"], arrived_at=first["arrived_at"],
            uid=first["arrival_uid"], sender=None, sender_name=None,
            in_reply_to=signup["message_id"] if signup else None, references=(),
        )
        queue_reply(store, settings, "promoted", person=_person(first), origin=reading_origin,
                    registration_id=first["id"], now=now, extra={})
        outcome.replies += 1
