"""Organisers act by mail (issue 19), and who may withdraw a seat (issue 16, findings 5 and 7):
through real polls on Dovecot + aiosmtpd + SQLite, the digest's mailto: links sent back as an
organiser's mail client would send them."""

from __future__ import annotations

import csv
import datetime as dt
import html as htmllib
import io
import re
import shutil
import subprocess
import tempfile
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import pytest

from processor.desk import bymail, digest, outbox, pipeline, readahead, review, tokens
from processor.desk.organiser import history
from tests.desk import PROJECT
from tests.test_digest import bounce_for
from tests.test_waitlist import CANCEL, Desk, plain_mail

BXL = ZoneInfo("Europe/Brussels")
ANN = "ann.organisator@vlaanderen.be"
BOB = "bob.organisator@vlaanderen.be"
DESK = "duurzameontwikkeling@vlaanderen.be"
SECRET_ENV = "LEERNETWERK_TEST_TOKEN_SECRET"
ARTIFACTS = PROJECT / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PERSONS = [
    ("Lotte Aerts", "lotte.aerts@gemeente1.be", "Gemeente Proef1"),
    ("Mats Boon", "mats.boon@gemeente2.be", "Gemeente Proef2"),
    ("Nora Cools", "nora.cools@gemeente3.be", "Gemeente Proef3"),
    ("Omar Dees", "omar.dees@gemeente4.be", "Gemeente Proef4"),
]


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2018, 5, day, hour, minute, tzinfo=BXL)


def signup_mail(name, email, org, auth="pass") -> bytes:
    return plain_mail(name, email, "Inschrijving Leernetwerk SDG",
                      "Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk Sustainable "
                      f"Development Goals.\n\nNaam: {name}\nOrganisatie: {org}\nE-mail: {email}\n\n"
                      f"Met vriendelijke groeten,\n{name}\n", auth=auth)


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "een-geheim-van-minstens-zestien-tekens")
    d = Desk(dovecot, smtp_server, tmp_path, monkeypatch, event={"capacity": 3},
             organisers={"addresses": [DESK, ANN, BOB], "token_secret_env": SECRET_ENV})
    d.arrival = at(20, 9)
    d.crash = True
    real = pipeline.understand

    def understand(raw, options):
        if d.crash and b"X-Test-Crash: yes" in raw:
            raise RuntimeError("kapot in de test")
        return real(raw, options)

    monkeypatch.setattr(pipeline, "understand", understand)
    # The patched reading exists only in this process: read here, not in the guarded helper.
    monkeypatch.setattr(readahead, "GUARDED", False)
    return d


def mail_from(sender: str, subject: str, body: str, *, auth: str | None = "pass",
              name: str = "Organisator") -> bytes:
    return plain_mail(name, sender, subject, body, auth=auth)


def click(desk, href: str, sender: str = ANN, *, auth: str | None = "pass") -> None:
    """What Outlook does with a mailto: link, then Send: a new mail to the desk."""
    parts = urlsplit(href)
    assert parts.scheme == "mailto" and parts.path == DESK
    query = dict(p.split("=", 1) for p in parts.query.split("&"))
    desk.arrive(mail_from(sender, unquote(query["subject"]), unquote(query["body"]), auth=auth),
                minutes=1)


def links_of(html: str) -> dict[str, list[str]]:
    """label → hrefs, in the order the HTML shows them."""
    out: dict[str, list[str]] = {}
    for href, label in re.findall(r'<a href="(mailto:[^"]+)"[^>]*>([^<]+)</a>', html):
        out.setdefault(label.strip(), []).append(htmllib.unescape(href))
    return out


def first_day(desk) -> None:
    """Three seats: three confirmed, one waiting; a signup our server says is forged (review),
    a mail that crashes (quarantine), and a bounce of a confirmed participant's address."""
    for person in PERSONS:
        desk.arrive(signup_mail(*person))
    desk.arrive(signup_mail("Pia Goossens", "pia.goossens@gemeente5.be", "Gemeente Proef5",
                            auth="fail"))
    desk.arrive(signup_mail("Hans Smet", "hans.smet@genk.be", "Stad Genk")
                .replace(b"MIME-Version", b"X-Test-Crash: yes\r\nMIME-Version", 1))
    desk.poll(at(20, 11))
    # A bounce counts only for a mail the desk sent to that address (issue 16).
    desk.arrive(bounce_for(PERSONS[1][1], desk.mails_to(PERSONS[1][1])[0]["Message-ID"]))
    desk.poll(at(20, 12))


def sent_digest(desk, moment=None):
    moment = moment or at(21, 8)
    digest.run_job(desk.path, desk.settings, moment)
    outbox.flush(desk.store, desk.settings, moment)
    [mail] = [m.message for m in desk.smtp.messages
              if m.message["Subject"].strip().startswith("Dagoverzicht")]
    return mail


def digest_links(desk):
    mail = sent_digest(desk)
    return links_of(mail.get_body(("html",)).get_content()), mail


def snapshot(desk) -> tuple:
    regs = tuple(sorted((r["email"], r["status"]) for r in desk.status().values()))
    states = tuple(r[0] for r in desk.store.conn.execute(
        "SELECT state FROM messages WHERE id <= 7 ORDER BY id"))
    return regs, states


def answers_to(desk, who: str) -> list:
    return [m for m in desk.mails_to(who) if not m["Subject"].strip().startswith("Dagoverzicht")]


def mails_since(desk, count: int) -> list:
    return desk.smtp.messages[count:]


# -- the links --------------------------------------------------------------------------------------

def test_every_link_is_a_mailto_to_the_desk_under_2000_characters(desk):
    first_day(desk)
    links, mail = digest_links(desk)
    assert set(links) == {"Inschrijven", "Afmelding", "Niets doen", "Opnieuw proberen",
                          "Uitschrijven"}
    text = mail.get_body(("plain",)).get_content()
    text = " ".join(text.split())  # wrapped at 76 (issue 18): compare words
    for hrefs in links.values():
        for href in hrefs:
            parts = urlsplit(href)
            assert parts.scheme == "mailto" and parts.path == DESK
            assert len(href) <= bymail.MAX_MAILTO
            assert re.fullmatch(r"mailto:[A-Za-z0-9@.%&=_~!*'()+,;:/?-]+", href), href
            assert href in text   # the same link, as a plain line in the text part
            query = dict(p.split("=", 1) for p in parts.query.split("&"))
            assert len(tokens.find(unquote(query["subject"]))) == 1


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_digest_with_its_buttons_in_chromium(desk):
    first_day(desk)
    _, mail = digest_links(desk)
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "digest-links.html"
    page.write_text(mail.get_body(("html",)).get_content(), encoding="utf-8")
    png = ARTIFACTS / "digest-links.png"
    png.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile:
        shot = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}",
                               "--window-size=800,1800", f"--screenshot={png}", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert png.exists() and png.stat().st_size > 20_000, shot.stderr[-2000:]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    # The browser kept each button as a mailto: anchor with its label.
    assert len(re.findall(r'<a href="mailto:', dom)) == 5
    page.unlink()


# -- each decision, applied once -------------------------------------------------------------------

def test_each_link_applies_once_answers_the_organiser_and_mails_the_participant(desk):
    first_day(desk)
    links, _ = digest_links(desk)
    held = desk.store.conn.execute(
        "SELECT id FROM messages WHERE state = 'review'").fetchone()[0]
    before = len(desk.smtp.messages)

    # "Inschrijven" on the held signup: Pia gets the seat Mats's bounce will free? No: 3 seats
    # are taken, so she joins the waiting list at her mail's own arrival time.
    click(desk, links["Inschrijven"][0])
    desk.poll(at(21, 9))
    assert desk.store.message(held)["state"] == "processed"
    assert desk.status()["pia.goossens@gemeente5.be"]["status"] == "waitlisted"
    [answer] = answers_to(desk, ANN)
    text = answer.get_body(("plain",)).get_content()
    text = " ".join(text.split())  # wrapped at 76 (issue 18): compare words
    assert answer["Subject"].strip().startswith("Uitgevoerd")
    assert f"mail {held} afgehandeld als inschrijven" in text
    assert "wachtlijst aan pia.goossens@gemeente5.be" in text
    assert [e["actor"] for e in history(desk.store, "pia.goossens@gemeente5.be")][-1] == \
        f"organiser:{ANN}"
    assert [list(m.rcpt_tos) for m in mails_since(desk, before)] == [
        ["pia.goossens@gemeente5.be"], [ANN]]

    # "Uitschrijven" for the bouncing address: the first one waiting gets the seat.
    before = len(desk.smtp.messages)
    click(desk, links["Uitschrijven"][0], BOB)
    desk.poll(at(21, 9, 5))
    state = desk.status()
    assert state[PERSONS[1][1]]["status"] == "cancelled"
    assert state[PERSONS[3][1]]["status"] == "confirmed"
    recipients = sorted(r for m in mails_since(desk, before) for r in m.rcpt_tos)
    assert recipients == sorted([PERSONS[1][1], PERSONS[3][1], BOB])
    text = answers_to(desk, BOB)[-1].get_body(("plain",)).get_content()
    text = " ".join(text.split())  # wrapped at 76 (issue 18): compare words
    assert "van de wachtlijst naar bevestigd: omar.dees@gemeente4.be" in text

    # "Opnieuw proberen" for the quarantined mail, after the fix.
    desk.crash = False
    click(desk, links["Opnieuw proberen"][0])
    desk.poll(at(21, 9, 10))
    assert desk.status()["hans.smet@genk.be"]["status"] == "waitlisted"
    assert "opnieuw verwerkt" in answers_to(desk, ANN)[-1].get_body(("plain",)).get_content()

    # The same link twice: nothing changes, only the organiser hears why.
    frozen, before = snapshot(desk), len(desk.smtp.messages)
    click(desk, links["Inschrijven"][0])
    desk.poll(at(21, 9, 15))
    assert snapshot(desk) == frozen
    [refusal] = mails_since(desk, before)
    assert list(refusal.rcpt_tos) == [ANN]
    text = refusal.message.get_body(("plain",)).get_content()
    text = " ".join(text.split())  # wrapped at 76 (issue 18): compare words
    assert "NIET uitgevoerd" in text and f"al gebruikt door {ANN}" in text


def test_the_cli_and_the_mail_share_one_decision(desk):
    """A mail settled on the server first: the link then says who settled it and how."""
    from processor.desk import organiser

    first_day(desk)
    links, _ = digest_links(desk)
    held = desk.store.conn.execute("SELECT id FROM messages WHERE state = 'review'").fetchone()[0]
    organiser.resolve(desk.store, desk.settings, message_id=held, as_kind="nothing", person=None,
                      now=at(21, 8, 30))
    click(desk, links["Inschrijven"][0])
    desk.poll(at(21, 9))
    assert "pia.goossens@gemeente5.be" not in desk.status()
    text = answers_to(desk, ANN)[-1].get_body(("plain",)).get_content()
    text = " ".join(text.split())  # wrapped at 76 (issue 18): compare words
    assert f"mail {held} werd al afgehandeld door" in text


def test_two_organisers_settle_the_same_item_one_applies(desk):
    first_day(desk)
    links, _ = digest_links(desk)
    click(desk, links["Niets doen"][0], ANN)
    click(desk, links["Inschrijven"][0], BOB)
    desk.poll(at(21, 9))
    assert "pia.goossens@gemeente5.be" not in desk.status()
    assert answers_to(desk, ANN)[-1]["Subject"].strip().startswith("Uitgevoerd")
    text = answers_to(desk, BOB)[-1].get_body(("plain",)).get_content()
    text = " ".join(text.split())  # wrapped at 76 (issue 18): compare words
    assert "NIET uitgevoerd" in text and f"werd al afgehandeld door {ANN}" in text
    assert "pia.goossens@gemeente5.be" not in [r for m in desk.smtp.messages for r in m.rcpt_tos]


def _edit(href: str, old: str, new: str) -> str:
    assert old in href
    return href.replace(old, new)


@pytest.mark.parametrize("case", ["expired", "other item", "other action", "stranger",
                                  "failing authentication", "desk's own address"])
def test_a_decision_that_may_not_apply_changes_nothing(desk, case):
    first_day(desk)
    links, _ = digest_links(desk)
    href = links["Inschrijven"][0]
    token = tokens.find(unquote(href))[0]
    _, code, item, expiry, mac = token.split("-")
    sender, auth, moment = ANN, "pass", at(21, 9)
    if case == "expired":
        moment = at(21, 8) + dt.timedelta(days=desk.settings.organiser_mail.link_days, minutes=5)
    elif case == "other item":
        other = f"m{int(item[1:]) + 1}"
        href = _edit(href, f"-{item}-", f"-{other}-")
    elif case == "other action":
        href = _edit(href, f"LN-{code}-", "LN-a-")
    elif case == "stranger":
        sender = "iemand@elders.example"
    elif case == "failing authentication":
        auth = "fail"
    else:
        sender = DESK
    frozen, before = snapshot(desk), len(desk.smtp.messages)
    click(desk, href, sender, auth=auth)
    desk.poll(moment)
    assert snapshot(desk) == frozen
    sent = mails_since(desk, before)
    assert all(list(m.rcpt_tos) == [ANN] for m in sent)       # only ever the allow-listed organiser
    if sender == ANN:
        [refusal] = sent
        text = refusal.message.get_body(("plain",)).get_content()
        text = " ".join(text.split())  # wrapped at 76 (issue 18): compare words
        assert "NIET uitgevoerd" in text
        why = {"expired": "verlopen", "other item": "niet geldig", "other action": "niet geldig",
               "failing authentication": "DMARC"}[case]
        assert why in text
    else:
        assert sent == []
    assert desk.store.conn.execute("SELECT COUNT(*) FROM used_tokens").fetchone()[0] == 0


# -- commands written by hand ----------------------------------------------------------------------

def _confirm_link(answer) -> str:
    [href] = links_of(answer.get_body(("html",)).get_content())["Bevestigen"]
    return href


def test_a_command_by_hand_applies_only_when_its_organiser_confirms(desk):
    first_day(desk)
    desk.arrive(mail_from(ANN, "telefoon", "INSCHRIJVEN Rik Jacobs <rik.jacobs@gemeente6.be> "
                          "Gemeente Proef6\n\nGroeten,\nAnn\n"))
    desk.poll(at(21, 9))
    assert "rik.jacobs@gemeente6.be" not in desk.status()
    [ask] = answers_to(desk, ANN)
    assert ask["Subject"].strip().startswith("Bevestig uw opdracht")
    assert "Rik Jacobs <rik.jacobs@gemeente6.be>, Gemeente Proef6 inschrijven" in \
        ask.get_body(("plain",)).get_content()
    href = _confirm_link(ask)

    # Someone else (even another organiser) cannot confirm it.
    frozen = snapshot(desk)
    click(desk, href, BOB)
    desk.poll(at(21, 9, 5))
    assert snapshot(desk) == frozen
    assert "niet geldig" in answers_to(desk, BOB)[-1].get_body(("plain",)).get_content()

    click(desk, href, ANN)
    desk.poll(at(21, 9, 10))
    assert desk.status()["rik.jacobs@gemeente6.be"]["status"] == "waitlisted"
    assert desk.mails_to("rik.jacobs@gemeente6.be")
    assert answers_to(desk, ANN)[-1]["Subject"].strip().startswith("Uitgevoerd")


def test_a_command_never_confirmed_changes_nothing(desk):
    first_day(desk)
    frozen, before = snapshot(desk), len(desk.smtp.messages)
    desk.arrive(mail_from(ANN, "afmelding", f"AFMELDEN {PERSONS[0][1]}\n"))
    desk.arrive(mail_from(ANN, "bericht", "BERICHT sessie 1: Het adres is Havenlaan 88.\n"))
    desk.poll(at(21, 9))
    assert snapshot(desk) == frozen
    assert all(list(m.rcpt_tos) == [ANN] for m in mails_since(desk, before))
    assert len(mails_since(desk, before)) == 2


def test_cancel_and_announce_by_mail_after_confirmation(desk):
    first_day(desk)
    desk.arrive(mail_from(BOB, "afmelding", f"AFMELDEN {PERSONS[0][1]}\n"))
    desk.poll(at(21, 9))
    click(desk, _confirm_link(answers_to(desk, BOB)[-1]), BOB)
    desk.poll(at(21, 9, 5))
    assert desk.status()[PERSONS[0][1]]["status"] == "cancelled"
    assert desk.status()[PERSONS[3][1]]["status"] == "confirmed"    # the first one waiting

    desk.arrive(mail_from(BOB, "bericht", "BERICHT sessie 1: De sessie gaat door in de "
                          "Havenlaan 88, zaal 3.\n"))
    desk.poll(at(21, 10))
    click(desk, _confirm_link(answers_to(desk, BOB)[-1]), BOB)
    before = len(desk.smtp.messages)
    desk.poll(at(21, 10, 5))
    confirmed = {e for e, r in desk.status().items() if r["status"] == "confirmed"}
    announced = {r for m in mails_since(desk, before) for r in m.rcpt_tos
                 if m.message["Subject"].strip().startswith("Bericht over sessie 1")}
    assert announced == confirmed and len(confirmed) == 3
    mail = next(m.message for m in mails_since(desk, before) if list(m.rcpt_tos) == [PERSONS[2][1]])
    assert "Havenlaan 88, zaal 3" in mail.get_body(("plain",)).get_content()


def test_overview_by_mail_sends_the_list_with_the_csv(desk):
    first_day(desk)
    desk.arrive(mail_from(ANN, "lijst", "OVERZICHT\n"))
    desk.poll(at(21, 9))
    [answer] = answers_to(desk, ANN)
    [attachment] = list(answer.iter_attachments())
    rows = list(csv.DictReader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))
    assert {r["email"] for r in rows} == {p[1] for p in PERSONS}
    assert "3 bevestigd, 1 op de wachtlijst" in answer.get_body(("plain",)).get_content()


def test_mail_from_an_organiser_without_a_decision_is_not_a_signup(desk):
    desk.arrive(mail_from(ANN, "Inschrijving", "Graag schrijf ik mij in voor het leernetwerk.\n"
                          "Naam: Ann Organisator\n"))
    desk.poll(at(21, 9))
    assert desk.status() == {} and desk.smtp.messages == []


# -- issue 16: who may withdraw a seat -------------------------------------------------------------

def test_an_unauthenticated_cancellation_waits_for_the_participant(desk):
    first_day(desk)
    name, email, _ = PERSONS[0]
    before = len(desk.smtp.messages)
    # A forged From: no verdict of our server (the shipped default has none).
    desk.arrive(plain_mail(name, email, "Afmelding", CANCEL.format(name=name), auth=None))
    desk.poll(at(21, 9))
    assert desk.status()[email]["status"] == "confirmed"
    [ask] = mails_since(desk, before)
    assert list(ask.rcpt_tos) == [email] and ask.message["Subject"].strip().startswith("Bevestig uw afmelding")
    [href] = [h for h in links_of(ask.message.get_body(("html",)).get_content()).values()][0]
    # Asked again (a forger insisting): she is not written to twice.
    desk.arrive(plain_mail(name, email, "Afmelding", CANCEL.format(name=name), auth=None))
    desk.poll(at(21, 9, 2))
    assert len(mails_since(desk, before)) == 1

    # The link from any other address does nothing, and answers nobody.
    frozen, before = snapshot(desk), len(desk.smtp.messages)
    click(desk, href, "iemand@elders.example")
    desk.poll(at(21, 9, 5))
    assert snapshot(desk) == frozen and mails_since(desk, before) == []

    # From the participant's own address: cancelled, the first waiting promoted.
    click(desk, href, email, auth=None)
    desk.poll(at(21, 9, 10))
    assert desk.status()[email]["status"] == "cancelled"
    assert desk.status()[PERSONS[3][1]]["status"] == "confirmed"
    assert not [i for i in review.review_items(desk.store) if i["sender"] == email]


def test_an_organiser_can_settle_a_cancellation_waiting_for_its_participant(desk):
    first_day(desk)
    name, email, _ = PERSONS[2]
    desk.arrive(plain_mail(name, email, "Afmelding", CANCEL.format(name=name), auth=None))
    desk.poll(at(21, 7))
    links, _ = digest_links(desk)
    held = [i["id"] for i in review.review_items(desk.store) if i["sender"] == email][0]
    href = [h for h in links["Afmelding"] if f"m{held}-" in unquote(h)][0]
    click(desk, href, ANN)
    desk.poll(at(21, 9))
    assert desk.status()[email]["status"] == "cancelled"
    # The participant's own link now finds the matter settled: nothing more happens.
    ask = [m for m in desk.mails_to(email) if m["Subject"].strip().startswith("Bevestig")][0]
    [href] = list(links_of(ask.get_body(("html",)).get_content()).values())[0]
    before = len(desk.smtp.messages)
    click(desk, href, email)
    desk.poll(at(21, 9, 5))
    assert mails_since(desk, before) == []


def test_a_substitute_named_with_another_organisation_in_the_text_is_not_trusted(desk):
    for person in PERSONS[:2]:
        desk.arrive(signup_mail(*person))
    desk.poll(at(20, 12))
    name, email, org = PERSONS[0]
    desk.arrive(plain_mail(name, email, "Afmelding", (
        "Hallo,\n\nIk kan helaas niet deelnemen. Mijn collega Eve Stil "
        f"(eve@attacker.example), {org}, neemt mijn plaats in.\n\nGroeten,\n{name}\n")))
    desk.poll(at(20, 13))
    assert desk.status()[email]["status"] == "confirmed"
    assert "eve@attacker.example" not in desk.status()
    assert "eve@attacker.example" not in [r for m in desk.smtp.messages for r in m.rcpt_tos]


def test_an_unauthenticated_substitution_waits_for_the_participant(desk):
    for person in PERSONS[:2]:
        desk.arrive(signup_mail(*person))
    desk.poll(at(20, 12))
    name, email, _ = PERSONS[0]
    colleague = "mira.vos@gemeente1.be"
    desk.arrive(plain_mail(name, email, "Afmelding", (
        f"Hallo,\n\nIk kan helaas niet deelnemen. Mijn collega Mira Vos ({colleague}) neemt "
        f"mijn plaats in.\n\nGroeten,\n{name}\n"), auth=None))
    desk.poll(at(20, 13))
    assert colleague not in desk.status()
    [ask] = [m for m in desk.mails_to(email) if m["Subject"].strip().startswith("Bevestig uw vervanging")]
    [href] = list(links_of(ask.get_body(("html",)).get_content()).values())[0]
    click(desk, href, email)
    desk.poll(at(20, 14))
    state = desk.status()
    assert state[email]["status"] == "cancelled" and state[colleague]["status"] == "confirmed"
    assert state[colleague]["arrived_at"] == state[email]["arrived_at"]


def test_own_signup_supersedes_whoever_registered_them(desk):
    gina, eve = "gina.wouters@gemeente7.be", "eve.stil@gemeente8.be"
    desk.arrive(plain_mail("Eve Stil", eve, "Inschrijving collega", (
        "Beste,\n\nIk schrijf graag mijn collega in voor het leernetwerk:\n"
        f"- Gina Wouters ({gina})\n\nGroeten,\nEve Stil\n")))
    desk.poll(at(20, 10))
    assert desk.status()[gina]["status"] == "confirmed"
    desk.arrive(signup_mail("Gina Wouters", gina, "Gemeente Proef7"))
    desk.poll(at(20, 11))
    desk.arrive(plain_mail("Eve Stil", eve, "Afmelding", (
        f"Dag,\n\nGelieve {gina} uit te schrijven voor het leernetwerk; zij kan niet "
        "deelnemen.\n\nGroeten,\nEve\n")))
    desk.poll(at(20, 12))
    assert desk.status()[gina]["status"] == "confirmed"
    assert [e["action"] for e in history(desk.store, gina)] == [
        "confirmed", "registrant_superseded", "already_registered"]
    assert any(i["sender"] == eve for i in review.review_items(desk.store))
    assert [m["Subject"].strip().split(":")[0] for m in desk.mails_to(eve)] == [
        "Inschrijving bevestigd"]     # Eve was copied on Gina's confirmation, and nothing since


# -- the token itself, and the samples -------------------------------------------------------------

def test_a_token_binds_action_item_expiry_and_address():
    key, now = b"sleutel-van-zestien-tekens", dt.datetime(2018, 5, 21, 8, tzinfo=dt.timezone.utc)
    expires = now + dt.timedelta(days=7)
    token = tokens.make(key, "registration", "m12", expires)
    assert len(token.text) < 60 and tokens.parse(token.text) == token
    assert tokens.verify(key, tokens.parse(token.text), now) == "valid"
    assert tokens.verify(key, token, expires) == "expired"
    assert tokens.verify(b"een-andere-sleutel-zestien", token, now) == "invalid"
    for changed in (token.text.replace("-i-", "-n-"), token.text.replace("-m12-", "-m13-")):
        assert tokens.verify(key, tokens.parse(changed), now) == "invalid"
    later = tokens.make(key, "registration", "m12", expires + dt.timedelta(days=30))
    forged = tokens.Token("registration", "m12", later.expires, token.mac)
    assert tokens.verify(key, forged, now) == "invalid"
    bound = tokens.make(key, "confirm", "c3", expires, "an@gent.be")
    assert tokens.verify(key, bound, now, "an@gent.be") == "valid"
    assert tokens.verify(key, bound, now, "eve@elders.be") == "invalid"
    assert tokens.parse("LN-x-m12-abc-" + "a" * 24) is None


def test_the_samples_of_the_by_mail_kinds_carry_the_real_keys(desk, monkeypatch):
    from processor.demo import samples
    from processor.mail import compose

    seen: dict[str, set] = {}
    real = compose.render

    def recording(settings_, kind, context):
        seen.setdefault(kind, set()).update(context)
        return real(settings_, kind, context)

    monkeypatch.setattr(compose, "render", recording)
    first_day(desk)
    name, email, _ = PERSONS[0]
    desk.arrive(plain_mail(name, email, "Afmelding", CANCEL.format(name=name), auth=None))
    desk.arrive(mail_from(ANN, "bericht", "BERICHT sessie 1: Zaal 3.\n"))
    desk.poll(at(21, 9))
    click(desk, _confirm_link(answers_to(desk, ANN)[-1]), ANN)
    desk.poll(at(21, 9, 5))
    base = set(compose.event_context(desk.settings, at(21, 9))) | {"person"}
    for kind in samples.BY_MAIL_KINDS:
        for variant in samples.variants(desk.settings, kind):
            assert set(variant) == seen[kind] - base, kind
            if kind == "organiser_answer":
                assert set(variant["answer"]) == {
                    "subject", "refused", "summary", "done", "mailed", "command",
                    "confirm_link", "token", "expires", "attachment"}


def test_the_digest_and_answers_coming_back_to_the_desk_are_never_input(desk):
    """The shipped [organisers] holds the desk's own mailbox: the digest lands where the desk
    reads. Neither it, nor an answer to an organiser, nor an organiser's reply quoting the
    digest's links is a decision or a signup."""
    first_day(desk)
    _, digest_mail = digest_links(desk)
    click(desk, links_of(digest_mail.get_body(("html",)).get_content())["Niets doen"][0])
    desk.poll(at(21, 9))
    answer = answers_to(desk, ANN)[-1]
    frozen, before = snapshot(desk), len(desk.smtp.messages)
    desk.arrive(bytes(digest_mail))
    desk.arrive(bytes(answer))
    quoted = "\n".join("> " + line for line in
                        digest_mail.get_body(("plain",)).get_content().splitlines())
    desk.arrive(mail_from(BOB, "RE: " + digest_mail["Subject"].strip(),
                          f"Dank je, ziet er goed uit.\n\nBob\n\n{quoted}\n"))
    desk.poll(at(21, 10))
    assert snapshot(desk) == frozen
    assert mails_since(desk, before) == []
    assert desk.store.conn.execute("SELECT COUNT(*) FROM used_tokens").fetchone()[0] == 1


def test_refusals_to_an_organisers_address_are_few_and_never_echo_the_subject(desk):
    """Anyone can write an organiser's From: refusals to it carry none of the mail's own words,
    and at most REFUSALS_PER_DAY go out in a day (a review sent eight, each with a phishing line)."""
    first_day(desk)
    before = len(desk.smtp.messages)
    bait = "Uw wachtwoord verloopt vandaag, log in op https://evil.example/login"
    for i in range(bymail.REFUSALS_PER_DAY + 3):
        desk.arrive(plain_mail("Ann Organisator", ANN, f"{bait} LN-i-m1-1-{'a' * 24}", "x"))
    desk.poll(at(21, 9))
    refusals = mails_since(desk, before)
    assert 0 < len(refusals) <= bymail.REFUSALS_PER_DAY
    for refusal in refusals:
        assert "evil.example" not in refusal.data.decode("utf-8", "replace")
