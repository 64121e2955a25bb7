"""The waiting list's whole life on Dovecot + aiosmtpd + SQLite: cancel, promote, substitute, commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from email.utils import format_datetime, make_msgid

import pytest

from processor.store import db
from processor.desk import organiser, pipeline, review
from processor.clock import Clock
from processor.understand.model import Participant
from tests.desk import PROJECT, auth_results, desk_settings, signup
from tests.test_desk import people, write_config

START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
NOW = dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc)


def plain_mail(sender_name: str, sender: str, subject: str, body: str, *,
               date: dt.datetime = START, in_reply_to: str | None = None,
               auth: str | None = "pass") -> bytes:
    headers = [f"Authentication-Results: {auth_results(sender, auth)}"] if auth else []
    headers += [
        f"From: {sender_name} <{sender}>",
        "To: duurzameontwikkeling@vlaanderen.be",
        f"Subject: {subject}",
        f"Message-ID: {make_msgid(domain=sender.partition('@')[2])}",
        f"Date: {format_datetime(date)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


class Desk:
    """Settings, store and servers of one test, with the moves a test makes."""

    def __init__(self, dovecot, smtp_server, tmp_path, monkeypatch, **sections):
        self.dovecot, self.smtp = dovecot, smtp_server
        self.settings = desk_settings(dovecot, smtp_server, monkeypatch, **sections)
        self.path = tmp_path / "state.sqlite"
        self.store = db.Store(db.connect(self.path))
        self.arrival = START

    def arrive(self, raw: bytes, minutes: int = 5) -> None:
        self.arrival += dt.timedelta(minutes=minutes)
        self.dovecot.append(raw, self.arrival)

    def poll(self, now=NOW):
        return pipeline.poll(self.store, self.settings, Clock(now))

    def status(self) -> dict:
        from processor.desk import status

        return {r["email"]: r for r in status.registry_status(self.store, self.settings)["registrations"]}

    def mails_to(self, email: str) -> list:
        return [m.message for m in self.smtp.messages if email in m.rcpt_tos]

    def subjects_to(self, email: str) -> list[str]:
        return [m["Subject"].strip().split(":")[0] for m in self.mails_to(email)]


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    return Desk(dovecot, smtp_server, tmp_path, monkeypatch)


def sign_up(desk: Desk, persons) -> None:
    for name, email, org in persons:
        desk.arrive(signup(name, email, org, date=START))
    desk.poll()


CANCEL = "Beste,\n\nIk moet mijn inschrijving voor het leernetwerk helaas annuleren; ik kan niet deelnemen.\n\nGroeten,\n{name}\n"


def test_a_cancelled_seat_goes_to_the_first_waiting_at_once(desk):
    persons = people(22)
    sign_up(desk, persons)
    name, email, _ = persons[3]
    confirmation = desk.mails_to(email)[0]

    desk.arrive(plain_mail(name, email, "Re: " + confirmation["Subject"], CANCEL.format(name=name),
                           in_reply_to=confirmation["Message-ID"]))
    desk.poll()

    state = desk.status()
    assert state[email]["status"] == "cancelled"
    assert state[persons[20][1]]["status"] == "confirmed"          # the 21st got the seat
    assert state[persons[21][1]]["position"] == 1                  # the 22nd is now first
    assert desk.subjects_to(email) == ["Inschrijving bevestigd", "Uitschrijving bevestigd"]
    promoted = desk.mails_to(persons[20][1])[-1]
    assert promoted["Subject"].strip().startswith("Er is een plaats vrijgekomen")
    text = promoted.get_body(("plain",)).get_content()
    assert "dinsdag 26 juni 2018" in text and "dinsdag 18 december 2018" in text
    # The promotion answers the person's own signup thread.
    assert promoted["In-Reply-To"] == desk.store.message(
        desk.store.live_registration(persons[20][1])["message_id"])["message_id"]
    actions = [e["action"] for e in organiser.history(desk.store, persons[20][1])]
    assert actions == ["waitlisted", "promoted"]
    assert sum(1 for r in state.values() if r["status"] == "confirmed") == 20


def test_leaving_the_waiting_list_moves_the_others_up(desk):
    persons = people(23)
    sign_up(desk, persons)
    name, email, _ = persons[20]     # first on the waiting list
    desk.arrive(plain_mail(name, email, "Afmelding", CANCEL.format(name=name)))
    desk.poll()

    state = desk.status()
    assert state[email]["status"] == "cancelled"
    assert [state[p[1]]["position"] for p in persons[21:]] == [1, 2]
    assert sum(1 for r in state.values() if r["status"] == "confirmed") == 20
    reply = desk.mails_to(email)[-1].get_body(("plain",)).get_content()
    assert "niet langer op de wachtlijst" in reply


def test_a_manager_cancels_a_colleague_they_registered_by_name(desk):
    body = ("Beste,\n\nIk schrijf graag twee collega's in voor het leernetwerk:\n"
            "- Jan Janssens (jan.janssens@gemeente1.be)\n- Mira Vos (mira.vos@gemeente1.be)\n\n"
            "Met vriendelijke groeten,\nChef Baas\nGemeente Proef1\n")
    desk.arrive(plain_mail("Chef Baas", "chef.baas@gemeente1.be", "Inschrijving collega's", body))
    desk.poll()
    assert set(desk.status()) == {"jan.janssens@gemeente1.be", "mira.vos@gemeente1.be"}
    # Each colleague has their own reply, with the manager in copy.
    [reply] = desk.mails_to("jan.janssens@gemeente1.be")
    assert "chef.baas@gemeente1.be" in reply["Cc"]

    desk.arrive(plain_mail("Chef Baas", "chef.baas@gemeente1.be", "Afmelding",
                           "Dag,\n\nMijn collega Jan Janssens kan helaas niet deelnemen aan het "
                           "leernetwerk. Wil je hem uitschrijven?\n\nGroeten,\nChef Baas\n"))
    desk.poll()

    state = desk.status()
    assert state["jan.janssens@gemeente1.be"]["status"] == "cancelled"
    assert state["mira.vos@gemeente1.be"]["status"] == "confirmed"


def test_a_stranger_cannot_cancel_someone_else(desk):
    sign_up(desk, people(1))
    victim = people(1)[0][1]
    desk.arrive(plain_mail("Iemand Anders", "iemand@elders.be", "Afmelding",
                           f"Beste,\n\nGelieve {victim} uit te schrijven voor het leernetwerk; "
                           "die kan niet deelnemen.\n\nGroeten\n"))
    desk.poll()
    assert desk.status()[victim]["status"] == "confirmed"
    assert [i["sender"] for i in review.review_items(desk.store)] == ["iemand@elders.be"]


def test_a_substitute_from_the_same_organisation_takes_over_the_seat(desk):
    persons = people(21)
    sign_up(desk, persons)
    name, email, _ = persons[1]
    desk.arrive(plain_mail(name, email, "Afmelding", (
        "Hallo,\n\nIk kan helaas niet deelnemen. Mijn collega Mira Vos (mira.vos@gemeente1.be) "
        f"neemt mijn plaats in.\n\nVriendelijke groeten,\n{name}\n")))
    desk.poll()

    state = desk.status()
    assert state[email]["status"] == "cancelled"
    assert state["mira.vos@gemeente1.be"]["status"] == "confirmed"
    assert state[persons[20][1]]["position"] == 1        # the waiting list did not move
    assert state["mira.vos@gemeente1.be"]["arrived_at"] == state[email]["arrived_at"]
    assert desk.subjects_to("mira.vos@gemeente1.be") == [f"U neemt de plaats in van {name}"]
    assert "Mira Vos" in desk.mails_to(email)[-1].get_body(("plain",)).get_content()


def test_a_substitute_from_elsewhere_goes_to_review(desk):
    persons = people(2)
    sign_up(desk, persons)
    name, email, _ = persons[1]
    desk.arrive(plain_mail(name, email, "Afmelding", (
        "Hallo,\n\nIk kan helaas niet deelnemen. Mijn vriendin Lies Buiten (lies@bedrijf.com) "
        f"neemt mijn plaats in.\n\nGroeten,\n{name}\n")))
    desk.poll()
    state = desk.status()
    assert state[email]["status"] == "confirmed"
    assert "lies@bedrijf.com" not in state
    assert len(review.review_items(desk.store)) == 1


def test_a_cancellation_from_an_unknown_address_is_answered_and_reviewed(desk):
    desk.arrive(plain_mail("Niet Gekend", "niet.gekend@stad.be", "Afmelding",
                           CANCEL.format(name="Niet Gekend")))
    desk.poll()
    [reply] = desk.mails_to("niet.gekend@stad.be")
    assert reply["Subject"].startswith("Geen inschrijving gevonden")
    [item] = review.review_items(desk.store)
    assert item["sender"] == "niet.gekend@stad.be"


def test_a_signup_after_closing_gets_no_seat(dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch,
                registration={"closes": "2018-05-14T10:00:00+02:00"})
    desk.arrive(signup("Op Tijd", "optijd@stad.be", "Stad Gent", date=START), minutes=30)
    desk.arrive(signup("Te Laat", "telaat@stad.be", "Stad Gent", date=START), minutes=60)
    desk.poll()
    state = desk.status()
    assert state["optijd@stad.be"]["status"] == "confirmed"
    assert "telaat@stad.be" not in state
    assert desk.subjects_to("telaat@stad.be") == ["Inschrijvingen afgesloten"]


def test_the_organisation_cap_waitlists_with_that_reason(dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch,
                registration={"max_per_organisation": 2})
    for i in range(3):
        desk.arrive(signup(f"Lid{i} Stad", f"lid{i}@stad.be", "Stad Gent", date=START))
    desk.arrive(signup("Ander Lid", "ander@provincie.be", "Provincie Proef", date=START))
    desk.poll()
    state = desk.status()
    assert [state[f"lid{i}@stad.be"]["status"] for i in range(3)] == ["confirmed", "confirmed", "waitlisted"]
    assert state["ander@provincie.be"]["status"] == "confirmed"
    assert "per organisation" in state["lid2@stad.be"]["wait_reason"]
    assert "hoogstens 2" in desk.mails_to("lid2@stad.be")[0].get_body(("plain",)).get_content()


def test_charter_signatories_hear_about_coaching(dovecot, smtp_server, tmp_path, monkeypatch):
    charter = tmp_path / "charter.toml"
    charter.write_text('[[signatory]]\nname = "Stad Charter"\ndomains = ["charterstad.be"]\n')
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch,
                registration={"charter_file": str(charter)})
    desk.arrive(signup("Ann Charter", "ann@charterstad.be", "Stad Charter", date=START))
    desk.arrive(signup("Bob Gewoon", "bob@gewoon.be", "Gemeente Gewoon", date=START))
    desk.poll()
    assert desk.status()["ann@charterstad.be"]["charter"] is True
    assert desk.status()["bob@gewoon.be"]["charter"] is False
    # Text parts are wrapped after rendering: the phrase may span a line break.
    assert "individuele coaching" in " ".join(
        desk.mails_to("ann@charterstad.be")[0].get_body(("plain",)).get_content().split())
    assert "coaching" not in desk.mails_to("bob@gewoon.be")[0].get_body(("plain",)).get_content()


def test_resolve_keeps_the_arrival_but_bumps_no_one(desk):
    persons = people(21)
    # The first mail names a colleague without an address: it waits for a person.
    desk.arrive(plain_mail("Chef Baas", "chef.baas@gemeente1.be", "Inschrijving",
                           "Beste,\n\nIk schrijf mijn collega Els Vroeg in voor het leernetwerk.\n"
                           "Haar adres geef ik later door.\n\nGroeten,\nChef Baas\n"), minutes=1)
    sign_up(desk, persons)
    [item] = [i for i in review.review_items(desk.store) if i["sender"] == "chef.baas@gemeente1.be"]

    result = organiser.resolve(desk.store, desk.settings, message_id=item["id"],
                               as_kind="registration",
                               person=Participant("Els Vroeg", "els.vroeg@gemeente1.be", None),
                               now=NOW)

    state = desk.status()
    assert state["els.vroeg@gemeente1.be"]["status"] == "waitlisted"
    assert state["els.vroeg@gemeente1.be"]["position"] == 1        # earliest arrival of all
    assert state[persons[20][1]]["position"] == 2
    assert sum(1 for r in state.values() if r["status"] == "confirmed") == 20
    assert [e["action"] for e in result.events] == ["waitlisted", "resolved"]
    assert organiser.history(desk.store, "els.vroeg@gemeente1.be")[0]["actor"].startswith("organiser:")


def test_dry_run_changes_nothing(desk):
    sign_up(desk, people(21))
    email = people(21)[0][1]
    result = organiser.cancel(desk.store, desk.settings, email=email, reason="test", now=NOW,
                              dry_run=True)
    assert [e["action"] for e in result.events] == ["cancelled", "promoted"]
    assert desk.status()[email]["status"] == "confirmed"
    assert desk.store.conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0] == 0


def test_promote_by_hand_is_an_override_with_a_reason(desk):
    persons = people(21)
    sign_up(desk, persons)
    with pytest.raises(organiser.OrganiserError, match="reason"):
        organiser.promote(desk.store, desk.settings, email=persons[20][1], reason=" ", now=NOW)
    organiser.promote(desk.store, desk.settings, email=persons[20][1], reason="spreker", now=NOW)
    assert desk.status()[persons[20][1]]["status"] == "confirmed"
    [event] = [e for e in organiser.history(desk.store, persons[20][1]) if e["action"] == "promoted"]
    assert "organiser override: spreker (beyond capacity)" == event["reason"]


def test_forget_erases_the_person_and_keeps_the_counts(desk):
    persons = people(2)
    sign_up(desk, persons)
    email = persons[0][1]
    organiser.forget(desk.store, email=email, now=NOW)

    state = desk.status()
    assert email not in state and len(state) == 2
    dump = "\n".join(desk.store.conn.iterdump())
    assert email not in dump and persons[0][0] not in dump
    assert persons[1][1] in dump
    assert sum(1 for r in state.values() if r["status"] == "confirmed") == 2
    # Seeing the same mail again (a re-poll after a mailbox reset) does not bring it back.
    desk.dovecot.recreate_inbox(keep_messages=True)
    desk.poll()
    assert email not in desk.status()


def test_export_parses_back_into_the_status_rows(desk):
    sign_up(desk, people(22))
    from processor.desk import status
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(status.export_csv(desk.store, desk.settings))))
    expected = status.registry_status(desk.store, desk.settings)["registrations"]
    assert [(r["email"], r["status"], r["position"], r["arrived_at"]) for r in rows] == [
        (e["email"], e["status"], str(e["position"] or ""), e["arrived_at"]) for e in expected]


def test_the_worker_and_a_cancel_command_racing_end_with_the_right_counts(dovecot, smtp_server,
                                                                         tmp_path):
    cfg = write_config(tmp_path, dovecot, smtp_server)
    state = tmp_path / "state.sqlite"
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    base = ["--config", str(cfg), "--db", str(state), "--now", "2018-05-20T12:00:00+02:00"]
    persons = people(25)
    for i, (name, email, org) in enumerate(persons[:21]):
        dovecot.append(signup(name, email, org, date=START), START + dt.timedelta(minutes=i))
    subprocess.run([sys.executable, "-m", "processor", "poll", *base], cwd=PROJECT, env=env,
                   check=True, capture_output=True, timeout=120)
    for i, (name, email, org) in enumerate(persons[21:]):
        dovecot.append(signup(name, email, org, date=START), START + dt.timedelta(hours=1, minutes=i))

    poll = subprocess.Popen([sys.executable, "-m", "processor", "poll", *base], cwd=PROJECT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cancels = [subprocess.Popen([sys.executable, "-m", "processor", "cancel", persons[i][1], *base],
                                cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(3)]
    for proc in (poll, *cancels):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()

    data = json.loads(subprocess.run([sys.executable, "-m", "processor", "status", "--json", *base],
                                     cwd=PROJECT, env=env, check=True, capture_output=True,
                                     text=True, timeout=60).stdout)
    counts = {s: sum(1 for r in data["registrations"] if r["status"] == s)
              for s in ("confirmed", "waitlisted", "cancelled")}
    assert counts == {"confirmed": 20, "waitlisted": 2, "cancelled": 3}
    waiting = [r for r in data["registrations"] if r["status"] == "waitlisted"]
    assert [r["position"] for r in waiting] == [1, 2]
    assert [r["email"] for r in waiting] == [persons[23][1], persons[24][1]]


def test_only_one_process_sends_at_a_time(desk):
    """Two flushes at once could both send a row: while the worker is sending, an organiser's
    command only queues, and the worker sends it."""
    from pathlib import Path

    sign_up(desk, people(21))
    before = len(desk.smtp.messages)
    sending = db.WorkerLock("", path=Path(str(desk.path) + ".send.lock"), what="the outbox")
    with sending:
        result = subprocess.run(
            [sys.executable, "-m", "processor", "cancel", people(21)[0][1], "--db", str(desk.path),
             "--config", str(PROJECT / "config" / "leernetwerk.toml"), "--now", NOW.isoformat()],
            cwd=PROJECT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "The worker is sending right now" in result.stdout
        assert len(desk.smtp.messages) == before
        assert desk.poll().flush.busy                  # a second sender backs off too
    pending = desk.store.conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
    assert pending.fetchone()[0] == 2                 # the cancellation and the promotion
    desk.poll()
    assert len(desk.smtp.messages) == before + 2


def test_settling_a_flagged_signup_that_was_applied_answers_nobody_twice(desk):
    # A signup with a question beside it: registered and answered, and flagged for an organiser.
    # (A private address is no longer applied at all: issue 17's eligibility; see the README.)
    body = ("Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk Sustainable Development Goals.\n"
            "Is er in de buurt ook parkeergelegenheid?\n\nAnn Peeters\nStad Gent\n")
    desk.arrive(signup("Ann Peeters", "ann.peeters@gent.be", "Stad Gent", date=START, body=body))
    desk.poll()
    assert len(desk.mails_to("ann.peeters@gent.be")) == 1
    [item] = review.review_items(desk.store)
    assert item["command"] == f"leernetwerk resolve {item['id']} --as nothing"
    # Even the other choice does not register or answer her a second time.
    result = organiser.resolve(desk.store, desk.settings, message_id=item["id"],
                               as_kind="registration", person=None, now=NOW)
    assert [e["action"] for e in result.events] == ["resolved"]
    desk.poll()
    assert len(desk.mails_to("ann.peeters@gent.be")) == 1
