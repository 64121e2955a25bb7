"""Read stored mails again after understanding improved: what would change, and apply only what a person confirms.

The rules that make a second reading safe to apply:
- only additions: people the new reading finds who hold no registration get one, in the queue at
  the mail's own arrival time, a seat only when one is free (as `organiser.resolve` does); a
  cancellation withdraws only a registration that existed before the mail arrived;
- nothing is undone: a registration an earlier reading made stays, and is listed with the
  command an organiser can run if it was wrong; no one confirmed loses a seat;
- no second reply: an address this mail already caused a reply to gets nothing more;
- a substitute named in a cancellation is left to an organiser (`leernetwerk resolve`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from processor.desk import organiser, pipeline, registry, review
from processor.config import Settings
from processor.display import shell_command
from processor.store.db import Store
from processor.understand import understand
from processor.understand.model import Options, Participant, Reading


class ReprocessError(Exception):
    """The selection cannot be read (a bad --ids range); nothing was changed."""


def parse_ids(text: str) -> list[int]:
    """"3,5-9" → [3, 5, 6, 7, 8, 9]."""
    ids: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            start, end = int(low), int(high) if dash else int(low)
        except ValueError:
            raise ReprocessError(f"--ids: {part!r} is not a number or a range like 5-9") from None
        if end < start:
            raise ReprocessError(f"--ids: {part!r} runs backwards")
        if end - start > 100_000:
            raise ReprocessError(f"--ids: {part!r} is too wide a range")
        ids.extend(range(start, end + 1))
    if not ids:
        raise ReprocessError("--ids: give mail ids like 3,5-9")
    return sorted(set(ids))


def _person(p: Participant) -> str:
    text = f"{p.name} <{p.email}>" if p.name and p.email else (p.email or p.name or "?")
    return text + (f" ({p.organisation})" if p.organisation else "")


def summary(reading: Reading | None) -> dict | None:
    if reading is None:
        return None
    return {"kind": reading.kind, "participants": [p.as_dict() for p in reading.participants],
            "substitutes": [p.as_dict() for p in reading.substitutes],
            "needs_review": reading.needs_review, "reasons": list(reading.reasons)}


@dataclass
class Mail:
    """One stored mail read again: the two readings, what differs, what applying would do."""

    id: int
    arrived_at: str
    state: str
    sender: str | None
    subject: str
    old: Reading | None
    new: Reading | None = None
    error: str | None = None
    skipped: str | None = None
    differences: list[str] = field(default_factory=list)
    plan: organiser.Result | None = None
    left_as_is: list[str] = field(default_factory=list)
    applied: bool = False

    @property
    def changed(self) -> bool:
        return self.skipped is None and self.new is not None and bool(self.differences)

    def as_data(self) -> dict:
        return {
            "id": self.id, "arrived_at": self.arrived_at, "state": self.state,
            "sender": self.sender, "subject": self.subject, "changed": self.changed,
            "skipped": self.skipped, "error": self.error, "differences": self.differences,
            "old": summary(self.old), "new": summary(self.new),
            "would_do": self.plan.events if self.plan else [],
            "replies": self.plan.replies if self.plan else 0,
            "left_as_is": self.left_as_is, "applied": self.applied,
        }

    def as_text(self) -> str:
        head = (f"[{self.id}] {self.arrived_at[:16]}  {self.sender or '?'}  "
                f"\u201c{self.subject}\u201d ({self.state})")
        if self.skipped:
            return f"{head}\n    skipped: {self.skipped}"
        if self.error:
            return f"{head}\n    still cannot be read: {self.error}"
        if not self.differences:
            return f"{head}\n    unchanged"
        lines = [head] + [f"    {d}" for d in self.differences]
        if self.plan is not None:
            if self.plan.events:
                lines += [f"    would do:   {e['action']}: {e['email'] or '-'} — {e['reason']}"
                          for e in self.plan.events]
            lines.append(f"    mails:      {self.plan.replies} would leave" if self.plan.replies
                         else "    mails:      none")
        lines += [f"    left as is: {note}" for note in self.left_as_is]
        return "\n".join(lines)


def differences(old: Reading | None, new: Reading) -> list[str]:
    if old is None:
        return [f"kind:         (never understood) → {new.kind}"] + [
            f"participant:  + {_person(p)}" for p in new.participants]
    out = []
    if old.kind != new.kind:
        out.append(f"kind:         {old.kind} → {new.kind}")
    for label, before, after in (("participant", old.participants, new.participants),
                                 ("substitute", old.substitutes, new.substitutes)):
        out += [f"{label + ':':<13} - {_person(p)}" for p in before if p not in after]
        out += [f"{label + ':':<13} + {_person(p)}" for p in after if p not in before]
    if old.needs_review != new.needs_review:
        out.append("review:       " + ("needed → not needed" if old.needs_review
                                       else "not needed → needed"))
    out += [f"reason:       - {r}" for r in old.reasons if r not in new.reasons]
    out += [f"reason:       + {r}" for r in new.reasons if r not in old.reasons]
    return out


def select(store: Store, *, ids: list[int] | None = None, review: bool = False) -> list:
    if review:
        return store.stored_messages(states=("review", "quarantined"))
    rows = store.stored_messages(ids)
    missing = sorted(set(ids or ()) - {r["id"] for r in rows})
    if missing and len(missing) == len(ids or ()):
        raise ReprocessError(f"no stored mail has id {', '.join(map(str, missing[:10]))}")
    return rows


def read_again(row, options: Options) -> Mail:
    old = review.stored_reading(row["reading"]) if row["reading"] else None
    mail = Mail(id=row["id"], arrived_at=row["arrived_at"], state=row["state"],
                sender=old.sender if old else None, subject=old.subject if old else "", old=old)
    if row["state"] == "new":
        mail.skipped = "not applied yet; the next poll reads it with the current understanding"
    elif not row["raw"]:
        mail.skipped = "the raw mail was erased (forget or purge)"
    elif row["truncated"]:
        mail.skipped = "too large: only its headers were kept; read it in the mailbox"
    if mail.skipped:
        return mail
    try:
        mail.new = understand(row["raw"], options)
    except Exception as exc:  # the mail that broke understanding may still break it
        mail.error = f"{type(exc).__name__}: {exc}"
        return mail
    mail.sender, mail.subject = mail.new.sender, mail.new.subject
    mail.differences = differences(old, mail.new)
    return mail


def _plan_change(store: Store, settings: Settings, row, mail: Mail, now: dt.datetime):
    """The change as a function for organiser.act (dry run or for real), and what it leaves."""
    reading = mail.new
    answered = store.answered_by(row["id"])
    from_this = store.registrations_from(row["id"])
    made_here = {r["email"] for r in from_this}
    left: list[str] = []
    work_reading: Reading | None = reading
    hold_for_person = False

    if reading.kind == "registration":
        fresh = []
        for p in reading.participants:
            if p.email and (p.email in made_here or store.live_registration(p.email)):
                continue  # registered already (by this mail or another): nothing to add
            if p.email and p.email in answered:
                left.append(f"{p.email}: this mail was already answered for them; no second "
                            f"reply (`{shell_command('register', '--email', p.email)}` to add them)")
                continue
            fresh.append(p)
        work_reading = dataclasses.replace(reading, participants=tuple(fresh)) if fresh else None
    elif reading.kind == "cancellation":
        if reading.substitutes:
            left.append("a substitute is named: an organiser decides "
                        f"(`{shell_command('resolve', row['id'], '--as', 'cancellation')}` or by hand)")
            work_reading, hold_for_person = None, True
        else:
            targets = registry.cancellation_targets(store, reading.sender, reading.participants)
            chosen = []
            for r in targets.found:
                if r["message_id"] == row["id"] or r["arrived_at"] > row["arrived_at"]:
                    left.append(f"{r['email']} signed up with or after this mail: not cancelled "
                                f"(`{shell_command('cancel', r['email'])}` if meant)")
                else:
                    chosen.append(Participant(r["name"], r["email"], r["organisation"]))
            unknown = [] if reading.sender in answered else list(targets.unknown)
            people = tuple(chosen + unknown)
            work_reading = dataclasses.replace(reading, participants=people) if people else None
    # An earlier, wrong reading may have registered someone this one does not name.
    named = {p.email for p in reading.participants}
    for r in from_this:
        if r["email"] not in named and r["status"] != "cancelled":
            left.append(f"{r['email']} was registered from this mail ({r['status']}) and stays "
                        f"so (`{shell_command('cancel', r['email'])}` if that was wrong)")

    actor = organiser.actor_name()

    def change(outcome) -> None:
        if work_reading is not None:
            done = pipeline.apply_reading(pipeline.Work(store, settings, row, work_reading, now))
            state = done.state
            outcome.replies += done.replies
        else:
            state = "review" if (reading.needs_review or hold_for_person
                                 or reading.kind == "other") else "processed"
        store.set_reading(row["id"], state=state, kind=reading.kind,
                          reading_json=pipeline._reading_json(reading), now=now)
        store.log(now=now, actor=actor, action="reprocessed", email=reading.sender,
                  message=row["id"],
                  reason=f"mail {row['id']} read again ({mail.old.kind if mail.old else 'unread'}"
                         f" → {reading.kind}), now {state}")

    return change, left


def plan(store: Store, settings: Settings, mail: Mail, now: dt.datetime) -> Mail:
    """Fill in what applying would do, by doing it in a transaction that is rolled back."""
    row = store.message(mail.id)
    change, mail.left_as_is = _plan_change(store, settings, row, mail, now)
    mail.plan = organiser.act(store, change, dry_run=True)
    return mail


def apply(store: Store, settings: Settings, mail: Mail, now: dt.datetime) -> organiser.Result:
    row = store.message(mail.id)
    if row["state"] != mail.state:
        raise ReprocessError(f"mail {mail.id} changed meanwhile ({mail.state} → {row['state']}); "
                             "run reprocess again")
    change, mail.left_as_is = _plan_change(store, settings, row, mail, now)
    result = organiser.act(store, change, dry_run=False)
    mail.plan, mail.applied = result, True
    return result
