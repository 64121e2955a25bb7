"""Reminders and session updates through the 2018 series, with the injected clock, against aiosmtpd and a real SQLite file."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
from zoneinfo import ZoneInfo

import icalendar
import pytest

from processor.commands import cli
from processor import config
from processor.store import db
from processor.desk import outbox, pipeline, reminders
from processor.clock import Clock
from tests.desk import PROJECT, base_config, desk_settings, signup

BRUSSELS = ZoneInfo("Europe/Brussels")
SIGNUP_AT = dt.datetime(2018, 5, 14, 9, 0, tzinfo=BRUSSELS)
PEOPLE = [("Anna Peeters", "anna.peeters@gent.be", "Stad Gent"),
          ("Bram Claes", "bram.claes@leuven.be", "Stad Leuven"),
          ("Chris Wouters", "chris.wouters@brugge.be", "Stad Brugge"),
          ("Dirk Maes", "dirk.maes@hasselt.be", "Stad Hasselt")]  # the fourth waits
SERIES = {1: dt.date(2018, 6, 26), 2: dt.date(2018, 8, 28), 3: dt.date(2018, 9, 25),
          4: dt.date(2018, 10, 23), 5: dt.date(2018, 11, 20), 6: dt.date(2018, 12, 18)}
SUBJECT = re.compile(r"^Herinnering: sessie (\d+) op ")


def local(y, m, d, hh=10, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=BRUSSELS)


def with_sessions(smtp_server, change) -> config.Settings:
    """Settings as an organiser would have them after editing [[sessions]] in the config."""
    raw = copy.deepcopy(base_config())
    raw["event"]["capacity"] = 3
    change(raw["sessions"])
    raw["smtp"].update(host=smtp_server.host, port=smtp_server.port, security="none",
                       username="", password_env="")
    return config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")


class Desk:
    """A real SQLite file with mails applied through the pipeline, and a clock we move."""

    def __init__(self, path, settings, smtp_server):
        self.path, self.settings, self.smtp = path, settings, smtp_server
        self.store = db.Store(db.connect(path))
        self.uid = 0
        self.log: list[tuple[dt.datetime, object]] = []  # (run moment, received message)

    def restart(self):
        """A new process: a new connection on the same file, nothing kept in memory."""
        self.store.conn.close()
        self.store = db.Store(db.connect(self.path))

    def deliver(self, raw: bytes, at: dt.datetime):
        self.uid += 1
        with self.store.transaction():
            self.store.add_message(identity=f"test-{self.uid}", folder="INBOX", uidvalidity=1,
                                   uid=self.uid, message_id=None, arrived_at=at,
                                   first_seen_at=at, raw=raw)
        pipeline.apply_pending(self.store, self.settings, Clock(at), pipeline.PollReport())
        self.flush(at)

    def signups(self, people=PEOPLE, at=SIGNUP_AT):
        for i, (name, email, org) in enumerate(people):
            self.deliver(signup(name, email, org, date=at), at + dt.timedelta(minutes=i))

    def cancel(self, name, email, at):
        self.deliver(signup(name, email, "", date=at, subject="Afmelding leernetwerk", body=(
            f"Beste,\n\nIk moet mij helaas afmelden voor het leernetwerk.\n\nGroeten,\n{name}\n")),
            at)

    def flush(self, at):
        before = len(self.smtp.messages)
        outbox.flush(self.store, self.settings, at.astimezone(dt.timezone.utc))
        for m in self.smtp.messages[before:]:
            self.log.append((at, m.message))

    def run(self, at: dt.datetime) -> reminders.Report:
        report = reminders.queue_due(self.store, self.settings, at.astimezone(dt.timezone.utc))
        self.flush(at)
        return report

    def sent(self, prefix="Herinnering"):
        return [(at, m) for at, m in self.log if m["Subject"].startswith(prefix)]

    def reminders_by_person(self):
        out = {}
        for at, m in self.sent():
            number = int(SUBJECT.match(m["Subject"]).group(1))
            out.setdefault(m["To"].addresses[0].addr_spec, []).append((number, at))
        return out


@pytest.fixture
def desk(tmp_path, smtp_server):
    settings = desk_settings(smtp_server=smtp_server, event={"capacity": 3})
    return Desk(tmp_path / "state.sqlite", settings, smtp_server)


def days(start: dt.date, end: dt.date):
    d = start
    while d <= end:
        yield d
        d += dt.timedelta(days=1)


def expected(lead_days, sessions, since=None, until=None):
    """(session, local moment) of each reminder: send_time on the local day `lead` days before."""
    out = []
    for n, date in sessions.items():
        for lead in lead_days:
            moment = dt.datetime.combine(date - dt.timedelta(days=lead), dt.time(10),
                                         tzinfo=BRUSSELS)
            if (since is None or moment >= since) and (until is None or moment < until):
                out.append((n, moment))
    return sorted(out, key=lambda x: x[1])


def test_the_whole_2018_series_day_by_day(desk):
    desk.signups()
    assert {r["email"]: r["status"] for r in desk.store.registry()}["dirk.maes@hasselt.be"] \
        == "waitlisted"
    cancelled_at = local(2018, 8, 22, 12)   # after session 2's 7-day reminder (21 August)
    restart_on = dt.date(2018, 9, 24)       # the morning of session 3's 1-day reminder

    for day in days(dt.date(2018, 5, 20), dt.date(2018, 12, 19)):
        if day == cancelled_at.date():
            desk.cancel("Anna Peeters", "anna.peeters@gent.be", cancelled_at)
        for hour in (9, 10, 11, 15):
            at = local(day.year, day.month, day.day, hour)
            desk.run(at)
            if day == restart_on and hour == 10:
                desk.restart()
                again = desk.run(at)
                assert again.reminders == 0

    got = desk.reminders_by_person()
    full = expected((7, 1), SERIES)
    assert got["bram.claes@leuven.be"] == full
    assert got["chris.wouters@brugge.be"] == full
    # Cancelled on 22 August: nothing after it.
    assert got["anna.peeters@gent.be"] == expected((7, 1), SERIES, until=cancelled_at)
    # Promoted on 22 August, after the 7-day reminder of session 2: the next one is theirs.
    assert got["dirk.maes@hasselt.be"] == expected((7, 1), SERIES, since=cancelled_at)
    # Every reminder left at 10:00 local, on both sides of the DST change.
    assert {at.astimezone(BRUSSELS).time() for at, _ in desk.sent()} == {dt.time(10)}
    assert {m["Date"].datetime.utcoffset() for _, m in desk.sent()} == {
        dt.timedelta(hours=2), dt.timedelta(hours=1)}
    # Recorded exactly once per participant, session and lead time.
    rows = desk.store.reminders_sent()
    assert len(rows) == len({(r["registration_id"], r["session_number"], r["lead_days"])
                             for r in rows}) == 12 * 2 + 3 + 9
    assert not [e for e in desk.store.conn.execute("SELECT * FROM events")
                if e["action"] == "reminder_late"]


def test_a_reminder_says_what_the_participant_needs(desk):
    desk.signups(PEOPLE[:1])
    desk.run(local(2018, 12, 11))  # session 6, a week ahead
    [(_, mail)] = desk.sent()
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert mail["Subject"].startswith("Herinnering: sessie 6 op dinsdag 18 december 2018")
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["In-Reply-To"] is None
    assert "Over een week" in text and "Voorstelling SDG actieplan van de deelnemers" in text
    assert "14.00 – 17.00 uur" in text and "Brussel (het adres volgt)" in text
    assert "SDG-actieplan" in text and "SDG-actieplan" in html   # from config `prepare`
    assert '"afmelden"' in text and "wachtlijst" in text
    # The privacy footer of every mail (templates/_footer.txt, _layout.html).
    assert "wissen" in text.split("\n--")[-1] and "wissen" in html
    assert "Beste Anna Peeters," in text

    # The session before it looks ahead to the presentation.
    desk.run(local(2018, 11, 19))
    before = [m for _, m in desk.sent() if "sessie 5" in m["Subject"]]
    assert "Om alvast te noteren" in before[0].get_body(("plain",)).get_content()


def test_a_worker_that_was_down_catches_up_once_and_the_log_says_so(desk):
    desk.signups()
    # Down from May until the afternoon before session 3: its 7-day and 1-day are both due.
    desk.run(local(2018, 9, 24, 15, 30))
    got = desk.reminders_by_person()
    assert sorted(got) == sorted(e for _, e, _ in PEOPLE[:3])
    assert all(v == [(3, local(2018, 9, 24, 15, 30))] for v in got.values())  # one mail each
    rows = desk.store.reminders_sent()
    assert {(r["session_number"], r["lead_days"]) for r in rows} == {(3, 1)}
    late = [e for e in desk.store.conn.execute("SELECT * FROM events")
            if e["action"] == "reminder_late"]
    assert len(late) == 1 and "reminder caught up late" in late[0]["reason"]
    # Later runs send nothing more for session 3, and nothing once it started.
    for hour in (16, 17):
        desk.run(local(2018, 9, 24, hour))
    desk.run(local(2018, 9, 25, 14, 1))
    assert len(desk.sent()) == 3


def test_nothing_for_a_session_that_started(desk):
    desk.signups(PEOPLE[:1])
    desk.run(local(2018, 6, 26, 14, 0))
    assert desk.sent() == []


def test_a_moved_session_gets_one_update_and_no_stale_reminder(desk, smtp_server):
    desk.signups()
    # The 7-day reminder of session 4 (23 October) is queued, but SMTP is down: it waits.
    smtp_server.fail_next(*["421 4.3.2 try later"] * 10)
    desk.run(local(2018, 10, 16, 10))
    assert desk.sent() == []
    pending = [r for r in desk.store.outbox_rows() if r["state"] == "pending"]
    assert {r["kind"] for r in pending} == {"reminder"}
    smtp_server.reset_failures()

    def move(sessions):
        s4 = next(s for s in sessions if s["number"] == 4)
        s4.update(date=dt.date(2018, 10, 30), place="Herman Teirlinckgebouw, Brussel")

    desk.settings = with_sessions(smtp_server, move)
    desk.run(local(2018, 10, 16, 10, 5))

    updates = desk.sent("Gewijzigd")
    assert len(updates) == 3 and desk.sent() == []          # one update each, no stale reminder
    mail = updates[0][1]
    assert "dinsdag 30 oktober 2018" in mail.get_body(("plain",)).get_content()
    [ics] = [p for p in mail.iter_attachments() if p.get_content_type() == "text/calendar"]
    cal = icalendar.Calendar.from_ical(ics.get_content())
    [event] = cal.walk("VEVENT")
    assert cal["METHOD"] == "PUBLISH" and event["SEQUENCE"] == 1
    assert event.decoded("DTSTART") == dt.datetime(2018, 10, 30, 14, tzinfo=BRUSSELS)
    assert str(event["LOCATION"]) == "Herman Teirlinckgebouw, Brussel"
    assert all(r["state"] == "failed" and r["last_error"].startswith("superseded")
               for r in desk.store.outbox_rows() if r["kind"] == "reminder")

    # The same change is announced once; the new date gets its own reminders (7-day on the
    # DST-crossing 23 October, 1-day on 29 October, both at 10:00 local).
    for day in days(dt.date(2018, 10, 16), dt.date(2018, 10, 31)):
        for hour in (9, 10, 11):
            desk.run(local(day.year, day.month, day.day, hour))
    assert len(desk.sent("Gewijzigd")) == 3
    got = {(m["To"].addresses[0].addr_spec, at) for at, m in desk.sent()}
    assert {at for _, at in got} == {local(2018, 10, 23), local(2018, 10, 29)}
    for _, m in desk.sent():
        assert "30 oktober" in m["Subject"] and "23 oktober" not in m.get_body(("plain",)).get_content()


def test_a_cancelled_session_is_taken_out_of_calendars_and_never_reminded(desk, smtp_server):
    desk.signups()
    desk.run(local(2018, 11, 1))

    def cancel_5(sessions):
        next(s for s in sessions if s["number"] == 5)["cancelled"] = True

    desk.settings = with_sessions(smtp_server, cancel_5)
    for day in days(dt.date(2018, 11, 1), dt.date(2018, 11, 21)):
        desk.run(local(day.year, day.month, day.day))
    updates = desk.sent("Geschrapt")
    assert len(updates) == 3
    assert desk.sent() == []
    [ics] = [p for p in updates[0][1].iter_attachments()]
    cal = icalendar.Calendar.from_ical(ics.get_content())
    [event] = cal.walk("VEVENT")
    assert cal["METHOD"] == "CANCEL" and event["STATUS"] == "CANCELLED"
    assert event["SEQUENCE"] == 1 and "sessie-5@" in str(event["UID"])


def test_two_overlapping_runs_send_each_reminder_once(desk):
    many = [(f"Deelnemer {chr(65 + i)}", f"deelnemer{i}@gemeente.be", "Gemeente") for i in range(3)]
    desk.signups(many)
    now = local(2018, 6, 19).astimezone(dt.timezone.utc)
    barrier = threading.Barrier(4)
    reports, errors = [], []

    def job():
        try:
            barrier.wait()
            reports.append(reminders.run_job(desk.path, desk.settings, now))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.reminders for r in reports) == 3
    desk.flush(local(2018, 6, 19))
    assert len(desk.sent()) == 3


def test_the_unique_key_stops_a_duplicate_even_from_a_stale_plan(desk):
    desk.signups(PEOPLE[:2])
    now = local(2018, 6, 19).astimezone(dt.timezone.utc)
    stale = reminders.plan(desk.store, desk.settings, now)    # decided before the other run
    assert len(stale.due) == 2
    reminders.queue_due(desk.store, desk.settings, now)
    with desk.store.transaction():
        assert reminders._remind(desk.store, desk.settings, stale, now) == 0
    assert len([r for r in desk.store.outbox_rows() if r["kind"] == "reminder"]) == 2


def test_dst_end_crossed_by_a_seven_day_lead(tmp_path, smtp_server):
    def autumn(sessions):
        sessions[:] = [
            dict(number=1, theme="Na de wissel", date=dt.date(2018, 10, 30), start="14:00",
                 end="17:00"),
            dict(number=2, theme="Op de maandag", date=dt.date(2018, 10, 29), start="14:00",
                 end="17:00"),
        ]

    settings = with_sessions(smtp_server, autumn)
    desk = Desk(tmp_path / "state.sqlite", settings, smtp_server)
    desk.signups(PEOPLE[:1], at=local(2018, 10, 1))
    # Hour by hour, in UTC, across the night of 27 to 28 October.
    at = dt.datetime(2018, 10, 21, 0, tzinfo=dt.timezone.utc)
    while at < dt.datetime(2018, 10, 30, 0, tzinfo=dt.timezone.utc):
        desk.run(at.astimezone(BRUSSELS))
        at += dt.timedelta(hours=1)
    got = sorted((int(SUBJECT.match(m["Subject"]).group(1)), at.astimezone(dt.timezone.utc))
                 for at, m in desk.sent())
    utc = dt.timezone.utc
    assert got == [
        (1, dt.datetime(2018, 10, 23, 8, tzinfo=utc)),   # 10:00 CEST, a week before a CET day
        (1, dt.datetime(2018, 10, 29, 9, tzinfo=utc)),   # 10:00 CET
        (2, dt.datetime(2018, 10, 22, 8, tzinfo=utc)),   # 10:00 CEST
        (2, dt.datetime(2018, 10, 28, 9, tzinfo=utc)),   # 10:00 CET, the day of the change
    ]


def test_due_moment_is_local_send_time_on_the_local_day():
    tz = BRUSSELS
    session = config.Session(1, "x", dt.date(2018, 10, 30), dt.time(14), dt.time(17), tz)
    moment = reminders.due_moment(session, 7, dt.time(10))
    assert moment.astimezone(tz).replace(tzinfo=None) == dt.datetime(2018, 10, 23, 10)
    assert moment.utcoffset() == dt.timedelta(hours=2)
    # 7 × 24 hours before the start would be 13:00 local: the naive answer is wrong.
    assert session.starts_at - dt.timedelta(days=7) != moment


def test_remind_dry_run_lists_and_changes_nothing(desk, capsys):
    desk.signups(PEOPLE[:2])
    desk.store.conn.close()
    code = cli.main(["remind", "--db", str(desk.path), "--now", "2018-08-27T10:00",
                     "--dry-run", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["email"], r["session"], r["lead_days"]) for r in data["reminders"]] == [
        ("anna.peeters@gent.be", 2, 1), ("bram.claes@leuven.be", 2, 1)]
    check = db.Store(db.connect(desk.path))
    assert check.reminders_sent() == []


def test_config_errors_name_the_file_and_key():
    raw = copy.deepcopy(base_config())
    raw["reminders"] = {"lead_days": [7, 0]}
    with pytest.raises(config.ConfigError, match=r"leernetwerk.toml: \[reminders\] lead_days"):
        config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")
    raw["reminders"] = {"send_time": "tien uur"}
    with pytest.raises(config.ConfigError, match=r"\[reminders\] send_time"):
        config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")
    raw["reminders"] = {}
    raw["sessions"][0]["cancelled"] = "ja"
    with pytest.raises(config.ConfigError, match=r"\[sessions #1\] cancelled"):
        config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")


def test_remind_command_sends_once_through_smtp(desk, smtp_server, tmp_path, capsys):
    desk.signups(PEOPLE[:2])
    desk.store.conn.close()
    text = (PROJECT / "config" / "leernetwerk.toml").read_text(encoding="utf-8")
    smtp_part = text[text.index("[smtp]"):]
    smtp_part = smtp_part.replace('host = "smtp.office365.com"', f'host = "{smtp_server.host}"', 1)
    smtp_part = smtp_part.replace("port = 587", f"port = {smtp_server.port}", 1)
    smtp_part = smtp_part.replace('security = "starttls"', 'security = "none"', 1)
    smtp_part = smtp_part.replace('password_env = "LEERNETWERK_SMTP_PASSWORD"', 'password_env = ""', 1)
    smtp_part = smtp_part.replace('username = "duurzameontwikkeling@vlaanderen.be"', 'username = ""', 1)
    cfg = tmp_path / "leernetwerk.toml"
    cfg.write_text(text[:text.index("[smtp]")] + smtp_part, encoding="utf-8")
    for path in (PROJECT / "config").glob("*.toml"):
        if path.name != "leernetwerk.toml":
            (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    before = len(smtp_server.messages)
    args = ["remind", "--config", str(cfg), "--db", str(desk.path), "--now", "2018-06-25T10:00"]
    assert cli.main(args) == 0
    assert cli.main(args) == 0   # the same moment again: nothing more
    sent = smtp_server.messages[before:]
    assert sorted(m.rcpt_tos[0] for m in sent) == ["anna.peeters@gent.be", "bram.claes@leuven.be"]
    assert all(m.message["Subject"].startswith("Herinnering: sessie 1") for m in sent)
    assert "2 reminders and 0 session updates queued; 2 sent" in capsys.readouterr().out
