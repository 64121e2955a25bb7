"""Mailbox behaviour against a real Dovecot: no double processing, nothing changed before commit."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import pytest

from processor.store import db
from processor.desk import pipeline
from processor.clock import Clock
from processor.mail.imap import Mailbox, MailboxError
from tests.desk import desk_settings, signup

START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone.utc)
NOW = Clock(dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc))

AUTO_REPLY = b"""From: Piet Afwezig <piet@stad.be>\r
To: duurzameontwikkeling@vlaanderen.be\r
Subject: Automatisch antwoord: Inschrijving Leernetwerk\r
Auto-Submitted: auto-replied\r
Message-ID: <ooo-1@stad.be>\r
Date: Mon, 14 May 2018 09:00:00 +0200\r
\r
Ik ben afwezig tot 1 juni. Voor dringende zaken: mail mijn collega.\r
"""

DSN = b"""From: Mail Delivery System <MAILER-DAEMON@mail.vlaanderen.be>\r
To: duurzameontwikkeling@vlaanderen.be\r
Subject: Undelivered Mail Returned to Sender\r
Message-ID: <dsn-1@mail.vlaanderen.be>\r
Date: Mon, 14 May 2018 09:00:00 +0200\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r
\r
--b\r
Content-Type: text/plain\r
\r
Your message could not be delivered.\r
--b\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mail.vlaanderen.be\r
\r
Final-Recipient: rfc822; weg@gemeente.be\r
Action: failed\r
Status: 5.1.1\r
\r
--b--\r
"""


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    return settings, db.Store(db.connect(tmp_path / "state.sqlite"))


def test_fetching_alone_changes_nothing_on_the_server(desk, dovecot):
    settings, store = desk
    dovecot.append(signup("An Peeters", "an@stad.be", "Stad Gent", date=START), START)
    with Mailbox(settings.mailbox) as mailbox:
        fetched = list(mailbox.fetch(mailbox.new_uids(0)))
    assert len(fetched) == 1 and fetched[0].arrived_at == START
    assert dovecot.flags_of() == {1: frozenset()}


def test_a_recreated_mailbox_processes_nothing_twice_and_skips_nothing(desk, dovecot, smtp_server):
    settings, store = desk
    for i in range(3):
        dovecot.append(signup(f"P{i} Test", f"p{i}@stad.be", "Stad Gent", date=START),
                       START + dt.timedelta(minutes=i))
    pipeline.poll(store, settings, NOW)
    assert len(smtp_server.messages) == 3

    dovecot.recreate_inbox(keep_messages=True)   # same mails, new UIDVALIDITY, UIDs from 1
    dovecot.append(signup("Nieuw Lid", "nieuw@stad.be", "Stad Gent", date=START),
                   START + dt.timedelta(hours=1))
    report = pipeline.poll(store, settings, NOW)

    assert report.fetched == 1 and report.applied == 1
    assert [m.rcpt_tos for m in smtp_server.messages][-1] == ("nieuw@stad.be",)
    assert len(smtp_server.messages) == 4
    # The old mails are marked again in their new places.
    assert all(b"$Processed" in f for f in dovecot.flags_of().values())


def test_a_mail_without_message_id_seen_twice_is_one_row(desk, dovecot):
    settings, store = desk
    raw = signup("Geen Id", "geenid@stad.be", "Stad Gent", date=START)
    raw = b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Message-ID"))
    dovecot.append(raw, START)
    pipeline.poll(store, settings, NOW)
    dovecot.recreate_inbox(keep_messages=True)
    pipeline.poll(store, settings, NOW)
    assert store.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1


def test_machines_get_no_answer_and_their_mail_is_recorded(desk, dovecot, smtp_server):
    settings, store = desk
    dovecot.append(AUTO_REPLY, START)
    dovecot.append(DSN, START + dt.timedelta(minutes=1))
    report = pipeline.poll(store, settings, NOW)

    assert report.applied == 2
    assert smtp_server.messages == []
    kinds = [r[0] for r in store.conn.execute("SELECT kind FROM messages ORDER BY id")]
    assert kinds == ["auto_reply", "bounce"]
    assert store.conn.execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 0
    reasons = [r[0] for r in store.conn.execute("SELECT reason FROM events ORDER BY id")]
    assert any("weg@gemeente.be" in r for r in reasons)


def test_a_mail_that_breaks_applying_is_quarantined_and_the_rest_go_on(desk, dovecot, smtp_server,
                                                                      monkeypatch):
    settings, store = desk
    dovecot.append(signup("Giftig Bericht", "giftig@stad.be", "Stad Gent", date=START), START)
    dovecot.append(signup("Gewoon Lid", "gewoon@stad.be", "Stad Gent", date=START),
                   START + dt.timedelta(minutes=1))
    real = pipeline.registry.register

    def explode_for_one(store_, settings_, person, *args, **kwargs):
        if person.email == "giftig@stad.be":
            raise RuntimeError("simulated bug")
        return real(store_, settings_, person, *args, **kwargs)

    monkeypatch.setattr(pipeline.registry, "register", explode_for_one)
    report = pipeline.poll(store, settings, NOW)

    assert (report.applied, report.quarantined) == (1, 1)
    assert [m.rcpt_tos for m in smtp_server.messages] == [("gewoon@stad.be",)]
    row = store.conn.execute("SELECT state, error, raw FROM messages WHERE uid = 1").fetchone()
    assert row["state"] == "quarantined" and "simulated bug" in row["error"]
    assert b"giftig@stad.be" in row["raw"]   # kept for a person
    # Nothing of the failed mail was half applied.
    assert store.live_registration("giftig@stad.be") is None


def test_a_stalled_imap_server_times_out_instead_of_hanging(desk):
    settings, _ = desk
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    stalled = settings.mailbox.__class__(**{**settings.mailbox.__dict__,
                                            "port": listener.getsockname()[1],
                                            "timeout_seconds": 1.0})
    began = time.monotonic()
    with pytest.raises(MailboxError, match="IMAP 127.0.0.1"):
        with Mailbox(stalled):
            pass
    assert time.monotonic() - began < 10
    listener.close()


def test_a_mailbox_that_is_down_still_lets_stored_mail_be_answered(desk, dovecot, smtp_server):
    settings, store = desk
    dovecot.append(signup("An Peeters", "an@stad.be", "Stad Gent", date=START), START)
    with Mailbox(settings.mailbox) as mailbox:
        pipeline.fetch(mailbox, store, settings, NOW)
    dovecot.stop()

    report = pipeline.poll(store, settings, NOW)

    assert report.mailbox_error and report.applied == 1 and report.flush.sent == 1
    assert smtp_server.messages[0].rcpt_tos == ("an@stad.be",)


def test_marking_thousands_of_mails_stays_within_the_servers_command_length(desk, dovecot):
    settings, _ = desk
    client = dovecot.client(timeout=60)
    for i in range(2500):
        client.append("INBOX", f"Subject: m{i}\r\n\r\nx\r\n".encode(), msg_time=START)
    client.logout()
    with Mailbox(settings.mailbox) as mailbox:
        uids = mailbox.new_uids(0)
        mailbox.mark_processed([u for u in uids if u != 1234])   # one gap: two ranges
    flags = dovecot.flags_of()
    assert sum(b"$Processed" in f for f in flags.values()) == 2499
    assert b"$Processed" not in flags[1234]


def test_uid_sets_are_written_as_ranges():
    from processor.mail.imap import uid_set

    assert uid_set([7, 1, 2, 3]) == "1:3,7"
    assert uid_set([5]) == "5"
    assert uid_set([9, 1, 2, 4, 5, 6, 10, 10]) == "1:2,4:6,9:10"


def test_handled_mail_can_be_moved_to_a_folder_and_is_never_deleted(
        dovecot, smtp_server, tmp_path, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch, mailbox={"move_to": "Verwerkt"})
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    client = dovecot.client()
    client.create_folder("Verwerkt")
    client.logout()
    for i in range(3):
        dovecot.append(signup(f"P{i} Test", f"p{i}@stad.be", "Stad Gent", date=START),
                       START + dt.timedelta(minutes=i))
    pipeline.poll(store, settings, NOW)
    assert dovecot.flags_of("INBOX") == {}
    moved = dovecot.flags_of("Verwerkt")
    assert len(moved) == 3 and all({b"\\Seen", b"$Processed"} <= f for f in moved.values())
    assert len(smtp_server.messages) == 3
    # The next poll finds nothing new and sends nothing.
    assert pipeline.poll(store, settings, NOW).fetched == 0
    assert len(smtp_server.messages) == 3


def test_handled_mail_is_marked_page_by_page_and_each_page_is_recorded(desk, dovecot,
                                                                       monkeypatch):
    settings, store = desk
    monkeypatch.setattr(pipeline, "MARK_PAGE", 3)
    for i in range(8):
        dovecot.append(f"Subject: vraag {i}\r\nFrom: a{i}@stad.be\r\n\r\nEen vraag.\r\n".encode(),
                       START + dt.timedelta(minutes=i))
    calls = []
    real = Mailbox.mark_processed
    monkeypatch.setattr(Mailbox, "mark_processed",
                        lambda self, uids: (calls.append(list(uids)), real(self, uids))[1])
    report = pipeline.poll(store, settings, NOW)
    assert report.marked == 8
    assert [len(c) for c in calls] == [3, 3, 2]
    assert all(b"$Processed" in f for f in dovecot.flags_of().values())
    assert store.conn.execute(
        "SELECT COUNT(*) FROM messages WHERE marked_on_server = 0").fetchone()[0] == 0
