"""Through a real poll (Dovecot + aiosmtpd + SQLite): a confirmed participant answers the desk's own
confirmation with "afmelden", in the quote style of each common mail client, on top of the quoted
confirmation or below it. The seat is freed, the first person waiting is promoted, and the desk's
own address is never taken for the participant.
"""
from __future__ import annotations

import pytest

from processor.desk import review
from tests.test_desk import people
from tests.test_waitlist import Desk, plain_mail, sign_up

DESK = "duurzameontwikkeling@vlaanderen.be"


def _quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


def _history(style: str, confirmation) -> str:
    """The confirmation as the client quotes it under (or above) the answer."""
    body = confirmation.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n").strip()
    subject = confirmation["Subject"].strip()
    sender = f"Team Duurzame Ontwikkeling <{DESK}>"
    to = confirmation["To"].strip()
    if style == "outlook-nl":
        return (f"-----Oorspronkelijk bericht-----\nVan: {sender}\nVerzonden: dinsdag 15 mei 2018 09:30\n"
                f"Aan: {to}\nOnderwerp: {subject}\n\n{body}")
    if style == "outlook-fr":
        return (f"-----Message d'origine-----\nDe : Team Duurzame Ontwikkeling [mailto:{DESK}]\n"
                f"Envoyé : mardi 15 mai 2018 09:30\nÀ : {to}\nObjet : {subject}\n\n{body}")
    if style == "outlook-en":
        return (f"-----Original Message-----\nFrom: {sender}\nSent: Tuesday, May 15, 2018 9:30 AM\n"
                f"To: {to}\nSubject: {subject}\n\n{body}")
    if style == "outlook-web":
        return (f"________________________________\nVan: {sender}\nVerzonden: dinsdag 15 mei 2018 09:30\n"
                f"Aan: {to}\nOnderwerp: {subject}\n\n{body}")
    if style == "gmail":
        return f"Op di 15 mei 2018 om 09:30 schreef Team Duurzame Ontwikkeling <\n{DESK}>:\n\n{_quoted(body)}"
    if style == "apple-mail":
        return (f"> Op 15 mei 2018 om 09:30 heeft Team Duurzame Ontwikkeling <{DESK}> het volgende "
                f"geschreven:\n>\n{_quoted(body)}")
    if style == "thunderbird":
        return f"Op 15-05-18 om 09:30 schreef Team Duurzame Ontwikkeling:\n{_quoted(body)}"
    raise ValueError(style)


CASES = [(style, "top") for style in ("outlook-nl", "outlook-fr", "outlook-en", "outlook-web", "gmail",
                                       "apple-mail", "thunderbird")]
CASES += [(style, "below") for style in ("outlook-nl", "outlook-fr", "outlook-en", "outlook-web", "gmail",
                                         "apple-mail", "thunderbird")]


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    return Desk(dovecot, smtp_server, tmp_path, monkeypatch)


@pytest.mark.parametrize("style,where", CASES, ids=[f"{s}-{w}" for s, w in CASES])
def test_afmelden_in_reply_to_the_confirmation_frees_the_seat(desk, style, where):
    persons = people(21)
    sign_up(desk, persons)
    name, email, _ = persons[2]
    confirmation = desk.mails_to(email)[0]
    history = _history(style, confirmation)
    own = f"afmelden\n\n{name}"
    body = f"{own}\n\n{history}\n" if where == "top" else f"{history}\n\n{own}\n"

    # No Authentication-Results (the shipped default trusts none): the answer to our own mail,
    # naming its Message-ID, is what shows the participant wrote it.
    desk.arrive(plain_mail(name, email, "RE: " + confirmation["Subject"].strip(), body,
                           in_reply_to=confirmation["Message-ID"], auth=None))
    desk.poll()

    state = desk.status()
    assert state[email]["status"] == "cancelled"
    assert state[persons[20][1]]["status"] == "confirmed"      # the first waiting got the seat
    assert DESK not in state
    assert desk.subjects_to(email)[-1] == "Uitschrijving bevestigd"
    assert not desk.mails_to(DESK)


def test_afmelden_naming_a_mail_sent_to_someone_else_waits_for_the_participant(desk):
    """A forger who quotes another person's confirmation (or guesses nothing at all) does not
    cancel anyone: the participant is asked first, from her own address (issue 16)."""
    persons = people(21)
    sign_up(desk, persons)
    name, email, _ = persons[2]
    someone_elses = desk.mails_to(persons[5][1])[0]
    desk.arrive(plain_mail(name, email, "RE: " + someone_elses["Subject"].strip(), "afmelden",
                           in_reply_to=someone_elses["Message-ID"], auth=None))
    desk.poll()

    assert desk.status()[email]["status"] == "confirmed"
    assert desk.status()[persons[20][1]]["status"] == "waitlisted"
    assert "Uitschrijving bevestigd" not in desk.subjects_to(email)
    # Without a key for confirmation links (none is set here) it waits for an organiser.
    assert [i for i in review.review_items(desk.store) if i["sender"] == email]


def test_a_mail_copied_to_a_registrant_confirms_nobodys_cancellation(desk):
    """A colleague's confirmation went to her and, in Cc, to the manager who signed her up: each
    of them has seen its Message-ID, so neither may cancel the other by answering it (a review
    found the manager could cancel her even after she signed up herself, and she him)."""
    lead, colleague = ("Lode Mertens", "lode.mertens@gent.be"), ("Carla Peeters", "carla.peeters@gent.be")
    desk.arrive(plain_mail(*lead, "Inschrijving Leernetwerk SDG",
                           "Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk Sustainable Development "
                           f"Goals, en ook mijn collega {colleague[0]} ({colleague[1]}).\n\n"
                           f"Met vriendelijke groeten,\n{lead[0]}\nStad Gent\n"))
    desk.poll()
    [copied] = [m.message for m in desk.smtp.messages
                if colleague[1] in m.rcpt_tos and lead[1] in m.rcpt_tos]
    # She signs up herself: from now on she alone decides about her seat.
    desk.arrive(plain_mail(*colleague, "Inschrijving Leernetwerk SDG",
                           "Graag schrijf ik mij in voor het Leernetwerk SDG.\n\nCarla Peeters\nStad Gent\n"))
    desk.poll()

    for forger, victim in ((lead, colleague), (colleague, lead)):
        desk.arrive(plain_mail(*victim, "RE: " + copied["Subject"].strip(), "afmelden",
                               in_reply_to=copied["Message-ID"], auth=None))
        desk.poll()
        assert desk.status()[victim[1]]["status"] == "confirmed", (forger, victim)
        assert "Uitschrijving bevestigd" not in desk.subjects_to(victim[1])
