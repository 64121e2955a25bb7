"""Hostile mail against the desk (issue 16): one mail must not stop, stall or hijack it.

Through a real poll (Dovecot + aiosmtpd) wherever the finding came from one.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import subprocess
import sys

import pytest

from processor.desk import digest, organiser
from tests.desk import PROJECT, signup
from tests.test_desk import write_config
from tests.test_waitlist import NOW, START, Desk, plain_mail

COLLEAGUE = ("Beste,\n\nIk schrijf mijn collega in voor het Leernetwerk SDG: {name} ({address}), "
             "Stad Gent.\n\nMet vriendelijke groeten,\nAnn Maes\nStad Gent\n")


def names_colleague(name: str, address: str) -> bytes:
    return plain_mail("Ann Maes", "ann.maes@gent.be", "Inschrijving collega",
                      COLLEAGUE.format(name=name, address=address))


# -- finding 1: one accented address never stops sending ---------------------------------------

def test_an_accented_address_is_sent_with_smtputf8_and_the_queue_goes_on(dovecot, smtp_server,
                                                                         tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    desk.arrive(names_colleague("José Peeters", "jösé.peeters@gent.be"))
    desk.arrive(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent", date=START))

    report = desk.poll()

    assert report.flush.failed == 0
    assert "jösé.peeters@gent.be" in [r for m in smtp_server.messages for r in m.rcpt_tos]
    assert desk.mails_to("bert.claes@gent.be")
    [reply] = [m for m in smtp_server.messages if "jösé.peeters@gent.be" in m.rcpt_tos]
    # As UTF-8 (RFC 6532), not an encoded-word inside the address, which is no address.
    parsed = email.message_from_bytes(reply.data, policy=email.policy.default.clone(utf8=True))
    assert "<jösé.peeters@gent.be>".encode() in reply.data
    assert parsed["To"].addresses[0].domain == "gent.be"


def test_without_smtputf8_the_accented_reply_fails_alone_and_the_digest_shows_it(
        dovecot, make_smtp_server, tmp_path, monkeypatch):
    relay = make_smtp_server(smtputf8=False)
    desk = Desk(dovecot, relay, tmp_path, monkeypatch)
    desk.arrive(names_colleague("José Peeters", "jösé.peeters@gent.be"))
    desk.arrive(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent", date=START))

    report = desk.poll()

    assert report.flush.failed == 1
    assert desk.mails_to("bert.claes@gent.be")
    assert not any("jösé.peeters@gent.be" in m.rcpt_tos for m in relay.messages)
    # A second poll neither crashes nor tries again: the row failed for good.
    again = desk.poll()
    assert again.flush.sent == again.flush.failed == 0
    [failed] = digest.contents(desk.store, desk.settings, NOW)["attention"]["failed_mail"]
    assert "jösé.peeters@gent.be" in failed["to"]
    assert "SMTPUTF8" in failed["error"]


def test_an_organiser_command_that_sends_at_once_does_not_crash(dovecot, make_smtp_server,
                                                                tmp_path):
    relay = make_smtp_server(smtputf8=False)
    cfg = write_config(tmp_path, dovecot, relay)
    base = ["--config", str(cfg), "--db", str(tmp_path / "state.sqlite"),
            "--now", "2018-05-20T12:00:00+02:00"]
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    run = subprocess.run([sys.executable, "-m", "processor", "register", "--email",
                          "jösé.peeters@gent.be", "--name", "José Peeters", *base],
                         cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "1 mail(s) konden niet verstuurd worden" in run.stdout


# -- finding 4: identity is the Message-ID and the hash of the bytes ---------------------------

def _with_message_id(raw: bytes, message_id: str) -> bytes:
    lines = raw.split(b"\r\n")
    return b"\r\n".join(b"Message-ID: " + message_id.encode() if line.startswith(b"Message-ID:")
                        else line for line in lines)


def test_two_mails_with_one_message_id_are_each_registered_answered_and_marked(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    reused = "<formulier@webformulier.example>"
    desk.arrive(_with_message_id(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent",
                                        date=START), reused))
    desk.arrive(_with_message_id(signup("Carine Wouters", "carine.wouters@gent.be", "Stad Gent",
                                        date=START), reused))

    desk.poll()

    assert set(desk.status()) == {"bert.claes@gent.be", "carine.wouters@gent.be"}
    assert desk.mails_to("bert.claes@gent.be") and desk.mails_to("carine.wouters@gent.be")
    rows = desk.store.conn.execute("SELECT uid, state FROM messages ORDER BY uid").fetchall()
    assert [tuple(r) for r in rows] == [(1, "processed"), (2, "processed")]
    assert all(b"$Processed" in f for f in dovecot.flags_of().values())


def test_the_same_mail_fetched_again_after_the_upgrade_is_still_one_row(
        dovecot, smtp_server, tmp_path, monkeypatch):
    """A database from before migration 10 (identity = the Message-ID) is rewritten in place:
    after a UIDVALIDITY reset its mails are recognised, not answered again."""
    from processor.store import db

    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    desk.arrive(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent", date=START))
    desk.poll()
    conn = desk.store.conn
    conn.execute("UPDATE messages SET identity = message_id")
    conn.execute("DELETE FROM schema_migrations WHERE version = 10")
    store = db.Store(db.connect(desk.path))
    desk.store = store

    dovecot.recreate_inbox(keep_messages=True)
    desk.poll()

    assert store.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
    assert len(smtp_server.messages) == 1
    assert all(b"$Processed" in f for f in dovecot.flags_of().values())
