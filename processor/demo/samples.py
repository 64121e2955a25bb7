"""Sample data for every outgoing mail: the one source of `preview`, and of the template check at start-up.

Each kind has one or more variants: the contexts registry.py, reminders.py and digest.py pass to
the templates, filled for a sample person. The first variant is what `preview` shows; the template
check renders them all, so that a variable misspelt in a rarely taken branch (a waiting list full
because of the organisation cap, a substitute on the waiting list) stops the worker before a
participant ever gets that mail. tests/test_samples.py checks that these contexts carry the same
keys as the real ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import traceback
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import jinja2

from processor.mail import compose, ical
from processor.config import Settings

# Every mail the program sends: replies (registry.py), then reminders.py's, then digest.py's.
REPLY_KINDS = ("confirmation", "waitlist", "already_registered", "cancelled", "promoted",
               "substitute", "registration_closed", "not_registered")
GENERATED_KINDS = ("reminder", "session_update", "digest")
# Decisions by mail (desk/bymail.py): a participant asked to confirm, an organiser's
# announcement, the desk's answer to an organiser.
BY_MAIL_KINDS = ("confirm_request", "announcement", "organiser_answer")
KINDS = REPLY_KINDS + GENERATED_KINDS + BY_MAIL_KINDS
SAMPLE_TOKEN = "LN-c-c1-f5nm0-abcdefghijklmnopqrstuvwx"
SAMPLE_MAILTO = ("mailto:inschrijvingen@example.org?subject=Bevestigen%20%5B" + SAMPLE_TOKEN
                 + "%5D&body=Code%3A%20" + SAMPLE_TOKEN)

PERSON = {"name": "Sofie Janssens", "email": "sofie.janssens@gent.be", "organisation": "Stad Gent"}
COLLEAGUE = {"name": "Pieter De Smet", "email": "pieter.desmet@gent.be", "organisation": "Stad Gent"}
SIGNUP_MESSAGE_ID = "<voorbeeld-inschrijving@gent.be>"
SAMPLE_PREPARE = "Breng het jaarverslag van uw organisatie mee (voorbeeldtekst)."
SAMPLE_LINK = "https://example.org/voorbeeld-vergaderlink"


def sample_now(settings: Settings) -> dt.datetime:
    """Two weeks before the first session: every session is still ahead, as in most real mails."""
    return (settings.event.sessions[0].starts_at - dt.timedelta(days=14)).astimezone(dt.timezone.utc)


def _session(settings: Settings, index: int, **overrides) -> dict:
    from processor.desk.reminders import session_context

    sessions = settings.event.sessions
    return session_context(settings, sessions[min(index, len(sessions) - 1)]) | overrides


def variants(settings: Settings, kind: str, now: dt.datetime | None = None) -> list[dict]:
    """The `extra` contexts of one kind (without the event and person, which every mail has)."""
    name = COLLEAGUE["name"]
    if kind == "confirmation":
        return [{"registered_by": None, "charter": False},
                {"registered_by": name, "charter": True}]
    if kind == "waitlist":
        return [{"registered_by": None, "charter": False, "position": 3, "organisation_cap": 0},
                {"registered_by": name, "charter": True, "position": 1, "organisation_cap": 2}]
    if kind == "already_registered":
        return [{"status": "confirmed", "position": None},
                {"status": "waitlisted", "position": 2}]
    if kind == "cancelled":
        return [{"was_waitlisted": False, "substitute_name": None},
                {"was_waitlisted": True, "substitute_name": None},
                {"was_waitlisted": False, "substitute_name": name}]
    if kind == "promoted":
        return [{"charter": False}, {"charter": True}]
    if kind == "substitute":
        return [{"replaces": name, "status": "confirmed", "position": None, "charter": False},
                {"replaces": name, "status": "waitlisted", "position": 2, "charter": True}]
    if kind == "registration_closed":
        return [{}]
    if kind == "not_registered":
        return [{"named": "Jan Peeters"}]
    if kind == "reminder":
        later = [_session(settings, 1, prepare=SAMPLE_PREPARE)]
        return [{"session": _session(settings, 0), "lead_days": 7, "when": "over een week",
                 "later_preparations": []},
                {"session": _session(settings, 0, prepare=SAMPLE_PREPARE, online_link=SAMPLE_LINK),
                 "lead_days": 1, "when": "morgen", "later_preparations": later}]
    if kind == "session_update":
        changed = [_session(settings, 1, online_link=SAMPLE_LINK)]
        gone = [_session(settings, 2)]
        return [{"changed": changed, "cancelled_sessions": []},
                {"changed": [], "cancelled_sessions": gone},
                {"changed": changed, "cancelled_sessions": gone}]
    if kind == "digest":
        data = digest_data(settings, now or sample_now(settings))
        return [{"digest": data}, {"digest": digest_data(settings, now or sample_now(settings),
                                                         links=True)}]
    if kind == "confirm_request":
        common = {"requested_by": COLLEAGUE["email"], "link": SAMPLE_MAILTO,
                  "token": SAMPLE_TOKEN, "expires": "3 juni 2018 om 10:00"}
        return [common | {"substitute": None}, common | {"substitute": name}]
    if kind == "announcement":
        return [{"session": {"number": 1, "theme": "De SDG's begrijpen",
                             "date": "dinsdag 26 juni 2018", "hours": "14.00 – 17.00 uur"},
                 "message": "De sessie gaat door in zaal 3 (voorbeeldtekst)."}]
    if kind == "organiser_answer":
        empty = {"refused": None, "summary": "", "done": [], "mailed": [], "command": "",
                 "confirm_link": None, "token": "", "expires": "", "attachment": None}
        return [{"answer": empty | {"subject": "Uitgevoerd: Inschrijven: mail 12",
                                    "summary": "mail 12 afgehandeld als inschrijven",
                                    "done": [f"ingeschreven, bevestigd: {PERSON['email']}"],
                                    "mailed": [f"bevestiging aan {PERSON['email']}"]}},
                {"answer": empty | {"subject": "Niet uitgevoerd: Niets doen: mail 12",
                                    "refused": "mail 12 werd al afgehandeld door "
                                               f"{COLLEAGUE['email']}"}},
                {"answer": empty | {"subject": "Bevestig uw opdracht: telefoon",
                                    "summary": f"{PERSON['name']} <{PERSON['email']}> inschrijven",
                                    "command": f"INSCHRIJVEN {PERSON['name']} <{PERSON['email']}>",
                                    "confirm_link": SAMPLE_MAILTO, "token": SAMPLE_TOKEN,
                                    "expires": "3 juni 2018 om 10:00"}},
                {"answer": empty | {"subject": "Overzicht", "summary": "3 bevestigd",
                                    "attachment": "de volledige lijst als CSV"}}]
    raise KeyError(f"unknown mail kind {kind!r}; one of: {', '.join(KINDS)}")


def context(settings: Settings, kind: str, extra: dict, now: dt.datetime) -> dict:
    """What the template sees, built the way registry.queue_reply and reminders._queue build it."""
    base = compose.event_context(settings, now)
    if kind == "digest":
        return base | extra
    return base | {"person": dict(PERSON)} | extra


# -- a scratch registry, for the digest and the calendar attachments -------------------------------

def scratch_store():
    """An in-memory database with the real schema; nothing the organisers own is touched."""
    from processor.store import db

    return db.Store(db.connect(":memory:"))


def _sample_mail(sender: dict, subject: str, body: str, when: dt.datetime) -> bytes:
    from email.headerregistry import Address
    from email.utils import format_datetime

    msg = EmailMessage()
    user, _, domain = sender["email"].partition("@")
    msg["From"] = Address(sender["name"], user, domain)
    msg["To"] = "inschrijvingen@example.org"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(domain=domain)
    msg.set_content(body)
    return bytes(msg)


def digest_data(settings: Settings, now: dt.datetime, links: bool = False) -> dict:
    """The digest's data as digest.contents() computes it, over a sample day in a scratch
    registry: a signup, one on the waiting list, a cancellation, a mail for review, one set
    aside, a refused reply and a bounce. Computed, not written by hand, so it follows digest.py."""
    from processor.desk import digest

    store = scratch_store()
    _seed_digest(store, settings, now)
    data = digest.contents(store, settings, now)
    if links:  # the buttons, with a sample key: whatever the environment holds
        from processor.desk import bymail

        bymail.digest_links(settings, data["attention"], now, key=b"voorbeeldsleutel-niet-geheim")
        data["has_links"] = True
    return data


def _seed_digest(store, settings: Settings, now: dt.datetime) -> None:
    import json

    from processor.clock import iso
    from processor.names import name_key, org_key

    earlier = now - dt.timedelta(hours=5)
    people = [PERSON, COLLEAGUE,
              {"name": "An Maes", "email": "an.maes@leuven.be", "organisation": "Stad Leuven"}]
    with store.transaction():
        ids = []
        for i, p in enumerate(people):
            status = "waitlisted" if i == 2 else None
            rid = store.add_registration(
                email=p["email"], name=p["name"], name_key=name_key(p["name"]),
                organisation=p["organisation"], org_key=org_key(p["organisation"], p["email"]),
                charter=False, arrived_at=iso(earlier + dt.timedelta(minutes=i)), arrival_uid=i + 1,
                arrival_index=0, message_id=None, registered_by=p["email"],
                capacity=settings.event.capacity, max_per_org=0, source="mail", now=earlier,
                status=status)
            ids.append(rid)
            store.log(now=earlier, action=status or "confirmed", email=p["email"],
                      registration_id=rid, reason="voorbeeld")
        store.set_status(ids[1], "cancelled", now)
        store.log(now=now, action="cancelled", email=COLLEAGUE["email"], registration_id=ids[1],
                  reason="voorbeeld: afmelding per mail")

        def stored(raw: bytes, uid: int, state: str, reading: dict | None, error: str | None):
            store.add_message(identity=f"sample-{uid}", folder="INBOX", uidvalidity=1, uid=uid,
                              message_id=None, arrived_at=earlier, first_seen_at=earlier, raw=raw)
            mid = store.conn.execute("SELECT id FROM messages WHERE uid = ?", (uid,)).fetchone()[0]
            store.finish_message(mid, state=state, kind=reading and reading["kind"],
                                 reading_json=json.dumps(reading) if reading else None,
                                 error=error, now=now)
            return mid

        question = {"kind": "other", "sender": "jan.peeters@example.org", "sender_name": "Jan Peeters",
                    "subject": "Vraag over de sessies", "participants": [], "substitutes": [],
                    "reasons": ["een vraag voor de organisatoren"], "needs_review": True,
                    "excerpt": "Is er parking voorzien bij de locatie?", "references": [],
                    "bounced_recipients": [], "message_id": None, "in_reply_to": None,
                    "replies_allowed": True}
        raw = _sample_mail({"name": "Jan Peeters", "email": "jan.peeters@example.org"},
                           "Vraag over de sessies", question["excerpt"], earlier)
        mid = stored(raw, 901, "review", question, None)
        store.log(now=now, action="needs_review", email=question["sender"], message=mid,
                  reason="voorbeeld: een vraag")
        mid = stored(b"Subject: kapotte mail\r\n\r\n", 902, "quarantined", None,
                     "ValueError: voorbeeld van een mail die niet te lezen is")
        store.log(now=now, action="quarantined", message=mid, reason="voorbeeld")
        bounce = question | {"kind": "bounce", "sender": "mailer-daemon@leuven.be",
                             "bounced_recipients": ["an.maes@leuven.be"], "needs_review": False,
                             "reasons": [], "subject": "Undeliverable"}
        mid = stored(b"Subject: Undeliverable\r\n\r\n", 903, "processed", bounce, None)
        store.log(now=now, action="received_bounce", email=bounce["sender"], message=mid,
                  reason="voorbeeld: onbestelbaar")
        outbox_id = store.queue_mail(
            kind="confirmation", priority=0, order_key=iso(earlier), sender=settings.smtp.from_address,
            recipients=[PERSON["email"]], message_id="<voorbeeld-mislukt@example.org>", raw=b"",
            registration_id=ids[0], source_message=None, now=earlier)
        store.mark_failed(outbox_id, "550 5.1.1 voorbeeld: adres bestaat niet")
        store.log(now=now, action="reply_failed", registration_id=ids[0],
                  reason="confirmation mail <voorbeeld-mislukt@example.org> refused permanently")


# -- the whole mail, as it would leave ------------------------------------------------------------

def build(settings: Settings, kind: str, *, variant: int = 0,
          now: dt.datetime | None = None) -> EmailMessage:
    """The mail `kind` for the sample person, with real headers and attachments."""
    now = now or sample_now(settings)
    options = variants(settings, kind, now)
    if not 0 <= variant < len(options):
        raise IndexError(f"{kind} has {len(options)} variant(s): 1 to {len(options)}")
    extra = options[variant]
    store = scratch_store()
    if kind == "digest":
        from processor.desk import digest

        _seed_digest(store, settings, now)
        return digest.build(store, settings, extra["digest"], now)
    rendered = compose.render(settings, kind, context(settings, kind, extra, now))
    to = [(PERSON["name"], PERSON["email"])]
    if kind in REPLY_KINDS:
        attach = ical.ATTACHMENTS.get(kind)
        return compose.build(settings, rendered, to=to, in_reply_to=SIGNUP_MESSAGE_ID, now=now,
                             attachments=attach(store, settings, now, extra) if attach else ())
    attachments = []
    if kind == "session_update":
        sessions = {s.number: s for s in settings.event.sessions}
        changed = [sessions[s["number"]] for s in extra["changed"]]
        gone = [sessions[s["number"]] for s in extra["cancelled_sessions"]]
        sequences = {s.number: 1 for s in changed + gone}
        if changed:
            attachments.append((ical.UPDATE_FILE, "text", "calendar",
                                ical.series(settings, now, sequences, changed)))
        if gone:
            attachments.append((ical.SESSION_CANCEL_FILE, "text", "calendar",
                                ical.cancellation(settings, now, sequences, gone)))
    return compose.build(settings, rendered, to=to, auto_submitted="generated", now=now,
                         attachments=attachments)


def as_text(msg: EmailMessage) -> str:
    """Headers, the text part, and a line per attachment: what a person checks in a terminal."""
    lines = [f"{k}: {v}" for k, v in msg.items()]
    text = msg.get_body(preferencelist=("plain",))
    lines.append("")
    lines.append(text.get_content() if text is not None else "(no text part)")
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True) or b""
        lines.append(f"[bijlage: {part.get_filename()} ({part.get_content_type()}, "
                     f"{len(data)} bytes)]")
    return "\n".join(lines)


# -- the template check ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TemplateProblem:
    kind: str
    template: str          # as a person finds it: templates/waitlist.txt
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.template + (f" line {self.line}" if self.line else "")
        return f"{where}: {self.message}"


def _shown(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    # A path far from here reads better whole.
    return str(path) if relative.startswith("..") else relative


def _locate(exc: BaseException, settings: Settings, kind: str) -> tuple[str, int | None]:
    """The template and line of a failure. Syntax errors carry them; an undefined variable is
    raised while rendering, and jinja2 rewrites the traceback so that its frames name the
    template files: the innermost one inside the templates folder is the culprit."""
    folder = settings.templates_dir.resolve()
    if isinstance(exc, jinja2.TemplateSyntaxError) and exc.filename:
        return _shown(Path(exc.filename)), exc.lineno
    if isinstance(exc, jinja2.TemplateNotFound):
        return _shown(folder / exc.name), None
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.suffix in (".txt", ".html") and folder in path.resolve().parents:
            line = frame.lineno
            # render() rewrites the traceback to template lines; make_module() (the subject)
            # does not, and its frames still count lines of the compiled Python ("root").
            if frame.name == "root" or frame.name.startswith(("block_", "macro")):
                env = compose._environment(settings.templates_dir)
                name = path.resolve().relative_to(folder).as_posix()
                line = env.get_template(name).get_corresponding_lineno(line)
            found = (_shown(path), line)
    return found or (_shown(folder / f"{kind}.txt"), getattr(exc, "lineno", None))


def check_templates(settings: Settings, now: dt.datetime | None = None) -> list[TemplateProblem]:
    """Render every kind, every variant, text and HTML, with StrictUndefined (compose's own
    environment): one problem per template and message, none when all is well."""
    now = now or sample_now(settings)
    problems: dict[tuple, TemplateProblem] = {}
    for kind in KINDS:
        try:
            options = variants(settings, kind, now)
        except Exception as exc:  # the digest's sample data comes from code, not a template
            problems[(kind, "data")] = TemplateProblem(kind, kind, None,
                                                       f"sample data failed: {exc}")
            continue
        for extra in options:
            try:
                compose.render(settings, kind, context(settings, kind, extra, now))
            except Exception as exc:
                template, line = _locate(exc, settings, kind)
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                problem = TemplateProblem(kind, template, line, message)
                problems.setdefault((template, line, message), problem)
    return list(problems.values())


def with_templates(settings: Settings, folder: Path) -> Settings:
    """The same settings reading templates from another folder (tests, a trial of new wording)."""
    return dataclasses.replace(settings, templates_dir=Path(folder))
