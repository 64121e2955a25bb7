"""The session series as iCalendar files: PUBLISH for the sessions still ahead, CANCEL to take them out."""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata

from icalendar import Calendar, Event as VEvent

from processor.config import Session, Settings

PRODID = "-//Leernetwerk//Registratie via mail//NL"
SERIES_FILE = "sessies.ics"
CANCEL_FILE = "afmelding.ics"
UPDATE_FILE = "wijziging.ics"
SESSION_CANCEL_FILE = "geschrapt.ics"

Attachment = tuple[str, str, str, bytes]  # filename, maintype, subtype, bytes


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "event"


def uid(settings: Settings, session: Session) -> str:
    """Stable across runs and config edits of date or place: only the name and number count."""
    return f"{_slug(settings.event.name)}-sessie-{session.number}@{settings.smtp.message_id_domain}"


def place_of(settings: Settings, session: Session) -> str:
    return session.place or settings.event.place


def link_of(settings: Settings, session: Session) -> str:
    return session.online_link or settings.event.online_link


def fingerprint(settings: Settings, session: Session) -> str:
    """What a participant's calendar shows of a session; a change here is announced to them."""
    return json.dumps({
        "start": session.starts_at.isoformat(), "end": session.ends_at.isoformat(),
        "place": place_of(settings, session), "online_link": link_of(settings, session),
        "cancelled": session.cancelled,
    }, sort_keys=True, ensure_ascii=False)


def _description(settings: Settings, session: Session) -> str:
    ev = settings.event
    lines = [f"Sessie {session.number} van het {ev.name}: {session.theme}."]
    if link_of(settings, session):
        lines.append(f"Online deelnemen: {link_of(settings, session)}")
    if session.prepare:
        lines.append(f"Voorbereiding: {session.prepare}")
    lines.append(f"Kunt u niet komen? Mail naar {ev.contact_email} met \"afmelden\", dan gaat "
                 "uw plaats naar de wachtlijst.")
    return "\n\n".join(lines)


def _vevent(settings: Settings, session: Session, sequence: int, now: dt.datetime,
            status: str) -> VEvent:
    ev = VEvent()
    ev.add("uid", uid(settings, session))
    ev.add("dtstamp", now.astimezone(dt.timezone.utc))
    ev.add("sequence", sequence)
    ev.add("summary", f"{settings.event.name} – sessie {session.number}: {session.theme}")
    # Local times with TZID: a calendar shows 14:00 on both sides of a DST change.
    ev.add("dtstart", session.starts_at)
    ev.add("dtend", session.ends_at)
    ev.add("location", place_of(settings, session))
    ev.add("description", _description(settings, session))
    if link_of(settings, session):
        ev.add("url", link_of(settings, session))
    ev.add("status", status)
    ev.add("transp", "OPAQUE")
    # Deliberately no ORGANIZER and no ATTENDEE: clients then send no replies to our mailbox.
    return ev


def _calendar(settings: Settings, method: str, events: list[VEvent]) -> bytes:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", method)
    cal.add("x-wr-calname", settings.event.name)
    cal.add("x-wr-timezone", str(settings.event.timezone))
    for event in events:
        cal.add_component(event)
    # VTIMEZONE built from zoneinfo, only for the years the events span (the default range,
    # 1970-2038, makes a file of hundreds of transitions).
    years = [e.decoded("dtstart").year for e in events] or [now_year(settings)]
    cal.add_missing_timezones(first_date=dt.date(min(years) - 1, 1, 1),
                              last_date=dt.date(max(years) + 1, 12, 31))
    return cal.to_ical()


def now_year(settings: Settings) -> int:
    return settings.event.sessions[0].date.year


def ahead(settings: Settings, now: dt.datetime) -> list[Session]:
    return [s for s in settings.event.sessions if s.starts_at > now and not s.cancelled]


def series(settings: Settings, now: dt.datetime, sequences: dict[int, int],
           sessions: list[Session] | None = None) -> bytes:
    """METHOD:PUBLISH with the given sessions (default: every session still ahead)."""
    chosen = ahead(settings, now) if sessions is None else sessions
    return _file(settings, "PUBLISH", "CONFIRMED", now, sequences, chosen)


def cancellation(settings: Settings, now: dt.datetime, sequences: dict[int, int],
                 sessions: list[Session] | None = None) -> bytes:
    """METHOD:CANCEL with the same UIDs, so that clients take the sessions out of the calendar."""
    chosen = ahead(settings, now) if sessions is None else sessions
    return _file(settings, "CANCEL", "CANCELLED", now, sequences, chosen)


# Every confirmation in the same minute carries the same file: building it (VTIMEZONE included)
# costs more than the rest of a reply, so a backlog reuses it. DTSTAMP is that minute.
_FILES: dict[tuple, bytes] = {}
_FILES_MAX = 64


def _file(settings: Settings, method: str, status: str, now: dt.datetime,
          sequences: dict[int, int], chosen: list[Session]) -> bytes:
    stamp = now.astimezone(dt.timezone.utc).replace(second=0, microsecond=0)
    key = (id(settings), method, stamp, tuple((s.number, sequences.get(s.number, 0),
                                               fingerprint(settings, s)) for s in chosen))
    data = _FILES.get(key)
    if data is None:
        if len(_FILES) >= _FILES_MAX:
            _FILES.clear()
        data = _FILES[key] = _calendar(settings, method, [
            _vevent(settings, s, sequences.get(s.number, 0), stamp, status) for s in chosen
        ])
    return data


# -- attachments of the replies (see registry.queue_reply) ----------------------------------------

def announced_sequences(store, settings: Settings, now: dt.datetime) -> dict[int, int]:
    """The SEQUENCE each session carries now. A session never announced is recorded as announced
    by this very file (in the caller's transaction); a session whose config changed since its
    last announcement gets the number the coming update mail will give it."""
    known = store.session_announcements()
    sequences = {}
    for s in settings.event.sessions:
        row = known.get(s.number)
        fp = fingerprint(settings, s)
        if row is None:
            store.announce_session(session_number=s.number, fingerprint=fp, sequence=0,
                                   cancelled=s.cancelled, now=now, only_if_new=True)
            sequences[s.number] = 0
        else:
            sequences[s.number] = row["sequence"] + (row["fingerprint"] != fp)
    return sequences


def series_attachment(store, settings: Settings, now: dt.datetime, extra: dict) -> list[Attachment]:
    if not ahead(settings, now):
        return []
    data = series(settings, now, announced_sequences(store, settings, now))
    return [(SERIES_FILE, "text", "calendar", data)]


def cancel_attachment(store, settings: Settings, now: dt.datetime, extra: dict) -> list[Attachment]:
    # Someone who only waited never had the sessions in a calendar.
    if extra.get("was_waitlisted") or not ahead(settings, now):
        return []
    data = cancellation(settings, now, announced_sequences(store, settings, now))
    return [(CANCEL_FILE, "text", "calendar", data)]


def substitute_attachment(store, settings: Settings, now: dt.datetime,
                          extra: dict) -> list[Attachment]:
    # A substitute who took over a waiting-list place gets the series once promoted.
    if extra.get("status") != "confirmed":
        return []
    return series_attachment(store, settings, now, extra)


# Reply kind → the calendar file it carries.
ATTACHMENTS = {
    "confirmation": series_attachment,
    "promoted": series_attachment,
    "substitute": substitute_attachment,
    "cancelled": cancel_attachment,
}
