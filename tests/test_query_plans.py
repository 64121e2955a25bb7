"""Every query of one poll uses an index: no step scans a table that grows with the backlog."""

from __future__ import annotations

import re

from processor.store import db
from processor.desk import pipeline
from tests.desk import desk_settings, signup
from tests.test_desk import NOW, START, people

# Tables whose size does not grow with the mail: one row per folder, session or day.
SMALL_TABLES = {"mailbox_state", "session_announcements", "schema_migrations", "digests",
                "waitlist_size"}


def _shape(sql: str) -> str:
    return re.sub(r"'[^']*'|\bX'[0-9A-Fa-f]*'|\b\d+(\.\d+)?\b", "?", sql)


def test_no_query_of_a_poll_scans_a_growing_table(dovecot, smtp_server, tmp_path, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    for name, email, org in people(25):  # 20 seats and a waiting list
        dovecot.append(signup(name, email, org, date=START), START)
    conn = db.connect(tmp_path / "state.sqlite")
    statements: dict[str, str] = {}
    conn.set_trace_callback(lambda sql: statements.setdefault(_shape(sql), sql))
    report = pipeline.poll(db.Store(conn), settings, NOW)
    conn.set_trace_callback(None)
    assert report.applied == 25

    scans = []
    for sql in statements.values():
        if not re.match(r"\s*(SELECT|UPDATE|DELETE)", sql, re.IGNORECASE):
            continue
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
            detail = row[3]
            match = re.match(r"SCAN (\w+)", detail)
            if match and match.group(1) not in SMALL_TABLES:
                scans.append(f"{detail}  ←  {sql[:160]}")
    assert scans == []
