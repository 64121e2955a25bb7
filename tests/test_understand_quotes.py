"""Replies to the desk's own confirmation, in the quote styles of the common mail clients.

The confirmation asks "antwoord 'afmelden'" to cancel. Whatever the client does with the history
(Outlook desktop's "-----Oorspronkelijk bericht-----" header, Outlook on the web's rule and header
block, Gmail's and Apple Mail's "... schreef:", Thunderbird's "Op ... schreef ...:"), the writer's
own words decide, and the quoted desk mail is never read as the author. All fixtures are written
here, by hand; none is taken from a measuring corpus.
"""
from __future__ import annotations

import dataclasses
from email.message import EmailMessage

import pytest

from processor.understand import understand
from tests.test_understand_evidence import DESK, MSGID_DOMAIN, OPTIONS as EVIDENCE_OPTIONS

OPTIONS = dataclasses.replace(EVIDENCE_OPTIONS, event_terms=("leernetwerk", "sustainable development goals", "sdg"))
PERSON = ("Roosmarijn Quirijnen", "roosmarijn.quirijnen@lier.be")

CONFIRMATION = """Beste Roosmarijn Quirijnen,

Uw inschrijving voor het Leernetwerk Sustainable Development Goals is bevestigd.

  Naam: Roosmarijn Quirijnen
  Organisatie: Stad Lier
  E-mail: roosmarijn.quirijnen@lier.be

Wilt u zich toch afmelden? Antwoord dan op deze mail met "afmelden".

Met vriendelijke groeten,
Team Duurzame Ontwikkeling
duurzameontwikkeling@vlaanderen.be"""


def _quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


# Each style: the quote header (with the history under it) the client writes below or above a reply.
STYLES = {
    "outlook-desktop-nl": (
        "-----Oorspronkelijk bericht-----\n"
        f"Van: Team Duurzame Ontwikkeling <{DESK}>\n"
        "Verzonden: dinsdag 5 juni 2018 10:12\n"
        f"Aan: Quirijnen Roosmarijn <{PERSON[1]}>\n"
        "Onderwerp: Inschrijving bevestigd: Leernetwerk Sustainable Development Goals\n\n" + CONFIRMATION),
    "outlook-desktop-fr": (
        "-----Message d'origine-----\n"
        f"De : Team Duurzame Ontwikkeling [mailto:{DESK}]\n"
        "Envoyé : mardi 5 juin 2018 10:12\n"
        f"À : Quirijnen Roosmarijn <{PERSON[1]}>\n"
        "Objet : Inschrijving bevestigd: Leernetwerk Sustainable Development Goals\n\n" + CONFIRMATION),
    "outlook-desktop-en": (
        "-----Original Message-----\n"
        f"From: Team Duurzame Ontwikkeling <{DESK}>\n"
        "Sent: Tuesday, June 5, 2018 10:12 AM\n"
        f"To: Quirijnen Roosmarijn <{PERSON[1]}>\n"
        "Subject: Inschrijving bevestigd: Leernetwerk Sustainable Development Goals\n\n" + CONFIRMATION),
    "outlook-web": (
        "________________________________\n"
        f"Van: Team Duurzame Ontwikkeling <{DESK}>\n"
        "Verzonden: dinsdag 5 juni 2018 10:12\n"
        "Aan: Roosmarijn Quirijnen\n"
        "Onderwerp: Inschrijving bevestigd: Leernetwerk Sustainable Development Goals\n\n" + CONFIRMATION),
    "gmail": (
        "Op di 5 jun. 2018 om 10:12 schreef Team Duurzame Ontwikkeling <\n"
        f"{DESK}>:\n\n" + _quoted(CONFIRMATION)),
    "apple-mail": (
        "> Op 5 jun. 2018 om 10:12 heeft Team Duurzame Ontwikkeling <"
        f"{DESK}> het volgende geschreven:\n>\n" + _quoted(CONFIRMATION)),
    "thunderbird": (
        "Op 05-06-18 om 10:12 schreef Team Duurzame Ontwikkeling:\n" + _quoted(CONFIRMATION)),
}
# Only the styles that mark every quoted line with ">" allow an answer below the history.
BOTTOM_POSTING = ("gmail", "apple-mail", "thunderbird")


def _mail(body: str, subject: str = "RE: Inschrijving bevestigd: Leernetwerk Sustainable Development Goals",
          reply: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{PERSON[0]} <{PERSON[1]}>"
    msg["To"] = f"Team Duurzame Ontwikkeling <{DESK}>"
    msg["Subject"] = subject
    msg["Message-ID"] = "<reply-1@mail.lier.be>"
    if reply:
        msg["In-Reply-To"] = f"<confirm-17.abc@{MSGID_DOMAIN}>"
        msg["References"] = f"<confirm-17.abc@{MSGID_DOMAIN}>"
    msg.set_content(body)
    return bytes(msg)


def _cancels_the_sender(reading) -> None:
    assert reading.kind == "cancellation", reading.reasons
    assert [p.email for p in reading.participants] == [PERSON[1]], reading.participants
    assert DESK not in {p.email for p in reading.participants}


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("words", ["afmelden", "Ik moet mij helaas afmelden voor het leernetwerk.",
                                   "Please cancel my registration, I can no longer attend."])
def test_cancellation_on_top_of_the_quote(style, words):
    body = f"{words}\n\nMet vriendelijke groeten,\n{PERSON[0]}\n\n{STYLES[style]}\n"
    reading = understand(_mail(body), OPTIONS)
    _cancels_the_sender(reading)
    assert not reading.needs_review, reading.reasons
    assert reading.replies_allowed


@pytest.mark.parametrize("style", BOTTOM_POSTING)
def test_cancellation_below_the_quote(style):
    body = f"{STYLES[style]}\n\nafmelden\n\n{PERSON[0]}\n"
    reading = understand(_mail(body), OPTIONS)
    _cancels_the_sender(reading)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_thanks_above_our_confirmation_is_no_cancellation(style):
    """The confirmation itself says "afmelden"; a thank-you above it cancels nobody, least of all the desk."""
    body = f"Bedankt!\n\n{PERSON[0]}\n\n{STYLES[style]}\n"
    reading = understand(_mail(body), OPTIONS)
    assert reading.kind == "other", reading.reasons
    assert reading.participants == ()


@pytest.mark.parametrize("style", sorted(STYLES))
def test_reply_to_our_confirmation_is_no_fresh_signup_of_its_sender(style):
    """"Ik kijk ernaar uit om deel te nemen" in a thread with the desk: a thank-you, not a second seat."""
    body = f"Dank u, ik kijk ernaar uit om deel te nemen!\n\n{PERSON[0]}\n\n{STYLES[style]}\n"
    reading = understand(_mail(body), OPTIONS)
    assert reading.kind != "registration" or PERSON[1] not in {p.email for p in reading.participants}


@pytest.mark.parametrize("style", ["outlook-desktop-nl", "gmail"])
def test_reply_to_our_confirmation_that_adds_a_colleague(style):
    body = ("Mag ik ook mijn collega Wannes Oplinter (wannes.oplinter@lier.be) inschrijven voor het leernetwerk?\n\n"
            f"{PERSON[0]}\n\n{STYLES[style]}\n")
    reading = understand(_mail(body), OPTIONS)
    assert reading.kind == "registration", reading.reasons
    assert [p.email for p in reading.participants] == ["wannes.oplinter@lier.be"]


def test_a_forward_with_outlook_header_is_still_a_forward():
    """With "FW:" in the subject the same Outlook header introduces a forwarded mail."""
    inner = ("-----Original Message-----\n"
             "From: Wannes Oplinter <wannes.oplinter@lier.be>\n"
             "Sent: Monday, June 4, 2018 9:00 AM\n"
             "To: Roosmarijn Quirijnen <roosmarijn.quirijnen@lier.be>\n"
             "Subject: leernetwerk\n\n"
             "Graag schrijf ik mij in voor het leernetwerk SDG.\n\nWannes Oplinter\nStad Lier\n")
    reading = understand(_mail("Ter info, zie hieronder.\n\n" + inner, subject="FW: leernetwerk", reply=False),
                         OPTIONS)
    assert reading.kind == "registration", reading.reasons
    assert [p.email for p in reading.participants] == ["wannes.oplinter@lier.be"]


def test_an_answer_below_an_outlook_quote_of_the_desks_mail_starts_after_its_last_words():
    # Outlook marks no quoted line with '>': only the desk's own last words tell where our mail ends.
    closing = "Wilt u dat we ze eerder wissen? Mail dan naar desk@example.be."
    body = ("-----Original Message-----\nFrom: Desk <desk@example.be>\nSent: Tuesday 9:30\nTo: An\n"
            "Subject: Inschrijving bevestigd\n\nBeste An,\n\nU bent ingeschreven.\n\n--\nWilt u dat we ze\n"
            "eerder wissen? Mail dan naar desk@example.be.\n\nafmelden\n\nAn Peeters\n")
    from processor.understand.text import split_body

    assert split_body(body, "RE: Inschrijving bevestigd").own.text == ""
    own = split_body(body, "RE: Inschrijving bevestigd", own_closing=closing).own.text
    assert own.split() == ["afmelden", "An", "Peeters"] or own.strip().startswith("afmelden")
