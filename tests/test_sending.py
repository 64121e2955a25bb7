"""The outbox against a real aiosmtpd: retries, permanent failures, STARTTLS and AUTH."""

from __future__ import annotations

import datetime as dt

import pytest

from processor.store import db
from processor.desk import outbox, registry
from processor.mail.smtp import Connection, SmtpUnavailable
from processor.understand.model import Participant
from tests.desk import desk_settings

NOW = dt.datetime(2018, 5, 20, 10, 0, tzinfo=dt.timezone.utc)


def queue_signups(store, settings, n: int):
    outcome = registry.Outcome()
    with store.transaction():
        for i in range(n):
            origin = registry.Origin(message=None, arrived_at=f"2018-05-14T07:0{i}:00.000000+00:00",
                                     uid=i + 1, sender=f"p{i}@stad.be", sender_name=None,
                                     in_reply_to=f"<m{i}@stad.be>", references=())
            registry.register(store, settings, Participant(f"Persoon {i}", f"p{i}@stad.be", None),
                              0, origin, NOW, outcome)
    return outcome


@pytest.fixture
def store(tmp_path):
    return db.Store(db.connect(tmp_path / "state.sqlite"))


def test_a_temporary_failure_is_retried_later_with_the_same_message(store, smtp_server):
    settings = desk_settings(smtp_server=smtp_server)
    queue_signups(store, settings, 1)
    smtp_server.fail_next("451 4.3.0 Try again later")

    first = outbox.flush(store, settings, NOW)
    assert (first.sent, first.retried) == (0, 1)
    [row] = store.outbox_rows()
    assert row["state"] == "pending" and row["attempts"] == 1
    assert dt.datetime.fromisoformat(row["next_attempt_at"]) == NOW + dt.timedelta(minutes=1)

    # Not due yet: nothing is tried.
    assert outbox.flush(store, settings, NOW + dt.timedelta(seconds=30)).retried == 0
    second = outbox.flush(store, settings, NOW + dt.timedelta(minutes=1))
    assert second.sent == 1
    [attempt1, attempt2] = smtp_server.attempts
    assert attempt1.message["Message-ID"] == attempt2.message["Message-ID"]
    assert len(smtp_server.messages) == 1


def test_delays_grow_and_stop_at_the_ceiling():
    delays = [outbox.retry_delay(n, 3600).total_seconds() for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_a_permanent_failure_stops_retrying_and_is_logged(store, smtp_server):
    settings = desk_settings(smtp_server=smtp_server)
    queue_signups(store, settings, 2)
    smtp_server.reject_recipient("p0@stad.be")

    report = outbox.flush(store, settings, NOW)

    assert (report.sent, report.failed) == (1, 1)
    states = {r["recipients"]: r["state"] for r in store.outbox_rows()}
    assert states == {'["p0@stad.be"]': "failed", '["p1@stad.be"]': "sent"}
    assert outbox.flush(store, settings, NOW + dt.timedelta(days=1)).failed == 0
    events = store.conn.execute("SELECT reason FROM events WHERE action = 'reply_failed'").fetchall()
    assert len(events) == 1 and "550" in events[0][0]


def test_a_server_that_is_down_keeps_every_row_for_later(store, smtp_server):
    settings = desk_settings(smtp_server=smtp_server)
    queue_signups(store, settings, 2)
    smtp_server.stop()

    report = outbox.flush(store, settings, NOW)

    assert report.unavailable and report.sent == 0
    assert [r["state"] for r in store.outbox_rows()] == ["pending", "pending"]


def test_starttls_that_the_server_does_not_offer_is_an_error_not_plain_text(store, smtp_server):
    settings = desk_settings(smtp_server=smtp_server, smtp={"security": "starttls"})
    queue_signups(store, settings, 1)

    report = outbox.flush(store, settings, NOW)

    assert report.unavailable and "STARTTLS" in report.unavailable
    assert smtp_server.attempts == []


def test_starttls_with_auth_sends_over_a_verified_connection(store, make_smtp_server, tls_cert,
                                                             monkeypatch):
    server = make_smtp_server(tls="starttls", auth=("desk", "pw-from-env"), require_starttls=True)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "pw-from-env")
    settings = desk_settings(smtp_server=server, smtp={
        "security": "starttls", "username": "desk", "password_env": "TEST_SMTP_PASSWORD",
        "ca_file": str(tls_cert.certfile)})
    queue_signups(store, settings, 1)

    assert outbox.flush(store, settings, NOW).sent == 1
    [received] = server.messages
    assert received.tls and received.auth_login == "desk"


def test_an_untrusted_certificate_is_refused(store, make_smtp_server):
    server = make_smtp_server(tls="starttls")
    settings = desk_settings(smtp_server=server, smtp={"security": "starttls"})
    with pytest.raises(SmtpUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        with Connection(settings.smtp):
            pass
