"""The calendar files, parsed back with icalendar and with vobject (an independent parser), and the mails that carry them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject

from processor.mail import ical
from tests.desk import desk_settings
from tests.test_reminders import PEOPLE, Desk, local

BRUSSELS = ZoneInfo("Europe/Brussels")
UTC = dt.timezone.utc
BEFORE_SERIES = dt.datetime(2018, 5, 20, 12, tzinfo=UTC)


@pytest.fixture
def settings():
    return desk_settings()


def test_series_is_a_publish_calendar_with_its_timezone_and_no_organizer(settings):
    data = ical.series(settings, BEFORE_SERIES, {})
    cal = icalendar.Calendar.from_ical(data)
    assert cal["METHOD"] == "PUBLISH" and cal["VERSION"] == "2.0"
    [tz] = cal.walk("VTIMEZONE")
    assert tz["TZID"] == "Europe/Brussels"
    events = cal.walk("VEVENT")
    assert [e.decoded("DTSTART") for e in events] == [s.starts_at for s in settings.event.sessions]
    for event, session in zip(events, settings.event.sessions):
        assert "ORGANIZER" not in event and "ATTENDEE" not in event
        assert event.decoded("DTSTART").tzinfo.key == "Europe/Brussels"
        assert event.decoded("DTEND") == session.ends_at
        assert str(event["UID"]) == (f"leernetwerk-sustainable-development-goals-sessie-"
                                     f"{session.number}@leernetwerk.vlaanderen.be")
        assert event["SEQUENCE"] == 0 and event["STATUS"] == "CONFIRMED"
        assert str(event["LOCATION"]) == "Brussel (het adres volgt)"
        assert session.theme in str(event["DESCRIPTION"])
    assert "SDG-actieplan" in str(events[-1]["DESCRIPTION"])
    assert b"ORGANIZER" not in data


def test_uids_are_stable_across_runs_and_changes_of_date(settings):
    first = icalendar.Calendar.from_ical(ical.series(settings, BEFORE_SERIES, {}))
    later = icalendar.Calendar.from_ical(ical.series(settings, BEFORE_SERIES, {3: 2}))
    assert [str(e["UID"]) for e in first.walk("VEVENT")] == \
           [str(e["UID"]) for e in later.walk("VEVENT")]
    assert len({str(e["UID"]) for e in first.walk("VEVENT")}) == 6
    assert [e["SEQUENCE"] for e in later.walk("VEVENT")] == [0, 0, 2, 0, 0, 0]


def test_only_sessions_still_ahead(settings):
    cal = icalendar.Calendar.from_ical(ical.series(settings, local(2018, 10, 1), {}))
    assert [str(e["SUMMARY"]).split("sessie ")[1][0] for e in cal.walk("VEVENT")] == \
           ["4", "5", "6"]


def test_vobject_reads_the_same_instants_from_the_vtimezone(settings):
    """vobject builds its own tzinfo from our VTIMEZONE: a wrong one shows up as a wrong UTC time."""
    cal = vobject.readOne(ical.series(settings, BEFORE_SERIES, {}).decode())
    assert cal.method.value == "PUBLISH"
    starts = [e.dtstart.value.astimezone(UTC) for e in cal.vevent_list]
    assert starts == [
        dt.datetime(2018, 6, 26, 12, tzinfo=UTC), dt.datetime(2018, 8, 28, 12, tzinfo=UTC),
        dt.datetime(2018, 9, 25, 12, tzinfo=UTC), dt.datetime(2018, 10, 23, 12, tzinfo=UTC),
        dt.datetime(2018, 11, 20, 13, tzinfo=UTC),   # after the DST end: CET
        dt.datetime(2018, 12, 18, 13, tzinfo=UTC),
    ]
    assert all(not hasattr(e, "organizer") for e in cal.vevent_list)


def test_cancellation_uses_the_same_uids(settings):
    publish = icalendar.Calendar.from_ical(ical.series(settings, BEFORE_SERIES, {}))
    data = ical.cancellation(settings, BEFORE_SERIES, {})
    cancel = icalendar.Calendar.from_ical(data)
    assert cancel["METHOD"] == "CANCEL"
    assert [str(e["UID"]) for e in cancel.walk("VEVENT")] == \
           [str(e["UID"]) for e in publish.walk("VEVENT")]
    assert {str(e["STATUS"]) for e in cancel.walk("VEVENT")} == {"CANCELLED"}
    parsed = vobject.readOne(data.decode())
    assert parsed.method.value == "CANCEL"
    assert {e.status.value for e in parsed.vevent_list} == {"CANCELLED"}


def _calendar_parts(mail):
    return {p.get_filename(): p.get_content() for p in mail.iter_attachments()
            if p.get_content_type() == "text/calendar"}


def test_confirmation_promotion_and_cancellation_mails_carry_the_files(tmp_path, smtp_server):
    settings = desk_settings(smtp_server=smtp_server, event={"capacity": 1})
    desk = Desk(tmp_path / "state.sqlite", settings, smtp_server)
    desk.signups(PEOPLE[:2])
    confirmation, waitlist = [m for _, m in desk.log]
    assert confirmation["Subject"].startswith("Inschrijving bevestigd")
    parts = _calendar_parts(confirmation)
    assert list(parts) == ["sessies.ics"]
    assert len(icalendar.Calendar.from_ical(parts["sessies.ics"]).walk("VEVENT")) == 6
    assert _calendar_parts(waitlist) == {}
    # The plain text and HTML stay readable beside the attachment.
    assert "Uw plaats is bevestigd" in confirmation.get_body(("plain",)).get_content()

    desk.log.clear()
    desk.cancel("Anna Peeters", "anna.peeters@gent.be", local(2018, 6, 1))
    by_subject = {m["Subject"].split(":")[0].strip(): m for _, m in desk.log}
    cancel = _calendar_parts(by_subject["Uitschrijving bevestigd"])
    cal = icalendar.Calendar.from_ical(cancel["afmelding.ics"])
    assert cal["METHOD"] == "CANCEL" and len(cal.walk("VEVENT")) == 6
    promoted = _calendar_parts(by_subject["Er is een plaats vrijgekomen"])
    assert icalendar.Calendar.from_ical(promoted["sessies.ics"])["METHOD"] == "PUBLISH"
    # What the files announced is recorded, so a later config change is noticed.
    assert sorted(desk.store.session_announcements()) == [1, 2, 3, 4, 5, 6]


def test_a_real_calendar_client_imports_the_series_at_the_right_instants(settings, tmp_path):
    """calcurse (Debian) reads the file as a person's calendar would: the six Tuesdays at 14:00
    Brussels time, which is 12:00 UTC in summer and 13:00 UTC after the clock change."""
    import shutil
    import subprocess

    calcurse = shutil.which("calcurse")
    if calcurse is None:
        pytest.fail("calcurse is needed for this test: scripts/test installs it (apt-get install calcurse)")
    path = tmp_path / "series.ics"
    path.write_bytes(ical.series(settings, BEFORE_SERIES, {}))
    env = {"TZ": "UTC", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    imported = subprocess.run([calcurse, "-D", str(tmp_path / "cal"), "-q", "-i", str(path)],
                              env=env, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    listed = subprocess.run(
        [calcurse, "-D", str(tmp_path / "cal"), "-Q", "--from", "05/01/2018", "--days", "300",
         "--format-apt=%(start:%Y-%m-%dT%H:%M)|%(end:%H:%M)|%m\n"],
        env=env, capture_output=True, text=True, timeout=60)
    rows = [line.split("|") for line in listed.stdout.splitlines() if "|" in line]
    expected = [(s.starts_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"),
                 s.ends_at.astimezone(UTC).strftime("%H:%M")) for s in settings.event.sessions]
    assert [(start, end) for start, end, _ in rows] == expected
    assert expected[0][0].endswith("12:00") and expected[-1][0].endswith("13:00")
    assert all(f"sessie {s.number}" in row[2] for s, row in zip(settings.event.sessions, rows))
