"""The organisers' daily digest: what it contains at a moment (plain data), rendered and queued once a day."""

from __future__ import annotations

import datetime as dt
import email.policy
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

from babel.dates import format_datetime

from processor.mail import compose
from processor.desk import bymail, status
from processor.desk.review import review_items
from processor.clock import iso
from processor.config import Settings
from processor.display import shell_command
from processor.store.db import Store

log = logging.getLogger(__name__)

DIGEST_PRIORITY = 2
KIND = "digest"

# What counts as a change worth a line, with its Dutch label; anything else in the log is either
# shown under "needs a person" (review, quarantine, failures, bounces, late reminders) or counted.
CHANGE_LABELS = {
    "confirmed": "inschrijving, bevestigd",
    "waitlisted": "inschrijving, wachtlijst",
    "already_registered": "schreef opnieuw in, was al ingeschreven",
    "registration_closed": "inschrijving na de sluiting, geen plaats",
    "cancelled": "uitgeschreven",
    "promoted": "van de wachtlijst naar bevestigd",
    "no_promotion": "plaats vrijgekomen, maar doorschuiven is gesloten",
    "substitute": "vervangt een collega",
    "resolved": "mail afgehandeld",
    "retry": "mail wordt opnieuw verwerkt",
    "forgotten": "gegevens gewist op verzoek",
    "purged": "bewaartermijn voorbij, persoonsgegevens gewist",
    "session_changed": "sessie gewijzigd, deelnemers verwittigd",
    "session_cancelled": "sessie geannuleerd, deelnemers verwittigd",
    # The per-address daily cap: the digest is the only place such a sender is still mentioned.
    "reply_capped": "geen automatisch antwoord meer vandaag (daglimiet per adres bereikt)",
    "reply_deferred": "mail uitgesteld tot de daglimiet per adres het toelaat (niet geschrapt)",
    "announced": "bericht verstuurd aan alle bevestigde deelnemers",
    "confirmation_asked": "afmelding of vervanging wacht op bevestiging door de deelnemer",
    "registrant_superseded": "schreef zichzelf in; wie hen eerder inschreef kan niet meer afmelden",
}
STATUS_LABELS = {"confirmed": "bevestigd", "waitlisted": "wachtlijst", "cancelled": "geannuleerd"}
MAIL_KINDS = {
    "confirmation": "bevestiging", "waitlist": "wachtlijst", "already_registered": "al ingeschreven",
    "registration_closed": "inschrijving gesloten", "cancelled": "uitschrijving",
    "promoted": "plaats vrijgekomen", "substitute": "vervanging", "not_registered": "niet ingeschreven",
    "reminder": "herinnering", "session_update": "sessiewijziging", KIND: "dagoverzicht",
    "confirm_request": "vraag om bevestiging", "announcement": "bericht aan de deelnemers",
    "organiser_answer": "antwoord aan een organisator",
}
_SESSION_NUMBER = re.compile(r"\bsession (\d+)\b")


# -- when --------------------------------------------------------------------------------------------

def local_day(settings: Settings, now: dt.datetime) -> dt.date:
    return now.astimezone(settings.event.timezone).date()


def is_due(settings: Settings, now: dt.datetime) -> bool:
    """From send_time on, all day: a worker that starts late still sends today's digest."""
    return now.astimezone(settings.event.timezone).time() >= settings.digest.send_time


# -- what it contains --------------------------------------------------------------------------------

def _local(settings: Settings, moment: str | dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.astimezone(settings.event.timezone)


def _when(settings: Settings, moment) -> str:
    """Short Dutch date and time for a table cell, e.g. "ma 21 mei 09:05"."""
    local = _local(settings, moment)
    return format_datetime(local, "EEE d MMM HH:mm", locale="nl_BE") if local else ""


def _actor(actor: str) -> str | None:
    """The organiser behind a change; None for the worker's own decisions."""
    if not actor.startswith("organiser"):
        return None
    return compose.clean(actor.partition(":")[2]) or "organisator"


def _person(name, email, organisation=None) -> dict:
    return {"name": compose.clean(name) or None, "email": compose.clean(email) or None,
            "organisation": compose.clean(organisation) or None}


def _changes(settings: Settings, events, positions: dict[str, int]) -> list[dict]:
    out = []
    for e in events:
        if e["action"] not in CHANGE_LABELS:
            continue
        label = CHANGE_LABELS[e["action"]]
        if e["action"] == "substitute" and (e["replaces_name"] or e["replaces_email"]):
            label = f"neemt de plaats over van {compose.clean(e['replaces_name'] or e['replaces_email'])}"
        if e["action"].startswith("session_"):
            number = _SESSION_NUMBER.search(e["reason"] or "")
            if number:
                label = label.replace("sessie", f"sessie {number.group(1)}", 1)
        email = e["registration_email"] or e["email"]
        now_status = e["status"]
        status_now = STATUS_LABELS.get(now_status, "") if now_status else ""
        if now_status == "waitlisted" and email in positions:
            status_now += f" (plaats {positions[email]})"
        # A change is placed by the arrival of the mail behind it; an organiser's by its moment
        # (a mail resolved a day later is news today, not yesterday).
        by = _actor(e["actor"])
        arrived = e["at"] if by else (e["message_arrived_at"] or e["at"])
        out.append({
            "event_id": e["id"],
            "action": e["action"],
            "label": label,
            "arrived_at": _local(settings, arrived).isoformat(),
            "when": _when(settings, arrived),
            "person": _person(e["name"], email, e["organisation"]),
            "status_now": status_now,
            "by": by,
            "subject": compose.clean(e["subject"]) or None,
        })
    out.sort(key=lambda c: (dt.datetime.fromisoformat(c["arrived_at"]), c["event_id"]))
    return out


def _headers(store: Store, message_id: int) -> tuple[str | None, str | None]:
    """Sender and subject of a mail that was never understood (quarantined), read from its
    headers alone; the mail may be the malformed one, so any failure leaves them unknown."""
    try:
        raw = store.message(message_id)["raw"]
        head = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
        sender = head["From"].addresses[0].addr_spec.lower() if head["From"] else None
        return sender, str(head["Subject"]) if head["Subject"] else None
    except Exception:
        return None, None


def _review(store: Store, window_messages: set[int]) -> tuple[list[dict], list[dict]]:
    review, quarantined = [], []
    for item in review_items(store):
        sender, subject = item["sender"], item["subject"]
        if not sender and not subject:
            sender, subject = _headers(store, item["id"])
        row = {
            "id": item["id"],
            "arrived_at": item["arrived_at"],
            "sender": compose.clean(sender) or None,
            "subject": compose.clean(subject) or None,
            "reasons": [compose.clean(r) for r in item["reasons"] if compose.clean(r)],
            "excerpt": compose.clean(item["excerpt"]),
            "command": item["command"],
            # Still open from an earlier digest, or new since the last one.
            "new": item["id"] in window_messages,
        }
        (quarantined if item["state"] == "quarantined" else review).append(row)
    return review, quarantined


def _failed_mail(settings: Settings, rows) -> list[dict]:
    out = []
    for r in rows:
        recipients = json.loads(r["recipients"]) if r["recipients"] else []
        to = ", ".join(recipients) or r["registration_email"] or ""
        out.append({
            "when": _when(settings, r["at"]),
            "to": compose.clean(to) or None,
            "name": compose.clean(r["name"]) or None,
            "kind": MAIL_KINDS.get(r["kind"], r["kind"] or "mail"),
            "error": compose.clean(r["last_error"] or r["reason"]),
        })
    return out


def _bounced(settings: Settings, rows) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        if r["email"] in seen:
            continue
        seen.add(r["email"])
        live = r["status"] != "cancelled"
        out.append({
            "registration_id": r["registration_id"],
            "when": _when(settings, r["arrived_at"]),
            "person": _person(r["name"], r["email"], r["organisation"]),
            "status_now": STATUS_LABELS[r["status"]],
            "command": (shell_command("cancel", r["email"], "--reason", "onbestelbaar")
                        if live else None),
        })
    return out


def _late_reminders(settings: Settings, rows) -> list[dict]:
    if not rows:
        return []
    # Imported only here: reminder_late events exist only where the reminders module runs.
    from processor.desk.reminders import LATE_AFTER

    groups: dict[tuple, list] = {}
    for r in rows:
        late = dt.datetime.fromisoformat(r["created_at"]) - dt.datetime.fromisoformat(r["due_at"])
        if late > LATE_AFTER:
            groups.setdefault((r["session_number"], r["lead_days"], r["due_at"], r["created_at"]),
                              []).append(r["email"])
    return [{"session": number, "lead_days": lead, "due": _when(settings, due),
             "sent": _when(settings, sent), "participants": len(emails)}
            for (number, lead, due, sent), emails in groups.items()]


def _next_session(settings: Settings, now: dt.datetime, confirmed: int) -> dict | None:
    for s in settings.event.sessions:
        if not s.cancelled and s.starts_at > now:
            return {"number": s.number, "theme": s.theme, "date": compose.dutch_date(s.date),
                    "hours": compose.dutch_hours(s), "confirmed": confirmed}
    return None


def contents(store: Store, settings: Settings, now: dt.datetime) -> dict:
    """Everything the digest says at `now`, as JSON-ready data; reads only (the caller holds the
    transaction, so the registry, the window and the CSV are one consistent picture)."""
    previous = store.last_mailed_digest()
    after_event = previous["last_event_id"] if previous else 0
    after_outbox = previous["last_outbox_id"] if previous else 0
    upto_event, upto_outbox = store.high_water()

    registry = status.registry_status(store, settings)
    regs = registry["registrations"]
    counts = Counter(r["status"] for r in regs)
    positions = {r["email"]: r["position"] for r in regs if r["position"]}

    events = store.digest_events(after_event, upto_event)
    actions = Counter(e["action"] for e in events)
    window_messages = {e["message"] for e in events if e["message"] is not None}
    review, quarantined = _review(store, window_messages)
    attention = {
        "review": review,
        "quarantined": quarantined,
        "failed_mail": _failed_mail(settings, store.failed_mail_between(after_event, upto_event)),
        "bounced": _bounced(settings, store.bounced_registrations_between(after_event, upto_event)),
        "late_reminders": _late_reminders(
            settings, store.late_reminders_between(after_event, upto_event)),
    }
    # Each open item gets its mailto: links, so an organiser settles it from Outlook (issue 19).
    for rows in (attention["review"], attention["quarantined"], attention["bounced"]):
        for row in rows:
            row["links"] = []
    bymail.digest_links(settings, attention, now)
    changes = _changes(settings, events, positions)
    outbox = store.outbox_counts_between(after_outbox, upto_outbox)
    attention_count = sum(len(v) for v in attention.values())
    day = local_day(settings, now)
    return {
        "day": day.isoformat(),
        "date": compose.dutch_date(day),
        "generated_at": _local(settings, now).isoformat(),
        "since": {
            "day": previous["day"] if previous else None,
            "label": (f"het vorige overzicht ({_when(settings, previous['created_at'])})"
                      if previous else "het begin van de inschrijvingen"),
        },
        "window": {"after_event": after_event, "last_event": upto_event,
                   "after_outbox": after_outbox, "last_outbox": upto_outbox},
        "headline": {
            "confirmed": counts["confirmed"],
            "capacity": registry["capacity"],
            "waitlisted": counts["waitlisted"],
            "cancelled": counts["cancelled"],
            "next_session": _next_session(settings, now, counts["confirmed"]),
        },
        "attention": attention,
        "attention_count": attention_count,
        "changes": changes,
        "quiet": {
            "mails_processed": len({e["message"] for e in events
                                    if e["message"] is not None and e["actor"] == "worker"}),
            "auto_replies": actions["received_auto_reply"],
            "bounces": actions["received_bounce"],
            "replies_queued": sum(n for (p, _), n in outbox.items() if p == 0),
            "replies_sent": outbox.get((0, "sent"), 0),
            "replies_pending": outbox.get((0, "pending"), 0),
            # Counted when queued (the outbox id window), so each mail is counted exactly once
            # even when it leaves after the digest; the states are those of this moment.
            "reminders_queued": sum(n for (p, _), n in outbox.items() if p == 1),
        },
        "registrations": len(regs),
        "quiet_day": not changes and attention_count == 0,
        "has_links": any(row["links"] for rows in (attention["review"], attention["quarantined"],
                                                   attention["bounced"]) for row in rows),
    }


# -- as a mail ---------------------------------------------------------------------------------------

def render(settings: Settings, data: dict, now: dt.datetime) -> compose.Rendered:
    # Names, subjects and excerpts from mail stay on their item's one line (README): only the
    # digest's own sentences are wrapped.
    return compose.render(settings, KIND, compose.event_context(settings, now) | {"digest": data},
                          wrap_items=False)


def attachment_name(data: dict) -> str:
    return f"inschrijvingen-{data['day']}.csv"


def build(store: Store, settings: Settings, data: dict, now: dt.datetime):
    rendered = render(settings, data, now)
    # A byte-order mark, so that Excel opens the UTF-8 names with their accents intact.
    csv_bytes = ("\ufeff" + status.export_csv(store, settings)).encode("utf-8")
    return compose.build(settings, rendered, to=[(None, a) for a in settings.organisers],
                         auto_submitted="generated", now=now,
                         attachments=[(attachment_name(data), "text", "csv", csv_bytes)])


@dataclass
class Result:
    day: str
    state: str  # queued | skipped (quiet day) | already (this day's digest is recorded) | not_due
    outbox_id: int | None = None
    data: dict | None = field(default=None, repr=False)

    def summary(self) -> str:
        return {
            "queued": f"digest for {self.day} queued (outbox {self.outbox_id})",
            "skipped": f"digest for {self.day} skipped: a quiet day (skip_when_quiet)",
            "already": f"digest for {self.day} was already sent; nothing done",
            "not_due": f"digest for {self.day} is not due before the configured send_time",
        }[self.state]


def queue(store: Store, settings: Settings, now: dt.datetime) -> Result:
    """Queue today's digest unless it is recorded. One write transaction (BEGIN IMMEDIATE) holds
    the check, the window, the CSV, the digests row and the outbox row: two runs take turns and
    the second finds the day recorded; the UNIQUE day stops a duplicate even so."""
    day = local_day(settings, now).isoformat()
    with store.transaction():
        if store.digest_for_day(day) is not None:
            return Result(day, "already")
        data = contents(store, settings, now)
        window = data["window"]
        if data["quiet_day"] and settings.digest.skip_when_quiet:
            # The cursor stays where it was: the next digest still counts this day's quiet numbers.
            store.record_digest(day=day, last_event_id=window["after_event"],
                                last_outbox_id=window["after_outbox"], now=now)
            return Result(day, "skipped", data=data)
        digest_id = store.record_digest(day=day, last_event_id=window["last_event"],
                                        last_outbox_id=window["last_outbox"], now=now)
        if digest_id is None:
            return Result(day, "already")
        msg = build(store, settings, data, now)
        outbox_id = store.queue_mail(
            kind=KIND, priority=DIGEST_PRIORITY, order_key=iso(now),
            sender=settings.smtp.from_address, recipients=list(settings.organisers),
            message_id=msg["Message-ID"], raw=bytes(msg), registration_id=None,
            source_message=None, now=now)
        store.link_digest(digest_id, outbox_id)
    log.info("digest for %s queued: %s changes, %s need a person", day, len(data["changes"]),
             data["attention_count"])
    return Result(day, "queued", outbox_id, data)


def run_job(db_path, settings: Settings, now: dt.datetime) -> Result:
    """The scheduler's job: its own connection; does nothing before send_time or once recorded."""
    from processor.store import db

    if not is_due(settings, now):
        return Result(local_day(settings, now).isoformat(), "not_due")
    conn = db.connect(db_path)
    try:
        return queue(db.Store(conn), settings, now)
    finally:
        conn.close()
