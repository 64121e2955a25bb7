"""Proof that the real-server fixtures (Dovecot, aiosmtpd) behave as the integration tests assume."""

from __future__ import annotations

import email.policy
import smtplib
import ssl
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import imapclient
import pytest

from tests.servers import DovecotServer, ServerStartError, SmtpServer

BRUSSELS_SUMMER = timezone(timedelta(hours=2))


def _mail(subject: str = "Inschrijving", sender: str = "an@example.org") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "duurzameontwikkeling@vlaanderen.be"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 01 Jan 2018 00:00:00 +0000"  # deliberately far from the INTERNALDATE
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.org>"
    msg.set_content("Graag schrijf ik me in.\n")
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF, as mail is stored and served


def _send(server: SmtpServer, subject: str = "Bevestiging", to: str = "an@example.org") -> None:
    msg = EmailMessage()
    msg["From"] = "duurzameontwikkeling@vlaanderen.be"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("U bent ingeschreven.\n")
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.send_message(msg)


# ------------------------------------------------------------------ Dovecot


def test_append_honours_internaldate(dovecot: DovecotServer) -> None:
    when = datetime(2018, 5, 14, 9, 30, 15, tzinfo=BRUSSELS_SUMMER)
    uid = dovecot.append(_mail(), when)

    c = dovecot.client()
    c.select_folder("INBOX", readonly=True)
    data = c.fetch([uid], ["INTERNALDATE", "BODY.PEEK[]"])[uid]
    # The same instant; Dovecot's maildir keeps it as the file's mtime, so the +02:00 offset comes
    # back as the server's zone (a real server does the same: never rely on the offset).
    assert data[b"INTERNALDATE"] == when
    assert data[b"INTERNALDATE"].utcoffset() is not None
    assert data[b"BODY[]"] == _mail()


def test_uids_and_internaldates_are_independent_of_append_order(dovecot: DovecotServer) -> None:
    late = datetime(2018, 5, 15, 12, 0, tzinfo=timezone.utc)
    early = datetime(2018, 5, 14, 8, 0, tzinfo=timezone.utc)
    uid_late = dovecot.append(_mail("late"), late)
    uid_early = dovecot.append(_mail("early"), early)
    assert uid_early > uid_late
    msgs = dovecot.messages()
    assert msgs[uid_late][0] == late and msgs[uid_early][0] == early


def test_body_peek_leaves_seen_unset(dovecot: DovecotServer) -> None:
    uid = dovecot.append(_mail(), datetime(2018, 5, 14, 9, 0, tzinfo=timezone.utc))
    c = dovecot.client()
    c.select_folder("INBOX")  # read-write, as the worker selects it
    c.fetch([uid], ["BODY.PEEK[]"])
    assert b"\\Seen" not in dovecot.flags_of()[uid]

    c.fetch([uid], ["BODY[]"])  # the non-PEEK form does set it: the check above is meaningful
    assert b"\\Seen" in dovecot.flags_of()[uid]


def test_append_with_flags_and_keywords(dovecot: DovecotServer) -> None:
    uid = dovecot.append(_mail(), datetime(2018, 5, 14, tzinfo=timezone.utc), flags=[b"\\Seen", b"$Processed"])
    assert dovecot.flags_of() == {uid: frozenset({b"\\Seen", b"$Processed"})}


def test_append_to_other_folder_creates_it(dovecot: DovecotServer) -> None:
    uid = dovecot.append(_mail(), datetime(2018, 5, 14, tzinfo=timezone.utc), folder="Verwerkt")
    assert list(dovecot.flags_of("Verwerkt")) == [uid]
    assert dovecot.flags_of() == {}


def test_recreate_inbox_changes_uidvalidity(dovecot: DovecotServer) -> None:
    dovecot.append(_mail("one"), datetime(2018, 5, 14, tzinfo=timezone.utc))
    dovecot.append(_mail("other"), datetime(2018, 5, 14, tzinfo=timezone.utc), folder="Verwerkt")
    before = dovecot.uidvalidity()

    after = dovecot.recreate_inbox()

    assert after != before
    assert dovecot.flags_of() == {}
    assert len(dovecot.flags_of("Verwerkt")) == 1  # other folders survive
    c = dovecot.client()
    assert c.select_folder("INBOX")[b"UIDVALIDITY"] == after


def test_recreate_inbox_keeping_messages_renumbers_them(dovecot: DovecotServer) -> None:
    d1 = datetime(2018, 5, 14, 9, tzinfo=timezone.utc)
    d2 = datetime(2018, 5, 14, 8, tzinfo=timezone.utc)
    dovecot.append(_mail("one"), d1, flags=[b"\\Seen"])
    dovecot.append(_mail("two"), d2)
    before = dovecot.uidvalidity()

    after = dovecot.recreate_inbox(keep_messages=True)

    assert after != before
    msgs = dovecot.messages()
    assert sorted(msgs) == [1, 2]  # UIDs start again, oldest INTERNALDATE first
    assert msgs[1] == (d2, frozenset(), _mail("two"))
    assert msgs[2] == (d1, frozenset({b"\\Seen"}), _mail("one"))


def test_restart_keeps_mail_and_port(dovecot: DovecotServer) -> None:
    uid = dovecot.append(_mail(), datetime(2018, 5, 14, tzinfo=timezone.utc))
    port, validity = dovecot.port, dovecot.uidvalidity()
    c = dovecot.client(timeout=5)
    c.select_folder("INBOX")

    dovecot.restart()

    assert dovecot.port == port
    assert list(dovecot.flags_of()) == [uid]
    assert dovecot.uidvalidity() == validity
    with pytest.raises((imapclient.exceptions.IMAPClientError, OSError)):
        c.noop()  # the old connection was dropped by the restart


def test_stop_refuses_connections(dovecot: DovecotServer) -> None:
    dovecot.stop()
    assert not dovecot.running
    with pytest.raises(OSError):
        imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=2)


def test_wrong_password_is_refused(dovecot: DovecotServer) -> None:
    c = imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=5)
    try:
        with pytest.raises(imapclient.exceptions.LoginError):
            c.login(dovecot.username, "wrong")
    finally:
        c.shutdown()


def test_naive_internaldate_is_refused(dovecot: DovecotServer) -> None:
    with pytest.raises(ValueError):
        dovecot.append(_mail(), datetime(2018, 5, 14))


def test_mail_is_owned_by_an_unprivileged_user(dovecot: DovecotServer) -> None:
    dovecot.append(_mail(), datetime(2018, 5, 14, tzinfo=timezone.utc))
    assert dovecot.maildir.stat().st_uid == dovecot.uid != 0


def test_dovecot_starts_fast(dovecot: DovecotServer) -> None:
    # Function scope relies on this; a slow machine still has a wide margin.
    assert dovecot.startup_seconds is not None and dovecot.startup_seconds < 5


def test_start_failure_shows_the_log(dovecot: DovecotServer) -> None:
    blocker = DovecotServer()
    blocker.port = dovecot.port  # the same port, taken: must fail loudly, with the log
    try:
        with pytest.raises(ServerStartError, match="Address already in use"):
            blocker.start()
        assert not blocker.running
    finally:
        blocker.close()


# ------------------------------------------------------------------ SMTP


def test_smtplib_delivers_to_the_fixture(smtp_server: SmtpServer) -> None:
    before = datetime.now(timezone.utc)
    _send(smtp_server, "Bevestiging van uw inschrijving", to="An.Peeters@example.org")
    (got,) = smtp_server.wait_for(1, timeout=5)
    assert got.mail_from == "duurzameontwikkeling@vlaanderen.be"
    assert got.rcpt_tos == ("An.Peeters@example.org",)
    assert got.message["Subject"] == "Bevestiging van uw inschrijving"
    assert got.received_at >= before
    assert got.tls is False and got.auth_login is None


def test_wait_for_times_out_with_a_clear_message(smtp_server: SmtpServer) -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError, match="expected 1 message"):
        smtp_server.wait_for(1, timeout=0.2)
    assert time.monotonic() - start < 2


def test_injected_451_then_550_surface_in_smtplib(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next("451 4.3.0 Try again later", "550 5.1.1 No such user")
    with pytest.raises(smtplib.SMTPDataError) as temp:
        _send(smtp_server)
    assert temp.value.smtp_code == 451
    with pytest.raises(smtplib.SMTPDataError) as perm:
        _send(smtp_server)
    assert perm.value.smtp_code == 550
    _send(smtp_server)  # the queue is used up: accepted again
    assert len(smtp_server.wait_for(1)) == 1
    assert [a.response[:3] for a in smtp_server.attempts] == ["451", "550", "250"]


def test_rejected_recipient(smtp_server: SmtpServer) -> None:
    smtp_server.reject_recipient("nobody@example.org")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        _send(smtp_server, to="Nobody@example.org")
    assert info.value.recipients["Nobody@example.org"][0] == 550
    assert smtp_server.messages == []


def test_responder_decides_per_message(smtp_server: SmtpServer) -> None:
    smtp_server.set_responder(lambda env: "550 5.7.1 Refused" if "weg@" in env.rcpt_tos[0] else None)
    _send(smtp_server, to="blijft@example.org")
    with pytest.raises(smtplib.SMTPDataError):
        _send(smtp_server, to="weg@example.org")
    assert [m.rcpt_tos for m in smtp_server.messages] == [("blijft@example.org",)]


def test_rate_limit_answers_4xx_past_n_per_window(smtp_server: SmtpServer) -> None:
    smtp_server.limit_rate(2, per_seconds=60)
    _send(smtp_server)
    _send(smtp_server)
    with pytest.raises(smtplib.SMTPDataError) as info:
        _send(smtp_server)
    assert info.value.smtp_code == 451
    assert len(smtp_server.messages) == 2


def test_rate_limit_window_slides() -> None:
    now = [0.0]
    with SmtpServer(rate_clock=lambda: now[0]) as server:
        server.limit_rate(1, per_seconds=60)
        _send(server)
        with pytest.raises(smtplib.SMTPDataError):
            _send(server)
        now[0] = 61.0
        _send(server)
        assert len(server.messages) == 2


def test_starttls_and_auth(make_smtp_server, tls_cert) -> None:
    server = make_smtp_server(auth=("mailer", "pw-123"), tls="starttls", require_starttls=True)
    msg = EmailMessage()
    msg["From"] = "duurzameontwikkeling@vlaanderen.be"
    msg["To"] = "an@example.org"
    msg["Subject"] = "Over TLS"
    msg.set_content("x\n")
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.starttls(context=tls_cert.client_context())  # verifies the cert against 127.0.0.1
        s.login("mailer", "pw-123")
        s.send_message(msg)
    (got,) = server.wait_for(1)
    assert got.tls is True and got.auth_login == "mailer"


def test_auth_required_refuses_anonymous_and_bad_password(make_smtp_server) -> None:
    server = make_smtp_server(auth=("mailer", "pw-123"))
    with pytest.raises(smtplib.SMTPSenderRefused):
        _send(server)
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("mailer", "wrong")
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.login("mailer", "pw-123")  # AUTH over plain loopback (auth_require_tls off)
        s.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert server.wait_for(1)[0].auth_login == "mailer"


def test_starttls_is_refused_for_an_untrusted_cert(make_smtp_server) -> None:
    server = make_smtp_server(tls="starttls")
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        with pytest.raises(ssl.SSLCertVerificationError):
            s.starttls(context=ssl.create_default_context())


def test_implicit_tls(make_smtp_server, tls_cert) -> None:
    server = make_smtp_server(tls="implicit")
    with smtplib.SMTP_SSL(server.host, server.port, timeout=10, context=tls_cert.client_context()) as s:
        s.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert server.wait_for(1)[0].tls is True
