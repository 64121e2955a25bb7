"""Arrival order after an outage of the mailbox server (issue 18): the receiving server accepted
three signups in order and delivered them in reverse, in one second. With the receiving server
named in `[mailbox] trusted_received_hosts`, its Received time orders them."""

from __future__ import annotations

import datetime as dt

import pytest

from processor.understand.received import accepted_at
from tests.desk import signup
from tests.test_waitlist import Desk

BRUSSELS = dt.timezone(dt.timedelta(hours=2))
ACCEPTED = dt.datetime(2018, 5, 14, 10, 0, 1, tzinfo=BRUSSELS)
# Dovecot was down for a minute; the queue was delivered all at once.
DELIVERED = dt.datetime(2018, 5, 14, 10, 1, 30, tzinfo=BRUSSELS)
MX = "mx.leernetwerk.test"
PERSONS = [("Anna Claes", "anna@gemeente-a.be", "Gemeente A"),
           ("Bram Wouters", "bram@gemeente-b.be", "Gemeente B"),
           ("Chris Jacobs", "chris@gemeente-c.be", "Gemeente C")]


def stamp(when: dt.datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S %z")


def received(raw: bytes, accepted: dt.datetime, delivered: dt.datetime, *,
             by: str = MX) -> bytes:
    """The headers a real chain writes on top: the sender's own server, our receiving server
    (Postfix), then the mailbox server's LMTP delivery."""
    return (
        f"Received: from {MX} ({MX} [10.0.0.2]) by imap.leernetwerk.test (Dovecot) with LMTP"
        f" id d1; {stamp(delivered)}\r\n"
        f"Received: from mail.sender.example (mail.sender.example [192.0.2.7])\r\n"
        f"\tby {by} (Postfix) with ESMTPS id 4F2; {stamp(accepted)}\r\n"
        f"Received: from [192.168.1.5] by mail.sender.example; "
        f"{stamp(accepted - dt.timedelta(seconds=1))}\r\n"
    ).encode() + raw


def outage(desk: Desk) -> None:
    """Accepted in order a second apart, delivered in reverse in the same second."""
    mails = []
    for i, (name, email, org) in enumerate(PERSONS):
        accepted = ACCEPTED + dt.timedelta(seconds=i)
        mails.append(received(signup(name, email, org, date=accepted), accepted, DELIVERED))
    for raw in reversed(mails):
        desk.dovecot.append(raw, DELIVERED)
    desk.poll()


def order(desk: Desk) -> list[tuple[str, str, int | None]]:
    state = desk.status()
    return [(email, state[email]["status"], state[email]["position"]) for _, email, _ in PERSONS]


def test_after_an_outage_the_trusted_received_time_orders_the_waiting_list(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch, event={"capacity": 1},
                mailbox={"trusted_received_hosts": [MX]})
    outage(desk)

    assert order(desk) == [("anna@gemeente-a.be", "confirmed", None),
                           ("bram@gemeente-b.be", "waitlisted", 1),
                           ("chris@gemeente-c.be", "waitlisted", 2)]
    # The registry shows when our server accepted it; INTERNALDATE is kept beside it.
    assert dt.datetime.fromisoformat(desk.status()["anna@gemeente-a.be"]["arrived_at"]) \
        == ACCEPTED
    rows = desk.store.conn.execute("SELECT arrived_at, internal_date FROM messages").fetchall()
    assert {dt.datetime.fromisoformat(r["internal_date"]) for r in rows} == {DELIVERED}
    assert sorted(dt.datetime.fromisoformat(r["arrived_at"]) for r in rows) == [
        ACCEPTED + dt.timedelta(seconds=i) for i in range(3)]
    # Each answer says what the person's place is.
    assert desk.subjects_to("anna@gemeente-a.be") == ["Inschrijving bevestigd"]


def test_without_a_trusted_host_the_mailbox_order_stands(dovecot, smtp_server, tmp_path,
                                                         monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch, event={"capacity": 1})
    outage(desk)

    # The documented rule without the setting: INTERNALDATE, then UID (the order of delivery).
    assert order(desk) == [("anna@gemeente-a.be", "waitlisted", 2),
                           ("bram@gemeente-b.be", "waitlisted", 1),
                           ("chris@gemeente-c.be", "confirmed", None)]


TRUSTED = frozenset({MX})
BODY = b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n"


def test_the_topmost_header_of_a_trusted_host_counts_not_one_a_sender_wrote_below_it():
    real = ACCEPTED
    forged = (f"Received: from x by {MX} (Postfix); "
              f"{stamp(ACCEPTED - dt.timedelta(hours=3))}\r\n").encode()
    raw = received(forged + BODY, real, DELIVERED)
    assert accepted_at(raw, DELIVERED, TRUSTED) == real


@pytest.mark.parametrize("accepted, expected", [
    (DELIVERED - dt.timedelta(hours=23), DELIVERED - dt.timedelta(hours=23)),
    (DELIVERED, DELIVERED),
    (DELIVERED - dt.timedelta(hours=25), None),     # a day's queue at most: a wrong clock
    (DELIVERED + dt.timedelta(seconds=5), None),    # never after the mailbox got it
])
def test_a_received_time_counts_only_within_a_day_before_internaldate(accepted, expected):
    assert accepted_at(received(BODY, accepted, DELIVERED), DELIVERED, TRUSTED) == expected


def test_only_the_named_hosts_are_trusted_and_a_domain_names_all_its_hosts():
    raw = received(BODY, ACCEPTED, DELIVERED, by="mx2.in.leernetwerk.test")
    assert accepted_at(raw, DELIVERED, TRUSTED) is None
    assert accepted_at(raw, DELIVERED, frozenset({"in.leernetwerk.test"})) == ACCEPTED
    assert accepted_at(raw, DELIVERED, frozenset()) is None
    # Naming the server that delivers into the mailbox as well gains nothing: its header is on
    # top, with the time of delivery (the README says to name the receiving servers only).
    assert accepted_at(raw, DELIVERED, frozenset({"leernetwerk.test"})) == DELIVERED
    # A client's HELO in a comment names no writer.
    helo = (f"Received: from evil.example (HELO by {MX}) by evil.example; "
            f"{stamp(ACCEPTED)}\r\n").encode() + BODY
    assert accepted_at(helo, DELIVERED, TRUSTED) is None
