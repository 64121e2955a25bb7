"""What reminders and session updates are due at a moment, queued in the outbox exactly once."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from processor.mail import compose, ical
from processor.clock import iso
from processor.config import Session, Settings
from processor.store.db import Store

log = logging.getLogger(__name__)

REMINDER_PRIORITY = 1
# The worker checks every few minutes; a reminder queued later than this after its moment was
# caught up (the worker was down) and the digest says so.
LATE_AFTER = dt.timedelta(minutes=30)


# -- the pure part: plain data in, plain data out -------------------------------------------------

@dataclass(frozen=True)
class Participant:
    registration_id: int
    email: str
    name: str | None
    confirmed_since: dt.datetime


@dataclass(frozen=True)
class Due:
    participant: Participant
    session: Session
    lead_days: int
    sequence: int
    due_at: dt.datetime
    late: bool

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.participant.registration_id, self.session.number, self.lead_days,
                self.sequence)


@dataclass(frozen=True)
class Change:
    """A session as the config has it now, compared with what participants were last told."""

    session: Session
    fingerprint: str
    sequence: int
    kind: str  # "first" (never announced), "changed", "cancelled", or "silent" (not mailed)

    @property
    def announced(self) -> bool:
        return self.kind in ("changed", "cancelled")


def due_moment(session: Session, lead_days: int, send_time: dt.time) -> dt.datetime:
    """send_time on the local calendar day lead_days before the session. Counting days on the
    local calendar (not 24-hour steps) keeps 10:00 at 10:00 across a DST change."""
    day = session.date - dt.timedelta(days=lead_days)
    return dt.datetime.combine(day, send_time, tzinfo=session.timezone)


def due_reminders(sessions: tuple[Session, ...] | list[Session], lead_days: tuple[int, ...],
                  send_time: dt.time, participants: list[Participant],
                  recorded: set[tuple[int, int, int, int]], sequences: dict[int, int],
                  now: dt.datetime) -> list[Due]:
    """The reminders to send at `now`.

    Per session still ahead, only the latest reminder whose moment has come counts: when the 7-day
    and the 1-day one are both due (a worker that was down), the 1-day one alone goes out. It is
    owed to participants who held their seat at its moment; someone who got a seat later waits
    for the next one (their confirmation just listed the sessions).
    """
    out = []
    for session in sessions:
        if session.cancelled or now >= session.starts_at:
            continue
        moments = [(due_moment(session, d, send_time), d) for d in lead_days]
        passed = [(m, d) for m, d in moments if m <= now]
        if not passed:
            continue
        due_at, lead = max(passed)
        sequence = sequences.get(session.number, 0)
        for p in participants:
            if p.confirmed_since > due_at:
                continue
            if (p.registration_id, session.number, lead, sequence) in recorded:
                continue
            out.append(Due(p, session, lead, sequence, due_at, late=now - due_at > LATE_AFTER))
    return out


def session_changes(settings: Settings, announced: dict[int, tuple[str, int]],
                    now: dt.datetime) -> list[Change]:
    """Sessions whose date, hours, place, link or cancellation differ from what was announced."""
    out = []
    for s in settings.event.sessions:
        fp = ical.fingerprint(settings, s)
        before = announced.get(s.number)
        if before is None:
            out.append(Change(s, fp, 0, "first"))
            continue
        old_fp, old_sequence = before
        if old_fp == fp:
            continue
        was_cancelled = json.loads(old_fp).get("cancelled", False)
        if s.starts_at <= now or (s.cancelled and was_cancelled):
            kind = "silent"  # nothing ahead to tell anyone about
        else:
            kind = "cancelled" if s.cancelled else "changed"
        out.append(Change(s, fp, old_sequence + 1, kind))
    return out


def covered_by_update(changes: list[Change], participants: list[Participant], settings: Settings,
                      now: dt.datetime) -> set[tuple[int, int, int, int]]:
    """Reminders already due for a changed session: the update mail says it all, so they are
    recorded as covered instead of sent (no two mails the same morning)."""
    keys = set()
    for c in changes:
        if c.kind != "changed":
            continue
        for lead in settings.reminders.lead_days:
            if due_moment(c.session, lead, settings.reminders.send_time) <= now:
                keys |= {(p.registration_id, c.session.number, lead, c.sequence)
                         for p in participants}
    return keys


# -- reading and writing the database -------------------------------------------------------------

@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    participants: list[Participant] = field(default_factory=list)
    covered: set = field(default_factory=set)
    due: list[Due] = field(default_factory=list)

    @property
    def announced(self) -> list[Change]:
        return [c for c in self.changes if c.announced]

    def as_data(self) -> dict:
        updates = []
        if self.announced:
            updates = [{"email": p.email, "sessions": [c.session.number for c in self.announced],
                        "kinds": [c.kind for c in self.announced]} for p in self.participants]
        return {
            "reminders": [{"email": d.participant.email, "session": d.session.number,
                           "lead_days": d.lead_days, "due_at": d.due_at.isoformat(),
                           "late": d.late} for d in self.due],
            "updates": updates,
        }


def plan(store: Store, settings: Settings, now: dt.datetime) -> Plan:
    """Everything due at `now`, read from the database; writes nothing (so --dry-run uses it)."""
    announced = {n: (r["fingerprint"], r["sequence"])
                 for n, r in store.session_announcements().items()}
    changes = session_changes(settings, announced, now)
    sequences = {n: seq for n, (_, seq) in announced.items()} | {c.session.number: c.sequence
                                                                 for c in changes}
    participants = [
        Participant(r["id"], r["email"], r["name"], dt.datetime.fromisoformat(r["confirmed_since"]))
        for r in store.confirmed_participants()
    ]
    covered = covered_by_update(changes, participants, settings, now)
    recorded = store.reminder_keys() | covered
    rem = settings.reminders
    due = due_reminders(settings.event.sessions, rem.lead_days, rem.send_time, participants,
                        recorded, sequences, now)
    return Plan(changes, participants, covered, due)


def session_context(settings: Settings, s: Session) -> dict:
    return {
        "number": s.number,
        "theme": s.theme,
        "date": compose.dutch_date(s.date),
        "hours": compose.dutch_hours(s),
        "place": ical.place_of(settings, s),
        "online_link": ical.link_of(settings, s),
        "prepare": s.prepare,
    }


def _days_until(session: Session, now: dt.datetime) -> str:
    days = (session.date - now.astimezone(session.timezone).date()).days
    if days <= 0:
        return "vandaag"
    if days == 1:
        return "morgen"
    if days == 7:
        return "over een week"
    return f"over {days} dagen"


def _queue(store: Store, settings: Settings, kind: str, p: Participant, context: dict, *,
           order_key: str, now: dt.datetime, attachments=()) -> int:
    rendered = compose.render(settings, kind, compose.event_context(settings, now)
                              | {"person": {"name": p.name, "email": p.email}} | context)
    msg = compose.build(settings, rendered, to=[(p.name, p.email)], auto_submitted="generated",
                        now=now, attachments=attachments)
    return store.queue_mail(
        kind=kind, priority=REMINDER_PRIORITY, order_key=order_key,
        sender=settings.smtp.from_address, recipients=[p.email], message_id=msg["Message-ID"],
        raw=bytes(msg), registration_id=p.registration_id, source_message=None, now=now,
    )


def _announce(store: Store, settings: Settings, plan_: Plan, now: dt.datetime) -> int:
    for c in plan_.changes:
        store.announce_session(session_number=c.session.number, fingerprint=c.fingerprint,
                               sequence=c.sequence, cancelled=c.session.cancelled, now=now)
        if c.announced:
            superseded = store.supersede_pending_reminders(
                c.session.number, f"superseded: session {c.session.number} {c.kind}")
            store.log(now=now, action=f"session_{c.kind}",
                      reason=f"session {c.session.number} {c.kind} in the config "
                             f"(now {c.fingerprint}); SEQUENCE {c.sequence}; update mail to "
                             f"{len(plan_.participants)} confirmed participants"
                             + (f"; {superseded} unsent reminders withdrawn" if superseded else ""))
    changed = [c for c in plan_.announced if c.kind == "changed"]
    cancelled = [c for c in plan_.announced if c.kind == "cancelled"]
    if not changed and not cancelled:
        return 0
    sequences = {c.session.number: c.sequence for c in plan_.announced}
    attachments = []
    if changed:
        attachments.append((ical.UPDATE_FILE, "text", "calendar",
                            ical.series(settings, now, sequences, [c.session for c in changed])))
    if cancelled:
        attachments.append((ical.SESSION_CANCEL_FILE, "text", "calendar",
                            ical.cancellation(settings, now, sequences,
                                              [c.session for c in cancelled])))
    context = {"changed": [session_context(settings, c.session) for c in changed],
               "cancelled_sessions": [session_context(settings, c.session) for c in cancelled]}
    order_key = iso(min(c.session.starts_at for c in plan_.announced))
    for p in plan_.participants:
        _queue(store, settings, "session_update", p, context, order_key=order_key, now=now,
               attachments=attachments)
        by_number = {c.session.number: c.session for c in changed}
        for reg, number, lead, sequence in plan_.covered:
            if reg == p.registration_id:
                store.record_reminder(
                    registration_id=reg, session_number=number, lead_days=lead,
                    sequence=sequence, covered_by="update", now=now,
                    due_at=due_moment(by_number[number], lead, settings.reminders.send_time))
    return len(plan_.participants)


def _remind(store: Store, settings: Settings, plan_: Plan, now: dt.datetime) -> int:
    queued = 0
    late: dict[tuple[int, int], list[str]] = defaultdict(list)
    for d in plan_.due:
        # The UNIQUE row goes in first: if it exists (another run got here), nothing is queued.
        reminder_id = store.record_reminder(
            registration_id=d.participant.registration_id, session_number=d.session.number,
            lead_days=d.lead_days, sequence=d.sequence, due_at=d.due_at, covered_by="reminder",
            now=now)
        if reminder_id is None:
            continue
        later = [session_context(settings, s) for s in settings.event.sessions
                 if s.starts_at > d.session.starts_at and not s.cancelled and s.prepare]
        outbox_id = _queue(
            store, settings, "reminder", d.participant,
            {"session": session_context(settings, d.session), "lead_days": d.lead_days,
             "when": _days_until(d.session, now), "later_preparations": later},
            order_key=iso(d.session.starts_at), now=now)
        store.link_reminder(reminder_id, outbox_id)
        queued += 1
        if d.late:
            late[(d.session.number, d.lead_days)].append(d.participant.email)
    for (number, lead), emails in late.items():
        due_at = next(d.due_at for d in plan_.due if (d.session.number, d.lead_days) == (number, lead))
        store.log(now=now, action="reminder_late",
                  reason=f"reminder caught up late: the {lead}-day reminder for session {number} "
                         f"was due {due_at.isoformat()} and went out {now.isoformat()} to "
                         f"{len(emails)} participant(s); the worker was not running at its moment")
    return queued


@dataclass
class Report:
    reminders: int = 0
    updates: int = 0
    plan: Plan | None = None

    def summary(self) -> str:
        return f"{self.reminders} reminders and {self.updates} session updates queued"


def queue_due(store: Store, settings: Settings, now: dt.datetime) -> Report:
    """Decide and queue in one write transaction (BEGIN IMMEDIATE): two runs at once take turns,
    and the second finds everything recorded. The UNIQUE key stops a duplicate even so."""
    with store.transaction():
        plan_ = plan(store, settings, now)
        updates = _announce(store, settings, plan_, now)
        reminders = _remind(store, settings, plan_, now)
    if reminders or updates:
        log.info("reminders: %s reminders, %s session updates queued", reminders, updates)
    return Report(reminders, updates, plan_)


def run_job(db_path, settings: Settings, now: dt.datetime) -> Report:
    """The scheduler's job: its own connection, so overlapping runs never share one."""
    from processor.store import db

    conn = db.connect(db_path)
    try:
        return queue_due(Store(conn), settings, now)
    finally:
        conn.close()
