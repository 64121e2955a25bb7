"""`leernetwerk health`: exit codes from the database (migration 7), and the poll that records its health."""

from __future__ import annotations

import datetime as dt
import json

from processor.commands import cli, health
from processor.store import db
from processor.desk import pipeline
from processor.clock import Clock, iso
from tests.desk import desk_settings, signup

NOW = dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc)


def _health(path, capsys, *extra, now=NOW):
    code = cli.main(["health", "--db", str(path), "--json", "--now", now.isoformat(), *extra])
    return code, json.loads(capsys.readouterr().out)


def _checks(data) -> dict:
    return {c["name"]: c["status"] for c in data["checks"]}


def test_migration_7_creates_worker_health(tmp_path):
    conn = db.connect(tmp_path / "state.sqlite")
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert 7 in versions and versions == sorted(set(versions))
    columns = {r[1] for r in conn.execute("PRAGMA table_info(worker_health)")}
    assert {"job", "last_attempt_at", "last_success_at", "last_error", "failures"} <= columns


def test_no_database_and_no_poll_are_unhealthy(tmp_path, capsys):
    code, data = _health(tmp_path / "missing.sqlite", capsys)
    assert code == 2 and data["status"] == "unhealthy"
    assert not (tmp_path / "missing.sqlite").exists()  # health never creates one
    db.connect(tmp_path / "state.sqlite")
    code, data = _health(tmp_path / "state.sqlite", capsys)
    assert code == 2 and _checks(data)["poll"] == "unhealthy"


def test_a_poll_against_real_servers_is_healthy_then_ages(dovecot, smtp_server, tmp_path,
                                                          monkeypatch, capsys):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    path = tmp_path / "state.sqlite"
    dovecot.append(signup("An Maes", "an.maes@leuven.be", "Stad Leuven", date=NOW), NOW)
    monkeypatch.setattr("processor.config.load", lambda p=None: settings)
    assert cli.main(["poll", "--db", str(path), "--now", NOW.isoformat()]) == 0
    capsys.readouterr()
    code, data = _health(path, capsys)
    assert code == 0, data
    assert data["status"] == "ok" and _checks(data)["outbox"] == "ok"

    # Ten minutes without a poll: three intervals of 60 s have passed (but at least 5 minutes).
    code, data = _health(path, capsys, now=NOW + dt.timedelta(minutes=10))
    assert code == 1 and _checks(data)["poll"] == "degraded"
    code, data = _health(path, capsys, now=NOW + dt.timedelta(minutes=45))
    assert code == 2 and _checks(data)["poll"] == "unhealthy"
    code, data = _health(path, capsys, "--poll-crit", "60", now=NOW + dt.timedelta(minutes=45))
    assert code == 1


def test_a_failed_poll_and_an_unreachable_relay_are_recorded(dovecot, smtp_server, tmp_path,
                                                             monkeypatch, capsys):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    dovecot.append(signup("An Maes", "an.maes@leuven.be", "Stad Leuven", date=NOW), NOW)
    assert not pipeline.poll(store, settings, Clock(NOW)).mailbox_error
    smtp_server.stop()
    dovecot.stop()
    # The reply went out; make it wait again, as a backlog behind a relay that is down.
    store.conn.execute("UPDATE outbox SET state = 'pending', next_attempt_at = ?", (iso(NOW),))
    later = NOW + dt.timedelta(minutes=20)
    report = pipeline.poll(store, settings, Clock(later))
    assert report.mailbox_error and report.flush.unavailable
    rows = store.worker_health()
    assert rows["poll"]["failures"] == 1 and rows["poll"]["last_success_at"] == iso(NOW)
    assert rows["send"]["failures"] == 1
    result = health.check(store, settings, later)
    by_name = {c.name: c for c in result.checks}
    assert by_name["poll"].status == "degraded" and "failed" in by_name["poll"].detail
    assert by_name["smtp"].status == "degraded"
    assert by_name["outbox"].status == "degraded"  # queued 20 minutes ago
    assert result.exit_code == 1
    # Two hours of backlog: mail is not reaching people.
    assert health.check(store, settings, NOW + dt.timedelta(hours=3)).exit_code == 2


def test_quarantine_review_and_failed_mail_degrade(tmp_path, capsys):
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    settings = desk_settings()
    with store.transaction():
        store.record_health("poll", ok=True, error=None, now=NOW)
        for uid, state in enumerate(("quarantined", "review", "review"), start=1):
            store.add_message(identity=f"m{uid}", folder="INBOX", uidvalidity=1, uid=uid,
                              message_id=None, arrived_at=NOW, first_seen_at=NOW, raw=b"x")
            store.set_message_state(uid, state, NOW)
        box = store.queue_mail(kind="confirmation", priority=0, order_key=iso(NOW), sender="a@b.c",
                               recipients=["x@y.z"], message_id="<1@b.c>", raw=b"x",
                               registration_id=None, source_message=None, now=NOW)
        store.mark_failed(box, "550 no such user")
    result = health.check(store, settings, NOW, health.Thresholds(max_review=2))
    assert {c.name: c.status for c in result.checks} == {
        "poll": "ok", "outbox": "ok", "failed": "degraded", "quarantine": "degraded",
        "review": "ok"}
    assert result.exit_code == 1
    assert health.check(store, settings, NOW, health.Thresholds(
        max_review=1, max_failed=1, max_quarantined=1)).status == "degraded"
    assert health.check(store, settings, NOW, health.Thresholds(
        max_review=5, max_failed=1, max_quarantined=1)).status == "ok"
    code = cli.main(["health", "--db", str(tmp_path / "state.sqlite"), "--now", NOW.isoformat()])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("DEGRADED") and "quarantine" in out
