"""corpus-dev through a real poll (Dovecot + aiosmtpd + SQLite): mail nobody here wrote harms nobody."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from processor.desk import pipeline
from processor.clock import Clock
from tests.desk import PROJECT
from tests.test_waitlist import Desk

CORPUS = PROJECT.parent / "shared" / "corpus-dev"
START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
NOW = dt.datetime(2018, 7, 31, 12, 0, tzinfo=dt.timezone.utc)
ROBOTS_AND_OTHER = ("other", "auto_reply", "bounce")


def _poll_all(desk: Desk, now=NOW) -> None:
    # The pipeline takes a batch per poll; poll until the inbox is drained.
    for _ in range(50):
        pipeline.poll(desk.store, desk.settings, Clock(now))
        if not desk.store.new_message_count():
            return


@pytest.mark.skipif(not (CORPUS / "expected.json").exists(), reason="../shared/corpus-dev is not beside the checkout")
def test_corpus_dev_through_a_real_poll_harms_nobody(dovecot, smtp_server, tmp_path, monkeypatch):
    """Issue 17: no reply to a robot or an 'other' mail, no seat for a non-signup, no cancellation of
    anyone the mail did not concern, and no signup read as a cancellation or the reverse."""
    expected = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    files = sorted(expected)
    uid_file = {}
    for i, name in enumerate(files):
        raw = (CORPUS / "mails" / name).read_bytes()
        uid_file[dovecot.append(raw, START + dt.timedelta(minutes=10 * i))] = name
    _poll_all(desk)

    conn = desk.store.conn
    harms = []
    for row in conn.execute("SELECT id, uid FROM messages ORDER BY uid"):
        name = uid_file[row["uid"]]
        want = expected[name]
        kind = want["kind"]
        concerned = {p["email"] for p in want["participants"] if p.get("email")}
        replies = conn.execute("SELECT kind, recipients FROM outbox WHERE source_message = ?",
                               (row["id"],)).fetchall()
        seats = conn.execute("SELECT email, status, substitute_for FROM registrations WHERE message_id = ?",
                             (row["id"],)).fetchall()
        cancelled = [e["email"] for e in conn.execute(
            "SELECT email FROM events WHERE message = ? AND action = 'cancelled'", (row["id"],))]
        if kind in ROBOTS_AND_OTHER:
            if replies:
                harms.append(f"{name}: a {kind} mail was answered: {[r['kind'] for r in replies]}")
            if seats:
                harms.append(f"{name}: a {kind} mail took seats: {[s['email'] for s in seats]}")
            if cancelled:
                harms.append(f"{name}: a {kind} mail cancelled {cancelled}")
        elif kind == "registration" and cancelled:
            harms.append(f"{name}: a signup was applied as a cancellation of {cancelled}")
        elif kind == "cancellation":
            if [s for s in seats if s["substitute_for"] is None]:
                harms.append(f"{name}: a cancellation was applied as a signup of {[s['email'] for s in seats]}")
            if set(cancelled) - concerned:
                harms.append(f"{name}: cancelled {sorted(set(cancelled) - concerned)}, whom it did not concern")
    assert len(uid_file) == len(files) == conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert not harms, "\n".join(harms)
