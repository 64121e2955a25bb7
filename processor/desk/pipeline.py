"""One poll, as data: fetch → understand → apply (ordered steps) → mark on the server → send."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import re
import sqlite3
import traceback
from dataclasses import dataclass, field
from typing import Callable

from processor.desk import bymail, outbox, readahead, registry
from processor.clock import Clock
from processor.config import Settings
from processor.store import values
from processor.store.db import Store
from processor.mail import compose
from processor.mail.imap import Mailbox, MailboxError
from processor.desk.readahead import Reader, Unreadable
from processor.understand import load_domain_organisations, understand
from processor.understand.received import accepted_at
from processor.understand.evidence import event_terms
from processor.understand.model import Options, Reading

log = logging.getLogger(__name__)

# Mails taken from the store per query when applying: a backlog is streamed, never loaded whole.
PAGE = 200
MARK_PAGE = 2000


# --- applying one mail: small named steps, in order; the first that returns True ends it ----------

@dataclass
class Work:
    store: Store
    settings: Settings
    message: object           # sqlite3.Row of the messages table
    reading: Reading
    now: dt.datetime
    outcome: registry.Outcome = field(default_factory=registry.Outcome)

    def log(self, action: str, reason: str, email: str | None = None) -> None:
        self.store.log(now=self.now, action=action, email=email or self.reading.sender,
                       message=self.message["id"], reason=reason)

    def set_aside(self, action: str, reason: str, note: str) -> bool:
        """The mail waits for an organiser (review), with the reason in the event log."""
        self.log(action, reason)
        self.outcome.review(note)
        return True


def hold_oversized(w: Work) -> bool:
    """A mail over the size limit was kept as headers only: a person reads it in the mailbox."""
    if not w.message["truncated"]:
        return False
    return w.set_aside(
        "held_for_review", f"mail of {w.message['size']:,} bytes is over the limit of "
        f"{w.settings.mailbox.max_message_bytes:,}: not downloaded whole; read it in the mailbox",
        "held: too large")


# How far into a bounce to look for the Message-ID of the mail it returns: DSNs put the
# original's headers after a short report; a whole returned mail may follow, unread.
_BOUNCE_SCAN_BYTES = 256 * 1024


def thread_ids(reading) -> set[str]:
    """The Message-IDs a mail answers: In-Reply-To and References."""
    return {i for i in (reading.in_reply_to, *reading.references) if i}


def our_message_ids(raw: bytes, domain: str) -> set[str]:
    """The desk's own Message-IDs a mail names anywhere in its first bytes: In-Reply-To,
    References, or the returned original's headers (message/rfc822, text/rfc822-headers)."""
    if not domain:
        return set()
    pattern = re.compile(rb"<[^<>\s]{1,250}@" + re.escape(domain.encode("idna")) + rb">",
                         re.IGNORECASE)
    return {m.decode("ascii", "replace") for m in pattern.findall(raw[:_BOUNCE_SCAN_BYTES])}


def hold_foreign_bounces(w: Work) -> bool:
    """A delivery failure counts only for a mail the desk sent to that address. Anyone can
    write a DSN naming a participant (issue 16): one that names none of our sent mails, or
    a recipient they did not go to, waits for a person instead of listing them as bounced
    with a ready cancel command."""
    if w.reading.kind != "bounce" or not w.reading.bounced_recipients:
        return False
    named = our_message_ids(w.message["raw"], w.settings.smtp.message_id_domain)
    named |= thread_ids(w.reading)
    sent_to = w.store.recipients_of_sent(sorted(named))
    strangers = [r for r in w.reading.bounced_recipients if r.lower() not in sent_to]
    if not strangers:
        return False
    return w.set_aside(
        "bounce_unrelated", f"delivery failure for {', '.join(strangers)} from "
        f"{w.reading.sender or 'no sender'} names no mail the desk sent them: possibly forged, "
        "not counted as a bounce", "bounce not tied to our mail")


def skip_machines(w: Work) -> bool:
    """Bounces, auto-replies, lists and robots are recorded and never answered (no mail loops)."""
    if w.reading.kind not in ("bounce", "auto_reply") and w.reading.replies_allowed:
        return False
    detail = ": " + ", ".join(w.reading.bounced_recipients) if w.reading.bounced_recipients else ""
    w.log(f"received_{w.reading.kind}", f"{w.reading.kind} from {w.reading.sender or 'no sender'}"
          f"{detail}; never answered automatically")
    w.outcome.notes.append(f"{w.reading.kind}: not answered")
    return True


def hold_unauthenticated(w: Work) -> bool:
    """A signup or cancellation our mail server could not tie to its sender (DMARC fails) may
    be forged: it takes effect only when an organiser confirms it."""
    if w.reading.authentication != "fail" or w.reading.kind not in ("registration", "cancellation"):
        return False
    return w.set_aside(
        "held_for_review", f"{w.reading.kind} from {w.reading.sender} failed sender "
        "authentication (DMARC/SPF/DKIM): possibly forged, nothing applied or answered",
        "held: sender not authenticated")


def hold_large_lists(w: Work) -> bool:
    """One mail must not make us write to a crowd of strangers: a person decides first."""
    limit = w.settings.max_participants_per_mail
    if len(w.reading.participants) <= limit:
        return False
    return w.set_aside(
        "held_for_review", f"{len(w.reading.participants)} participants in one mail, more than "
        f"the {limit} allowed; nothing applied until an organiser resolves it",
        "held: too many participants")


def set_aside_other(w: Work) -> bool:
    """Questions, thanks and anything unclear go to the organisers, unanswered."""
    if w.reading.kind != "other":
        return False
    return w.set_aside(
        "needs_review", "not a signup or cancellation: "
        + ("; ".join(w.reading.reasons) or "for an organiser to read"), "other: set aside")


def apply_registration(w: Work) -> bool:
    if w.reading.kind != "registration":
        return False
    origin = registry.origin_of(w.message, w.reading)
    for index, person in enumerate(w.reading.participants):
        if not person.email:
            w.set_aside("needs_review", f"{person.name or 'a participant'} was named without a "
                        "mail address; an organiser must add them", "participant without address")
            continue
        registry.register(w.store, w.settings, person, index, origin, w.now, w.outcome)
        if not person.email.isascii():
            # Kept in its arrival order and answered where the relay speaks SMTPUTF8, but an
            # accent in a local part is far more often a typo than a real mailbox: a person
            # checks it the same day instead of a seat going to an address nobody reads.
            w.set_aside("address_check", f"{person.email} has non-ASCII characters: check it "
                        "for a typo (the reply may not be deliverable)", "non-ASCII address")
    if not w.reading.participants:
        w.set_aside("needs_review", "a signup in which no participant was found", "no participant")
    return True


def answers_our_mail(w: Work, row) -> bool:
    """The participant's own answer to a mail the desk sent about this registration to her
    alone: it names that mail's Message-ID, which nobody else was shown. A mail with a Cc (a
    registrant's copy) does not count: the one copied could otherwise cancel the other."""
    named = sorted(thread_ids(w.reading))
    sender = (w.reading.sender or "").lower()
    return bool(named) and sender == row["email"].lower() and \
        row["id"] in w.store.registrations_mailed_alone(named, sender)


def apply_cancellation(w: Work) -> bool:
    if w.reading.kind != "cancellation":
        return False
    origin = registry.origin_of(w.message, w.reading)
    targets = registry.cancellation_targets(w.store, w.reading.sender, w.reading.participants)
    for problem in targets.problems:
        w.set_aside("needs_review", problem, problem)
    # Anyone can write any From. Without our server's verdict that the sender is who the From
    # says ("fail" was held before), a withdrawal waits for the participant's own confirmation
    # from their registered address, or for an organiser (issue 16). The participant's answer
    # to a mail the desk sent her alone about that registration is such a confirmation already:
    # it names our Message-ID (random), as a confirmation link carries its code.
    def confirm_first(row) -> bool:
        return w.reading.authentication != "pass" and not answers_our_mail(w, row)

    substitutes = [p for p in w.reading.substitutes if p.email]
    if w.reading.substitutes:
        if len(targets.found) == 1 and len(substitutes) == 1 and not targets.unknown:
            withdrawn, newcomer = targets.found[0], substitutes[0]
            if confirm_first(withdrawn) and registry.substitute_allowed(w.store, w.settings, withdrawn,
                                                             newcomer):
                if bymail.ask_participant(w, "substitute", withdrawn, newcomer):
                    return True
                return w.set_aside(
                    "held_for_review", f"substitution of {withdrawn['email']} by "
                    f"{newcomer.email} from a sender our mail server did not vouch for: an "
                    "organiser confirms it", "substitute waits for an organiser")
            if not confirm_first(withdrawn) and registry.substitute(w.store, w.settings, withdrawn,
                                                         newcomer, origin, w.now, w.outcome):
                return True
        # A substitute the rules do not cover: nothing changes until an organiser decides.
        return w.set_aside(
            "needs_review", "a substitute was named, but not one the rules allow to take over "
            f"(policy {w.settings.registration.substitutes}): an organiser decides",
            "substitute needs an organiser")
    for row in targets.found:
        if confirm_first(row):
            if not bymail.ask_participant(w, "cancel", row):
                w.set_aside("held_for_review", f"cancellation of {row['email']} from a sender "
                            "our mail server did not vouch for: an organiser confirms it",
                            "cancellation waits for an organiser")
            continue
        registry.cancel(w.store, w.settings, row, origin, w.now, w.outcome,
                        reason=f"cancellation by mail from {w.reading.sender} "
                               f"(was {row['status']})")
    for person in targets.unknown:
        if not w.reading.names_the_event:
            # "Not registered" sent to whoever wrote "cancel" would answer spam: a person looks first.
            w.set_aside("needs_review", f"cancellation for {person.email or person.name}, who is not registered, "
                        "in a mail that does not name the event: not answered", "cancellation: unknown person")
            continue
        registry.tell_not_registered(w.store, w.settings, person, origin, w.now, w.outcome)
    return True


def flag_review(w: Work) -> bool:
    """Applied, but an organiser should still look (private address, question, …)."""
    if w.reading.needs_review and w.outcome.state == "processed":
        w.set_aside("needs_review", "; ".join(w.reading.reasons) or "flagged", "flagged")
    return False


# The order is the policy: machines first, then what must wait for a person, then the work.
APPLY_STEPS: tuple[Callable[[Work], bool], ...] = (
    hold_oversized,
    bymail.decide,            # an organiser's decision or a participant's confirmation
    hold_foreign_bounces,
    skip_machines,
    hold_unauthenticated,
    hold_large_lists,
    set_aside_other,
    apply_registration,
    apply_cancellation,
)
AFTER_STEPS: tuple[Callable[[Work], bool], ...] = (flag_review,)


def apply_reading(w: Work) -> registry.Outcome:
    for step in APPLY_STEPS:
        if step(w):
            break
    for step in AFTER_STEPS:
        step(w)
    return w.outcome


# --- the poll -------------------------------------------------------------------------------------

class DatabaseUnavailable(Exception):
    """SQLite could not write (full disk, I/O error): nothing half-done, retry later."""


@dataclass
class PollReport:
    fetched: int = 0
    applied: int = 0
    quarantined: int = 0
    marked: int = 0
    read_ahead: int = 0        # mails a helper process understood ahead of the apply step
    mailbox_error: str | None = None
    database_error: str | None = None
    flush: outbox.FlushReport | None = None

    def summary(self) -> str:
        parts = [f"{self.fetched} fetched", f"{self.applied} applied",
                 f"{self.quarantined} quarantined", f"{self.marked} marked on the server"]
        if self.flush:
            parts.append(f"{self.flush.sent} sent, {self.flush.retried} to retry, "
                         f"{self.flush.failed} failed")
            if self.flush.throttled:
                parts.append("the relay asked to slow down")
            if self.flush.unavailable:
                parts.append(f"SMTP unavailable: {self.flush.unavailable}")
        if self.mailbox_error:
            parts.append(f"mailbox error: {self.mailbox_error}")
        if self.database_error:
            parts.append(f"DATABASE ERROR: {self.database_error}")
        return "; ".join(parts)


def understanding_options(settings: Settings) -> Options:
    organisations = {}
    if settings.organisations_file.exists():
        organisations = load_domain_organisations(settings.organisations_file)
    return Options(
        own_addresses=settings.own_addresses,
        own_message_id_domain=settings.smtp.message_id_domain,
        domain_organisations=organisations,
        max_participants=settings.max_participants_per_mail,
        trusted_authserv_ids=settings.mailbox.trusted_authserv_ids,
        # What names the event in a mail: a signup must be linked to it before the desk acts alone.
        event_terms=event_terms(settings.event.name, [s.theme for s in settings.event.sessions]),
        session_dates=tuple(s.date.isoformat() for s in settings.event.sessions),
        own_closing=compose.closing_words(settings, dt.datetime.now(dt.timezone.utc)),
    )


def identity_of(message_id: str | None, raw: bytes) -> str:
    """The Message-ID and a hash of the bytes: the same mail fetched again (a re-poll, a
    UIDVALIDITY reset) is one row, and two different mails that share a Message-ID (web forms
    and some mailers reuse them) are two (issue 16, finding 4)."""
    return values.identity(message_id, raw)


def _message_id_header(raw: bytes) -> str | None:
    """The Message-ID without a full parse; understanding reads the rest later."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    for i, line in enumerate(lines):
        if line[:11].lower() == b"message-id:":
            value = line[11:]
            for cont in lines[i + 1:]:
                if cont[:1] in (b" ", b"\t"):
                    value += cont
                else:
                    break
            text = value.decode("ascii", errors="replace").strip()
            return text[:500] or None
    return None


def fetch(mailbox: Mailbox, store: Store, settings: Settings, clock: Clock,
          report: PollReport | None = None) -> int:
    """Store new mail batch by batch; each committed batch counts even if a later one fails."""
    report = report if report is not None else PollReport()
    folder = settings.mailbox.folder
    position = store.mailbox_position(folder)
    last_uid = 0
    if position and position[0] == mailbox.uidvalidity:
        last_uid = position[1]
    elif position:
        # The mailbox was recreated: UIDs start over. Identity keeps old mail from counting twice.
        log.warning("UIDVALIDITY of %s changed (%s → %s): rescanning", folder, position[0],
                    mailbox.uidvalidity)
    uids = mailbox.new_uids(last_uid)
    stored = 0
    batch: list = []

    trusted = settings.mailbox.trusted_received_hosts

    def commit_batch():
        nonlocal stored
        with store.transaction():
            for mail in batch:
                message_id = _message_id_header(mail.raw)
                # After an outage the mailbox gets queued mail in any order; when our own
                # receiving server accepted it says who wrote first (README: arrival order).
                arrived = accepted_at(mail.raw, mail.arrived_at, trusted) or mail.arrived_at
                if store.add_message(
                    identity=identity_of(message_id, mail.raw), folder=folder,
                    uidvalidity=mail.uidvalidity, uid=mail.uid,
                    message_id=message_id, arrived_at=arrived, internal_date=mail.arrived_at,
                    first_seen_at=clock.now(), raw=mail.raw, size=mail.size,
                    truncated=mail.truncated,
                ):
                    stored += 1
                    report.fetched += 1
            store.set_mailbox_position(folder, mailbox.uidvalidity, batch[-1].uid, clock.now())
        batch.clear()

    for mail in mailbox.fetch(uids):
        batch.append(mail)
        if len(batch) >= settings.mailbox.batch_size:
            commit_batch()
    if batch:
        commit_batch()
    elif position is None or position[0] != mailbox.uidvalidity:
        with store.transaction():
            store.set_mailbox_position(folder, mailbox.uidvalidity, max(uids, default=0),
                                       clock.now())
    return stored


def _reading_json(reading: Reading) -> str:
    return json.dumps(dataclasses.asdict(reading), ensure_ascii=False, default=list)


def apply_one(store: Store, settings: Settings, options: Options, message_id: int,
              now: dt.datetime, reading: Reading | Unreadable | None = None) -> str:
    """Understand (unless read ahead) and apply one stored mail in one transaction; on any
    error, quarantine it."""
    try:
        if reading is None:
            reading = understand(store.message(message_id)["raw"], options)
        elif isinstance(reading, Unreadable):
            log.error("mail %s set aside (quarantined): %s", message_id, reading.error)
            return _set_aside(store, message_id, reading.error, now)
        with store.transaction():
            message = store.message(message_id)
            if message["state"] != "new":
                return "skipped"  # another process applied it meanwhile
            outcome = apply_reading(Work(store, settings, message, reading, now))
            store.finish_message(message_id, state=outcome.state, kind=reading.kind,
                                 reading_json=_reading_json(reading), error=None, now=now)
        return outcome.state
    except sqlite3.Error as exc:
        # The database itself failed (disk full, locked, I/O): the mail is fine and stays
        # 'new' for the next poll; quarantining it would blame the wrong thing.
        raise DatabaseUnavailable(f"the database failed while applying mail {message_id}: "
                                  f"{exc}") from exc
    except Exception as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        log.exception("mail %s set aside (quarantined): %s", message_id, error)
        return _set_aside(store, message_id, error, now)


def _set_aside(store: Store, message_id: int, error: str, now: dt.datetime) -> str:
    with store.transaction():
        store.finish_message(message_id, state="quarantined", kind=None, reading_json=None,
                             error=error, now=now)
        store.log(now=now, action="quarantined", message=message_id,
                  reason=f"could not be understood or applied: {error}; the raw mail is kept")
    return "quarantined"


def apply_pending(store: Store, settings: Settings, clock: Clock, report: PollReport,
                  should_stop: Callable[[], bool] = lambda: False,
                  progress: Callable[[int, int], None] | None = None,
                  sending: outbox.Alongside | None = None) -> None:
    options = understanding_options(settings)
    # A backlog (first start, a long outage) can take minutes: a person at a terminal sees how
    # far, a helper process understands the mail ahead while this one applies it, and the
    # replies already queued go out meanwhile (`sending`).
    total = store.new_message_count()
    backlog = total >= readahead.MIN_BACKLOG
    sending = sending if backlog else None
    done = 0
    with Reader(options, lambda i: store.message(i)["raw"], guarded=readahead.GUARDED,
                helper=backlog or (readahead.GUARDED and total > 0)) as reader, \
            (sending or contextlib.nullcontext()):
        while not should_stop():
            ids = store.new_message_ids(limit=PAGE)
            if not ids:
                break
            for message_id, reading in reader.readings(ids):
                if should_stop():
                    break
                state = apply_one(store, settings, options, message_id, clock.now(), reading)
                if sending:
                    sending.record()
                if progress:
                    done += 1
                    progress(done, max(total, done))
                if state == "quarantined":
                    report.quarantined += 1
                elif state != "skipped":
                    report.applied += 1
        report.read_ahead += reader.by_helper


def mark_on_server(mailbox: Mailbox, store: Store, settings: Settings) -> int:
    """Page by page: after a backlog, memory does not grow with it, and each page marked is
    recorded even if the server fails on a later one."""
    marked = 0
    while pending := store.messages_to_mark(settings.mailbox.folder, mailbox.uidvalidity,
                                            limit=MARK_PAGE):
        mailbox.mark_processed([uid for _, uid in pending])
        with store.transaction():
            store.set_marked([i for i, _ in pending])
        marked += len(pending)
    return marked


def poll(store: Store, settings: Settings, clock: Clock, *, mailbox_factory=Mailbox,
         connect_smtp=None, should_stop: Callable[[], bool] = lambda: False,
         pacer: outbox.Pacer | None = None,
         send_budget_seconds: float | None = -1,
         progress: Callable[[int, int], None] | None = None) -> PollReport:
    """One cycle. A mailbox that is down does not stop the mail already stored from being
    applied and answered; it is tried again at the next poll."""
    report = PollReport()
    flush_kwargs = {"connect": connect_smtp} if connect_smtp else {}
    pacer = pacer or outbox.pacer_for(settings)
    sending = outbox.Alongside(store, settings, clock, pacer=pacer, **flush_kwargs)
    try:
        try:
            with mailbox_factory(settings.mailbox) as mailbox:
                fetch(mailbox, store, settings, clock, report)
                apply_pending(store, settings, clock, report, should_stop, progress, sending)
                # Marked only after the apply step committed, never before.
                report.marked = mark_on_server(mailbox, store, settings)
        except MailboxError as exc:
            report.mailbox_error = str(exc)
            log.warning("mailbox unavailable: %s", exc)
            apply_pending(store, settings, clock, report, should_stop, progress, sending)
        # Sending at the relay's pace may take long: by default it yields after one poll
        # interval, so that new mail is fetched and queued in its place meanwhile.
        budget = settings.poll_interval_seconds if send_budget_seconds == -1 \
            else send_budget_seconds
        report.flush = sending.report.add(
            outbox.flush(store, settings, clock.now(), pacer=pacer, budget_seconds=budget,
                         **flush_kwargs))
    except (DatabaseUnavailable, sqlite3.Error) as exc:
        report.database_error = str(exc)
        if report.flush is None:
            report.flush = sending.report   # what went out alongside before the error
        log.error("database unavailable; nothing was half applied, retrying at the next poll: %s",
                  exc)
    record_health(store, report, clock.now())
    return report


def record_health(store: Store, report: PollReport, now: dt.datetime) -> None:
    """What `leernetwerk health` reads: did this cycle reach the mailbox and the relay."""
    try:
        with store.transaction():
            store.record_health("poll", ok=not (report.mailbox_error or report.database_error),
                                error=report.mailbox_error or report.database_error, now=now)
            if report.flush is not None:
                store.record_health("send", ok=not report.flush.unavailable,
                                    error=report.flush.unavailable, now=now)
    except sqlite3.Error as exc:
        # The database that failed the poll may fail here too; the poll's own report says so.
        log.warning("could not record the poll's health: %s", exc)
