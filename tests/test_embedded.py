"""Proof that the demo's embedded IMAP (pymap) and SMTP (aiosmtpd) servers work over real sockets."""

from __future__ import annotations

import email.policy
import smtplib
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import imapclient
import pytest

from processor.demo.embedded import append_messages, embedded_imap, embedded_smtp

BRUSSELS = timezone(timedelta(hours=2))


def _mail(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"deelnemer{n}@example.org"
    msg["To"] = "duurzameontwikkeling@vlaanderen.be"
    msg["Subject"] = f"Inschrijving {n}"
    msg["Date"] = "Mon, 01 Jan 2018 00:00:00 +0000"
    msg.set_content(f"Naam: Deelnemer {n}\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_imap_starts_empty_and_keeps_internaldates() -> None:
    dates = [
        datetime(2018, 5, 14, 9, 0, 5, tzinfo=BRUSSELS),
        datetime(2018, 5, 14, 8, 59, 59, tzinfo=BRUSSELS),  # arrives "earlier" than the first
        datetime(2018, 5, 15, 17, 30, 0, tzinfo=timezone.utc),
    ]
    with embedded_imap("demo", "pw") as imap:
        client = imapclient.IMAPClient(imap.host, port=imap.port, ssl=False, timeout=10)
        client.normalise_times = False
        try:
            client.login(imap.username, imap.password)
            assert client.select_folder("INBOX")[b"EXISTS"] == 0  # no pymap sample mails

            uids = append_messages(imap, [(_mail(i), d) for i, d in enumerate(dates)])

            assert len(set(uids)) == 3
            client.noop()
            fetched = client.fetch(uids, ["INTERNALDATE", "BODY.PEEK[]", "FLAGS"])
            assert [fetched[u][b"INTERNALDATE"] for u in uids] == dates
            assert [fetched[u][b"BODY[]"] for u in uids] == [_mail(i) for i in range(3)]
            assert all(b"\\Seen" not in fetched[u][b"FLAGS"] for u in uids)
        finally:
            client.shutdown()
    with pytest.raises(OSError):  # gone after the block
        imapclient.IMAPClient(imap.host, port=imap.port, ssl=False, timeout=2)


def test_imap_refuses_a_wrong_password() -> None:
    with embedded_imap("demo", "pw") as imap:
        client = imapclient.IMAPClient(imap.host, port=imap.port, ssl=False, timeout=10)
        try:
            with pytest.raises(imapclient.exceptions.LoginError):
                client.login(imap.username, "wrong")
        finally:
            client.shutdown()


def test_append_refuses_a_naive_internaldate() -> None:
    with embedded_imap() as imap, pytest.raises(ValueError):
        append_messages(imap, [(_mail(1), datetime(2018, 5, 14, 9))])


def test_smtp_records_what_it_receives() -> None:
    with embedded_smtp() as smtp:
        msg = EmailMessage()
        msg["From"] = "duurzameontwikkeling@vlaanderen.be"
        msg["To"] = "Zoë Janssens <zoe@example.org>"
        msg["Subject"] = "Bevestiging"
        msg.set_content("U bent ingeschreven.\n")
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
            s.send_message(msg)
        (got,) = smtp.wait_for(1, timeout=5)
        assert got.mail_from == "duurzameontwikkeling@vlaanderen.be"
        assert got.rcpt_tos == ("zoe@example.org",)
        assert b"Subject: Bevestiging" in got.data
    with pytest.raises(OSError):
        smtplib.SMTP(smtp.host, smtp.port, timeout=2)


def test_two_demos_side_by_side_get_their_own_ports() -> None:
    with embedded_imap() as a, embedded_imap() as b, embedded_smtp() as c, embedded_smtp() as d:
        assert a.port != b.port and c.port != d.port
