"""Issue 16, the understanding's low findings: a raw UTF-8 From address is read (not set aside),
a plus-alias of the desk is the desk itself, and a mail naming more people than are read says
so; through understand() and, where the finding came from a poll, a real poll (Dovecot + SMTP)."""
from __future__ import annotations

from email.utils import make_msgid

import pytest

from processor.understand import Options, understand
from processor.understand.extract import MAX_CANDIDATES
from processor.clock import Clock
from processor.desk import pipeline
from processor.mail.imap import Mailbox
from tests.test_waitlist import NOW, Desk

DESK = "inschrijvingen@desk.example"
OPTIONS = Options(own_addresses=frozenset({DESK}), domain_organisations={"stad.example": "Stad Voorbeeld"})
SIGNUP = ("Beste,\r\n\r\nGraag schrijf ik mij in voor het Leernetwerk Sustainable Development Goals."
          "\r\n\r\nMet vriendelijke groeten,\r\nJoëlle Dubbel\r\nStad Voorbeeld\r\n")


def raw_utf8_signup(from_address: str, to: str = DESK, message_id: str = "<utf8@stad.example>") -> bytes:
    # Written as an SMTPUTF8 mailer sends it: the address itself as UTF-8 bytes, no encoding.
    return (f"From: Joëlle Dubbel <{from_address}>\r\nTo: {to}\r\nSubject: Inschrijving Leernetwerk\r\n"
            f"Message-ID: {message_id}\r\nDate: Tue, 01 Oct 2024 10:00:00 +0200\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + SIGNUP).encode("utf-8")


def test_a_raw_utf8_from_address_is_read_and_lowercased():
    reading = understand(raw_utf8_signup("JOËLLE.Dubbel@gent.be"), OPTIONS)
    assert reading.kind == "registration"
    assert reading.sender == "joëlle.dubbel@gent.be"
    assert [p.email for p in reading.participants] == ["joëlle.dubbel@gent.be"]


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    return Desk(dovecot, smtp_server, tmp_path, monkeypatch)


def test_a_raw_utf8_from_address_signs_up_through_a_poll(desk):
    desk.arrive(raw_utf8_signup("Joëlle.Dubbel@gent.be", to="duurzameontwikkeling@vlaanderen.be"))
    # The fetch and apply steps of a poll (Dovecot, SQLite); sending the reply to a non-ASCII
    # address (SMTPUTF8) is finding 1's, tested with the sender.
    report = pipeline.PollReport()
    clock = Clock(NOW)
    with Mailbox(desk.settings.mailbox) as mailbox:
        pipeline.fetch(mailbox, desk.store, desk.settings, clock, report)
        pipeline.apply_pending(desk.store, desk.settings, clock, report)
    assert report.fetched == 1 and report.quarantined == 0 and report.applied == 1
    assert desk.status()["joëlle.dubbel@gent.be"]["status"] == "confirmed"
    queued = desk.store.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert queued == 1


def signup_from(sender: str, body: str = SIGNUP, to: str = DESK) -> bytes:
    return (f"From: Iemand <{sender}>\r\nTo: {to}\r\nSubject: Inschrijving Leernetwerk\r\n"
            f"Message-ID: {make_msgid(domain='stad.example')}\r\nDate: Tue, 01 Oct 2024 10:00:00 +0200\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode("utf-8")


@pytest.mark.parametrize("alias", ["inschrijvingen+x@desk.example", "Inschrijvingen+Leernetwerk.2024@DESK.example"])
def test_a_plus_alias_of_the_desk_is_the_desk_itself(alias):
    reading = understand(signup_from(alias), OPTIONS)
    assert reading.kind not in ("registration", "cancellation")
    assert not reading.replies_allowed and reading.participants == ()


def test_a_plus_alias_of_the_desk_named_in_a_signup_is_no_participant():
    body = ("Beste,\r\n\r\nGraag schrijf ik mij in voor het Leernetwerk, samen met mijn collega\r\n"
            "Bart Voorbeeld (bart.voorbeeld@stad.example) en inschrijvingen+extra@desk.example.\r\n\r\n"
            "Groeten,\r\nJoëlle Dubbel\r\nStad Voorbeeld\r\n")
    reading = understand(signup_from("joelle.dubbel@gent.be", body), OPTIONS)
    assert reading.kind == "registration"
    emails = {p.email for p in reading.participants}
    assert emails == {"joelle.dubbel@gent.be", "bart.voorbeeld@stad.example"}


def test_a_form_giving_a_plus_alias_of_the_desk_signs_nobody_up():
    body = ("Beste,\r\n\r\nGraag schrijf ik mij in voor het Leernetwerk.\r\n\r\n"
            "Naam: Bart Voorbeeld\r\nOrganisatie: Stad Voorbeeld\r\nE-mail: inschrijvingen+bart@desk.example\r\n")
    reading = understand(signup_from("bart.voorbeeld@stad.example", body), OPTIONS)
    assert all(p.email is None or "desk.example" not in p.email for p in reading.participants)


def test_a_plus_alias_of_the_desk_gets_no_seat_and_no_mail_through_a_poll(desk, smtp_server):
    own = "duurzameontwikkeling@vlaanderen.be"
    desk.arrive(signup_from("duurzameontwikkeling+x@vlaanderen.be", to=own))
    desk.arrive(signup_from("Duurzameontwikkeling+Test@Vlaanderen.be", to=own))
    report = desk.poll()
    assert report.fetched == 2 and report.quarantined == 0
    assert desk.status() == {}
    assert smtp_server.messages == []


def made_up_name(i: int) -> str:
    return "".join(chr(97 + (i // 26 ** k) % 26) for k in range(3)).capitalize()


def form_signup(count: int) -> bytes:
    form = "\r\n".join(f"Naam: Jo{made_up_name(i)} Vo{made_up_name(i * 7 + 3)}\r\n"
                       f"E-mail: p{i}@stad.example" for i in range(count))
    return signup_from("joelle.dubbel@gent.be",
                       "Beste,\r\n\r\nGraag schrijf ik deze mensen in voor het Leernetwerk.\r\n\r\n" + form)


def test_a_mail_naming_more_people_than_are_read_says_so_and_waits_for_a_person():
    over = MAX_CANDIDATES + 50
    reading = understand(form_signup(over), OPTIONS)
    assert reading.needs_review
    assert any(f"meer dan {MAX_CANDIDATES} mensen" in r and "niet iedereen gelezen" in r
               for r in reading.reasons), reading.reasons


def test_a_mail_naming_fewer_people_than_the_cap_does_not_say_so():
    reading = understand(form_signup(12), OPTIONS)
    assert not any("niet iedereen gelezen" in r for r in reading.reasons)
