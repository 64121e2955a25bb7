"""`leernetwerk demo`: the whole desk against embedded IMAP and SMTP servers, with sample signups."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import datetime as dt
import os
import random
import tempfile
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

from processor.store import db
from processor.demo import embedded
from processor.desk import pipeline, review, status
from processor.clock import Clock, parse_moment
from processor.config import Settings

DEMO_USER = "desk"
DEMO_PASSWORD_ENV = "LEERNETWERK_DEMO_PASSWORD"

# Invented people and organisations, in the shapes people really write.
FIRST = ["Annelies", "Bram", "Charlotte", "Dries", "Eline", "Femke", "Geert", "Hanne", "Ilse",
         "Jeroen", "Katrien", "Lieven", "Marieke", "Nele", "Olivier", "Pieter", "Roel", "Sofie",
         "Tom", "Veerle", "Wouter", "Yasmine", "Zeger", "Lotte", "Karel", "Hilde", "Mathias"]
LAST = ["Claes", "De Smet", "Van Damme", "Janssens", "Wouters", "Maes", "Willems", "Goossens",
        "Peeters", "Vermeulen", "Van den Broeck", "Hermans", "Aerts", "De Backer", "Lambrechts",
        "Verstraeten", "Mertens", "Dubois", "Jacobs", "Michiels", "Smets", "Declercq"]
ORGS = [("Stad Leuven", "leuven.be"), ("Provincie Antwerpen", "provincieantwerpen.be"),
        ("Gemeente Zemst", "zemst.be"), ("Departement Omgeving", "vlaanderen.be"),
        ("VDAB", "vdab.be"), ("Stad Kortrijk", "kortrijk.be"), ("OCMW Brugge", "brugge.be"),
        ("De Lijn", "delijn.be"), ("Agentschap Innoveren en Ondernemen", "vlaio.be"),
        ("Provincie Limburg", "limburg.be")]

BODIES = [
    "Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk Sustainable Development Goals.\n\n"
    "Met vriendelijke groeten,\n{name}\n{org}\n",
    "Dag Team Duurzame Ontwikkeling,\n\nIk wil graag deelnemen aan het leernetwerk SDG's.\n\n"
    "Naam: {name}\nOrganisatie: {org}\nE-mail: {email}\n\nAlvast bedankt!\n",
    "Hallo,\n\nHierbij mijn inschrijving voor de zes sessies van het Leernetwerk.\n\n"
    "Groeten,\n{name}\n",
]


def sample_signups(count: int, start: dt.datetime, seed: int = 2018) -> list[tuple[bytes, dt.datetime]]:
    """Signups whose Date headers disagree with their arrival order, as happens in real life."""
    rnd = random.Random(seed)
    people, seen = [], set()
    while len(people) < count:
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        if (first, last) in seen:
            continue
        seen.add((first, last))
        org, domain = rnd.choice(ORGS)
        local = f"{first}.{last}".lower().replace(" ", "")
        people.append((f"{first} {last}", f"{local}@{domain}", org))
    mails = []
    arrival = start
    for i, (name, mail_address, org) in enumerate(people):
        arrival += dt.timedelta(minutes=rnd.randint(1, 40), seconds=rnd.randint(0, 59))
        # The sender's clock is wrong by up to two hours either way: it must not matter.
        claimed = arrival + dt.timedelta(minutes=rnd.randint(-120, 120))
        msg = EmailMessage(policy=SMTP)
        username, _, domain = mail_address.partition("@")
        msg["From"] = Address(name, username, domain)
        msg["To"] = "duurzameontwikkeling@vlaanderen.be"
        msg["Subject"] = rnd.choice(["Inschrijving Leernetwerk SDG", "inschrijving",
                                     "Leernetwerk Sustainable Development Goals"])
        msg["Date"] = format_datetime(claimed)
        msg["Message-ID"] = make_msgid(idstring=f"demo{i}", domain=domain)
        msg.set_content(rnd.choice(BODIES).format(name=name, org=org, email=mail_address))
        mails.append((bytes(msg), arrival))
    rnd.shuffle(mails)  # appended out of order; INTERNALDATE decides
    return mails


def review_samples(start: dt.datetime) -> list[tuple[bytes, dt.datetime]]:
    """Two mails the desk must not act on alone: a question, and spam that invites the reader to
    register. They are kept, set aside for an organiser with their reasons, and never answered."""
    samples = [
        ("Bart Aerts", "bart.aerts@zemst.be", "Vraag over het leernetwerk",
         "Goeiedag,\n\nIs er een parkeerplaats bij de zaal van het leernetwerk? Ik overweeg me in te "
         "schrijven.\n\nBart Aerts\nGemeente Zemst\n"),
        ("Event Team", "events@conference-deals.example", "Last seats: register now for the SDG Summit!",
         "Dear colleague,\n\nOnly 3 seats left! Register now for the Global SDG Leadership Summit and "
         "confirm your attendance today: https://conference-deals.example/register\n\nClick here to "
         "unsubscribe.\n"),
    ]
    mails = []
    for i, (name, address, subject, body) in enumerate(samples):
        msg = EmailMessage(policy=SMTP)
        username, _, domain = address.partition("@")
        msg["From"] = Address(name, username, domain)
        msg["To"] = "duurzameontwikkeling@vlaanderen.be"
        msg["Subject"] = subject
        arrival = start + dt.timedelta(hours=2 + i)
        msg["Date"] = format_datetime(arrival)
        msg["Message-ID"] = make_msgid(idstring=f"demo-review{i}", domain=domain)
        msg.set_content(body)
        mails.append((bytes(msg), arrival))
    return mails


def _demo_settings(settings: Settings, imap, smtp) -> Settings:
    mailbox = dataclasses.replace(
        settings.mailbox, host=imap.host, port=imap.port, security="none",
        username=imap.username, password_env=DEMO_PASSWORD_ENV, folder="INBOX", move_to="",
    )
    smtp_settings = dataclasses.replace(
        settings.smtp, host=smtp.host, port=smtp.port, security="none", username="",
        password_env="",
    )
    return dataclasses.replace(settings, mailbox=mailbox, smtp=smtp_settings)


def run(settings: Settings, args) -> int:
    tz = settings.event.timezone
    start = settings.event.sessions[0].starts_at - dt.timedelta(days=42)
    start = start.replace(hour=9, minute=0)
    now = parse_moment(args.now, tz) if args.now else start + dt.timedelta(days=1)
    clock = Clock(now)
    password = os.environ.setdefault(DEMO_PASSWORD_ENV, "demo-" + os.urandom(6).hex())
    db_path = args.db or str(Path(tempfile.mkdtemp(prefix="leernetwerk-demo-")) / "state.sqlite")

    with embedded.embedded_imap(DEMO_USER, password) as imap, embedded.embedded_smtp() as smtp:
        demo = _demo_settings(settings, imap, smtp)
        mails = sample_signups(args.count, start)
        extra = review_samples(start)
        embedded.append_messages(imap, mails + extra)
        print(f"Embedded IMAP on {imap.host}:{imap.port} and SMTP on {smtp.host}:{smtp.port}; "
              f"{len(mails)} sample signups in the inbox, appended out of order, and "
              f"{len(extra)} mails that are not signups (a question, spam).")
        print(f"Registry: {db_path}; clock: {now.isoformat()}\n")

        store = db.Store(db.connect(db_path))
        report = pipeline.poll(store, demo, clock)
        print(f"Poll 1: {report.summary()}")
        again = pipeline.poll(store, demo, clock)
        print(f"Poll 2: {again.summary()}  (nothing twice)\n")

        print(status.as_table(status.registry_status(store, demo)))
        items = review.review_items(store)
        print(f"\nSet aside for an organiser, unanswered ({len(items)}):")
        for item in items:
            print(f"  {item['sender']}: {item['subject']}")
            for why in item["reasons"][:2]:
                print(f"      - {why}")
        received = [email.message_from_bytes(m.data, policy=email.policy.default)
                    for m in smtp.messages]
        print(f"\n{len(received)} replies reached the SMTP server:")
        for msg in received:
            print(f"  {msg['To']}: {msg['Subject']}")
        for msg in received[:1] + received[-1:]:
            body = msg.get_body(preferencelist=("plain",))
            print("\n" + "-" * 72)
            print(f"To: {msg['To']}\nSubject: {msg['Subject']}\n")
            print(body.get_content() if body else "")
    return 0
