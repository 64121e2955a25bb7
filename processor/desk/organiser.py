"""What organisers do by command: register, cancel, promote, resolve, forget; each one transaction."""

from __future__ import annotations

import datetime as dt
import getpass
import os
from dataclasses import dataclass, field
from typing import Callable

from processor.desk import registry, review
from processor.config import Settings
from processor.store.db import Store
from processor.understand.model import Participant

RESOLUTIONS = ("registration", "cancellation", "nothing")


class OrganiserError(Exception):
    """A command that cannot be carried out as asked; nothing was changed."""


class _DryRun(Exception):
    pass


@dataclass
class Result:
    """What a command did (or, with --dry-run, would do): the event-log rows it wrote."""

    dry_run: bool
    events: list[dict] = field(default_factory=list)
    replies: int = 0
    mails: list[dict] = field(default_factory=list)   # outbox rows queued: kind, recipients (JSON)

    def as_text(self) -> str:
        head = "Zou gebeuren (--dry-run, niets gewijzigd):" if self.dry_run else "Gedaan:"
        lines = [head] + [f"  {e['action']}: {e['email'] or '-'} — {e['reason']}"
                          for e in self.events]
        if self.replies:
            lines.append(f"  {self.replies} mail(s) "
                         + ("zouden vertrekken" if self.dry_run else "in de wachtrij"))
        else:
            lines.append("  geen mails")
        return "\n".join(lines)


def actor_name() -> str:
    who = os.environ.get("LEERNETWERK_ORGANISER") or getpass.getuser()
    return f"organiser:{who}"


def act(store: Store, change: Callable[[registry.Outcome], None], *, dry_run: bool) -> Result:
    """Run one change in one transaction; a dry run shows its events and then rolls back."""
    result = Result(dry_run=dry_run)
    try:
        with store.transaction():
            result = act_within(store, change)
            if dry_run:
                result.dry_run = True
                raise _DryRun
    except _DryRun:
        pass
    return result


def act_within(store: Store, change: Callable[[registry.Outcome], None]) -> Result:
    """Run one change inside the caller's transaction (a decision by mail is applied in the
    transaction of the mail that carries it). A change that fails half-way is undone to a
    savepoint, so the caller's own writes stay and the registry is as before."""
    result = Result(dry_run=False)
    outcome = registry.Outcome()
    last = store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    last_mail = store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0]
    store.conn.execute("SAVEPOINT organiser_change")
    try:
        change(outcome)
    except BaseException:
        store.conn.execute("ROLLBACK TO organiser_change")
        store.conn.execute("RELEASE organiser_change")
        raise
    store.conn.execute("RELEASE organiser_change")
    result.events = [dict(r) for r in store.conn.execute(
        "SELECT action, email, reason FROM events WHERE id > ? ORDER BY id", (last,))]
    result.mails = [dict(r) for r in store.conn.execute(
        "SELECT kind, recipients FROM outbox WHERE id > ? ORDER BY id", (last_mail,))]
    result.replies = outcome.replies
    return result


def _live(store: Store, email: str):
    row = store.live_registration(email.lower())
    if row is None:
        raise OrganiserError(f"{email} has no live registration")
    return row


# Each command is a `*_change` (checks, then the change as a function; the checks raise
# OrganiserError before anything is written) and the command itself, which runs it in its own
# transaction. A decision by mail (desk/bymail.py) runs the same `*_change` in the transaction of
# its mail: one implementation of each decision.

def register_change(store: Store, settings: Settings, *, name: str | None, email: str,
                    organisation: str | None, now: dt.datetime, actor: str | None = None):
    if "@" not in email:
        raise OrganiserError(f"{email!r} is not a mail address")
    person = Participant(name, email.lower(), organisation)
    origin = registry.by_hand(actor or actor_name(), now)
    return lambda o: registry.register(store, settings, person, 0, origin, now, o)


def register(store: Store, settings: Settings, *, name: str | None, email: str,
             organisation: str | None, now: dt.datetime, dry_run: bool = False) -> Result:
    """A signup by phone or at the desk: it arrives now and follows the same seat rules."""
    return act(store, register_change(store, settings, name=name, email=email,
                                      organisation=organisation, now=now), dry_run=dry_run)


def cancel_change(store: Store, settings: Settings, *, email: str, reason: str,
                  now: dt.datetime, actor: str | None = None):
    row = _live(store, email)
    origin = registry.by_hand(actor or actor_name(), now)
    return lambda o: registry.cancel(store, settings, row, origin, now, o,
                                     reason=f"cancelled by an organiser: {reason}")


def cancel(store: Store, settings: Settings, *, email: str, reason: str, now: dt.datetime,
           dry_run: bool = False) -> Result:
    return act(store, cancel_change(store, settings, email=email, reason=reason, now=now),
               dry_run=dry_run)


def promote(store: Store, settings: Settings, *, email: str, reason: str, now: dt.datetime,
            dry_run: bool = False) -> Result:
    """An explicit override: a waiting person gets a seat now, even past capacity."""
    if not reason.strip():
        raise OrganiserError("a promotion by hand needs a reason (--reason)")
    row = _live(store, email)
    if row["status"] != "waitlisted":
        raise OrganiserError(f"{email} is {row['status']}, not on the waiting list")
    origin = registry.by_hand(actor_name(), now)
    over = store.confirmed_count() >= settings.event.capacity
    why = f"organiser override: {reason}" + (" (beyond capacity)" if over else "")
    return act(store, lambda o: registry.promote(store, settings, row, origin, now, o, why),
               dry_run=dry_run)


def resolve(store: Store, settings: Settings, *, message_id: int, as_kind: str,
            person: Participant | None, now: dt.datetime, dry_run: bool = False) -> Result:
    """Settle a mail that needed a person. A registration keeps the mail's own arrival time for
    its place in the queue, and takes only a seat that is free: no one confirmed is bumped."""
    return act(store, resolve_change(store, settings, message_id=message_id, as_kind=as_kind,
                                     person=person, now=now), dry_run=dry_run)


def resolve_change(store: Store, settings: Settings, *, message_id: int, as_kind: str,
                   person: Participant | None, now: dt.datetime, actor: str | None = None):
    if as_kind not in RESOLUTIONS:
        raise OrganiserError(f"--as must be one of {', '.join(RESOLUTIONS)}")
    message = store.message(message_id)
    if message is None:
        raise OrganiserError(f"there is no mail with id {message_id}")
    if message["state"] not in ("review", "quarantined"):
        raise OrganiserError(f"mail {message_id} is {message['state']}, not waiting for a person")
    if message["reading"] is None and as_kind != "nothing" and person is None:
        raise OrganiserError(f"mail {message_id} was never understood; give --email (and --name)")
    reading = review.stored_reading(message["reading"])
    people = (person,) if person else tuple(p for p in reading.participants if p.email)
    if as_kind == "cancellation" and not people and reading.sender:
        # "I cannot come": the sender withdraws themselves.
        people = (Participant(reading.sender_name, reading.sender, None),)
    if as_kind != "nothing" and not people:
        raise OrganiserError(f"mail {message_id} names no one with an address; give --email")
    actor = actor or actor_name()
    origin = registry.origin_of(message, reading, actor=actor)

    def change(outcome: registry.Outcome) -> None:
        if as_kind == "registration":
            for index, p in enumerate(people):
                existing = store.live_registration(p.email)
                if existing is not None and existing["message_id"] == message_id:
                    continue  # this mail already registered them (and they had their answer)
                registry.register(store, settings, p, index, origin, now, outcome)
        elif as_kind == "cancellation":
            for p in people:
                row = store.live_registration(p.email)
                if row is None:
                    raise OrganiserError(f"{p.email} has no live registration to cancel")
                registry.cancel(store, settings, row, origin, now, outcome,
                                reason=f"cancellation confirmed by an organiser (mail {message_id})")
        store.set_message_state(message_id, "processed", now)
        # A confirmation this mail waited for (issue 16) is no longer needed.
        store.settle_requests_for(message_id, by=actor, outcome=f"resolved as {as_kind}", now=now)
        store.log(now=now, actor=actor, action="resolved", email=reading.sender,
                  message=message_id, reason=f"mail {message_id} resolved as {as_kind}")

    return change


def retry(store: Store, *, message_id: int, now: dt.datetime, dry_run: bool = False) -> Result:
    """Run a set-aside mail through understanding again at the next poll (after a fix)."""
    return act(store, retry_change(store, message_id=message_id, now=now), dry_run=dry_run)


def retry_change(store: Store, *, message_id: int, now: dt.datetime, actor: str | None = None):
    message = store.message(message_id)
    if message is None or message["state"] not in ("review", "quarantined"):
        raise OrganiserError(f"mail {message_id} is not in review or quarantine")

    def change(_outcome):
        store.set_message_state(message_id, "new", now)
        store.settle_requests_for(message_id, by=actor or actor_name(), outcome="retried", now=now)
        store.log(now=now, actor=actor or actor_name(), action="retry", message=message_id,
                  reason=f"mail {message_id} ({message['state']}) will be understood again")

    return change


def forget(store: Store, *, email: str, now: dt.datetime, dry_run: bool = False) -> Result:
    email = email.lower()

    def change(_outcome):
        counts = store.forget(email, now)
        if not any(counts.values()):
            raise OrganiserError(f"nothing is known about {email}")
        store.log(now=now, actor=actor_name(), action="forgotten",
                  reason="personal data and raw mails erased on request ("
                         + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")")

    return act(store, change, dry_run=dry_run)


def purge(store: Store, settings: Settings, *, now: dt.datetime, dry_run: bool = False) -> Result:
    """After the retention period, erase everyone's personal data and every raw mail."""
    ends = settings.retention_ends
    if now < ends:
        raise OrganiserError(f"the retention period runs until {ends.isoformat()}; nothing to purge")

    def change(_outcome):
        emails = store.emails_with_personal_data()
        for email in emails:
            store.forget(email, now)
        raw = store.erase_all_raw_mail()
        store.log(now=now, actor=actor_name(), action="purged",
                  reason=f"retention ended {ends.isoformat()}: data of {len(emails)} "
                         f"address(es) and {raw} raw mail(s) erased")

    return act(store, change, dry_run=dry_run)


def history(store: Store, email: str) -> list[dict]:
    return [{"at": r["at"], "actor": r["actor"], "action": r["action"], "reason": r["reason"]}
            for r in store.history(email.lower())]


def announce_change(store: Store, settings: Settings, *, session: int, text: str,
                    now: dt.datetime, actor: str | None = None):
    """An announcement to everyone confirmed about one session (the venue's address, a change
    of room): the organiser's own words, one mail per participant."""
    chosen = next((s for s in settings.event.sessions if s.number == session), None)
    if chosen is None:
        raise OrganiserError(f"there is no session {session}")
    if not text.strip():
        raise OrganiserError("an announcement needs a text")
    actor = actor or actor_name()
    origin = registry.by_hand(actor, now)

    def change(outcome: registry.Outcome) -> None:
        from processor.mail import compose

        info = {"number": chosen.number, "theme": chosen.theme,
                "date": compose.dutch_date(chosen.date), "hours": compose.dutch_hours(chosen)}
        people = store.confirmed_participants()
        for row in people:
            registry.queue_reply(store, settings, "announcement",
                                 person={"name": row["name"], "email": row["email"],
                                         "organisation": row["organisation"]},
                                 origin=origin, registration_id=row["id"], now=now,
                                 extra={"session": info, "message": text.strip()})
            outcome.replies += 1
        store.log(now=now, actor=actor, action="announced",
                  reason=f"announcement about session {session} to {len(people)} confirmed "
                         "participant(s)")

    return change
