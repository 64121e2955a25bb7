"""The evidence behind a signup or cancellation, and the bar it must clear before the desk acts alone.

All mails here are written for these tests (see tests/test_understand_quotes.py for replies).
"""
from __future__ import annotations

from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from processor.understand import Options, load_domain_organisations, understand
from processor.understand.evidence import BAR, event_terms, spam_verdict
from processor.understand.parse import parse

ROOT = Path(__file__).resolve().parents[1]
DESK = "duurzameontwikkeling@vlaanderen.be"
MSGID_DOMAIN = "leernetwerk.duurzameontwikkeling.vlaanderen.be"
OPTIONS = Options(
    own_addresses=frozenset({DESK}),
    own_message_id_domain=MSGID_DOMAIN,
    domain_organisations=load_domain_organisations(ROOT / "config" / "organisations.toml"),
    event_terms=event_terms("Leernetwerk Sustainable Development Goals",
                            ["De SDG's begrijpen", "Integratie in de organisatie"]),
    session_dates=("2018-06-26", "2018-09-25"),
)


def mail(body: str, *, sender="Tijl Rombouts <tijl.rombouts@lier.be>", subject="Inschrijving leernetwerk",
         to=DESK, cc=None, headers: dict | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@example.invalid>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return bytes(msg)


SIGNUP = "Beste,\n\nGraag schrijf ik mij in voor het leernetwerk SDG.\n\nTijl Rombouts\nStad Lier\n"


def signals(reading) -> dict[str, int]:
    return {s.name: s.weight for s in reading.evidence}


def test_event_terms_come_from_the_configured_name_and_themes():
    terms = event_terms("Leernetwerk Sustainable Development Goals", ["De SDG's begrijpen"])
    assert {"leernetwerk", "sdg", "sustainable development goals", "de sdg's begrijpen"} <= set(terms)
    assert event_terms("Studiedag Circulaire Economie") == (
        "studiedag circulaire economie", "circulaire economie", "studiedag", "sce")


def test_a_clear_signup_clears_the_bar_and_shows_why():
    reading = understand(mail(SIGNUP), OPTIONS)
    assert reading.kind == "registration" and reading.replies_allowed and not reading.needs_review
    assert signals(reading)["event_named"] > 0 and signals(reading)["government_sender"] > 0
    assert reading.confidence >= BAR
    out = reading.contract()
    assert out["acts_automatically"] is True and out["bar"] == BAR
    assert {e["signal"] for e in out["evidence"]} >= {"event_named", "government_sender"}


@pytest.mark.parametrize("header,value", [
    ("X-Spam-Flag", "YES"),
    ("X-Spam-Status", "Yes, score=7.1 required=5.0 tests=HTML_MESSAGE"),
    ("X-MS-Exchange-Organization-SCL", "6"),
    ("X-Forefront-Antispam-Report", "CIP:192.0.2.1;CTRY:;LANG:nl;SCL:9;SRV:;IPV:NLI;SFV:SPM;H:x;PTR:;CAT:SPM;"),
])
def test_a_spam_verdict_on_the_mail_is_strong_evidence_against(header, value):
    reading = understand(mail(SIGNUP, headers={header: value}), OPTIONS)
    assert reading.kind == "other"
    assert not reading.replies_allowed and reading.needs_review
    assert "spam" in reading.reasons[0]


@pytest.mark.parametrize("header,value", [
    ("X-Spam-Flag", "NO"), ("X-Spam-Status", "No, score=0.2"), ("X-MS-Exchange-Organization-SCL", "1"),
    ("X-Forefront-Antispam-Report", "SCL:1;SFV:NSPM;"),
])
def test_a_clean_verdict_is_no_evidence_against(header, value):
    assert spam_verdict(parse(mail(SIGNUP, headers={header: value}))) is None
    assert understand(mail(SIGNUP, headers={header: value}), OPTIONS).kind == "registration"


@pytest.mark.parametrize("sender", [
    "Registratie Vlaanderen <inschrijvingen@vlaanderenbe-registratie.example>",
    "Servicedesk <service@vlaanderen.be.secure-login.example>",
    '"duurzameontwikkeling@vlaanderen.be" <events@mailer.example>',
])
def test_an_imitation_of_our_domain_is_never_a_signup(sender):
    body = "Beste,\n\nHierbij bevestigen wij de inschrijving voor het leernetwerk SDG.\n"
    reading = understand(mail(body, sender=sender), OPTIONS)
    assert reading.kind == "other" and not reading.replies_allowed
    assert "phishing" in reading.reasons[0].lower()


def test_an_invitation_to_the_reader_is_not_a_signup():
    body = ("Beste collega,\n\nOp 25 september organiseren wij een leernetwerk over de SDG's. "
            "Schrijf je nu in via https://events.example/sdg en bevestig uw deelname.\n")
    reading = understand(mail(body, sender="Events <news@events-bureau.example>"), OPTIONS)
    assert reading.kind == "other"


def test_a_signup_that_names_nothing_of_this_event_and_was_not_sent_to_us_is_other():
    body = "Hello,\n\nI would like to register for the conference, please sign me up.\n\nKim\n"
    reading = understand(mail(body, sender="Kim <kim@conference-fan.example>", subject="registration",
                              to="someone@example.org"), OPTIONS)
    assert reading.kind == "other" and not reading.replies_allowed
    assert any("verwijst niet naar dit evenement" in r for r in reading.reasons)


def test_a_short_signup_to_the_desk_without_the_event_named_waits_for_a_person():
    reading = understand(mail("Graag inschrijven.\n\nTijl\n", subject=""), OPTIONS)
    assert reading.kind == "registration"
    assert reading.needs_review and not reading.replies_allowed
    assert any("drempel" in r for r in reading.reasons)


def test_a_signup_for_another_date_and_another_event_is_other():
    body = "Graag schrijf ik mij in voor de opleiding aankoopbeleid van 14 maart.\n\nTijl Rombouts\n"
    reading = understand(mail(body, subject="inschrijving opleiding"), OPTIONS)
    assert reading.kind == "other"


@pytest.mark.parametrize("sender", ["Tijl Rombouts <tijl.rombouts1980@gmail.com>",
                                    "Tijl Rombouts <tijl@rombouts-advies.example>"])
def test_a_signup_from_outside_government_is_kept_but_set_aside(sender):
    """Eligibility: the audience is government staff. A private or company address keeps its arrival
    (the mail is kept and an organiser's `resolve` keeps its place), but nothing is applied alone."""
    reading = understand(mail(SIGNUP, sender=sender), OPTIONS)
    assert reading.kind == "registration"
    assert reading.needs_review and not reading.replies_allowed
    assert set(signals(reading)) & {"private_sender", "outside_government"}


def test_a_cancellation_from_a_private_address_is_acted_on():
    """A cancellation can only free the sender's own seat: the registry decides, not eligibility."""
    body = "Ik moet mij helaas afmelden voor het leernetwerk.\n\nTijl\n"
    reading = understand(mail(body, sender="Tijl Rombouts <tijl.rombouts1980@gmail.com>", subject="afmelden"),
                         OPTIONS)
    assert reading.kind == "cancellation" and reading.replies_allowed


def test_replies_diverted_to_another_domain_hold_a_signup():
    reading = understand(mail(SIGNUP, headers={"Reply-To": "tijl@elders.example"}), OPTIONS)
    assert "reply_to_elsewhere" in signals(reading)
    assert not reading.replies_allowed


def test_declining_or_postponing_is_not_a_signup():
    for body in ("Onze dienst neemt niet deel aan het leernetwerk: we volgen al een ander SDG-traject.\n",
                 "Ik overweeg om in te schrijven voor het leernetwerk, zodra mijn diensthoofd akkoord is.\n",
                 "Pas na het zomerreces kan ik beslissen of ik deelneem aan het leernetwerk.\n"):
        assert understand(mail(body, subject="leernetwerk"), OPTIONS).kind == "other", body


def test_absent_for_one_session_keeps_the_seat():
    body = ("Op 25 september zal ik er niet bij zijn wegens een opleiding; "
            "voor de rest van de reeks blijf ik ingeschreven.\n\nTijl\n")
    reading = understand(mail(body, subject="Re: leernetwerk sessie 3"), OPTIONS)
    assert reading.kind == "other" and reading.needs_review


def test_the_desk_only_in_cc_of_a_mail_to_a_colleague_is_no_signup():
    body = "Hoi Lien,\n\nDit leernetwerk lijkt me nuttig voor jouw dienst. Het team staat in kopie.\n\nTijl\n"
    reading = understand(mail(body, to="Lien <lien.oplinter@lier.be>", cc=DESK, subject="FW: leernetwerk"), OPTIONS)
    assert reading.kind == "other"


def _feedback_report(inner: bytes) -> bytes:
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "Abuse Desk <abuse@isp.example>"
    report["To"] = DESK
    report["Subject"] = "FW: Inschrijving leernetwerk"
    report["Message-ID"] = "<arf-1@isp.example>"
    report.attach(MIMEText("This is an email abuse report for an email message received from IP 192.0.2.7.\n"))
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload("Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n")
    report.attach(feedback)
    report.attach(MIMEMessage(__import__("email").message_from_bytes(inner)))
    return report.as_bytes()


@pytest.mark.parametrize("inner_body", [SIGNUP, "Ik moet mij afmelden voor het leernetwerk.\n"])
def test_an_abuse_feedback_report_is_never_a_signup_or_cancellation(inner_body):
    reading = understand(_feedback_report(mail(inner_body)), OPTIONS)
    assert reading.kind not in ("registration", "cancellation"), reading.reasons
    assert not (reading.kind in ("registration", "cancellation") and reading.replies_allowed)
