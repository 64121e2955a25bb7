"""A waiting-list place is right after every kind of change, and telling a newcomer their place
does not cost more as the list grows (issue 8: no per-mail query that scans the registry)."""

from __future__ import annotations

import datetime as dt
import random

from processor.store import db

T0 = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone.utc)
NOW = dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc)
CAPACITY = 20


def add(store: db.Store, i: int, *, minutes: int | None = None) -> int:
    arrived = T0 + dt.timedelta(minutes=i if minutes is None else minutes)
    return store.add_registration(
        email=f"deelnemer.{i}@gemeente.be", name=f"Deelnemer {i}", name_key=f"deelnemer {i}",
        organisation="Gemeente Proef", org_key="gemeente proef", charter=False,
        arrived_at=arrived.isoformat(), arrival_uid=i, arrival_index=0, message_id=None,
        registered_by=None, capacity=CAPACITY, max_per_org=0, source="mail", now=NOW)


def counted_positions(store: db.Store) -> dict[int, int]:
    """The plain definition: 1 + everyone waiting who arrived earlier."""
    rows = store.conn.execute(
        "SELECT id FROM registrations WHERE status = 'waitlisted'"
        " ORDER BY arrived_at, arrival_uid, arrival_index, id").fetchall()
    return {row[0]: place for place, row in enumerate(rows, start=1)}


def test_places_stay_right_through_arrivals_out_of_order_promotions_and_erasures(tmp_path):
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    rng = random.Random(8)
    ids = []
    with store.transaction():
        # Arrival times shuffled: mail is not always handled in the order it reached the server.
        for i, minutes in enumerate(rng.sample(range(200), 120)):
            ids.append(add(store, i, minutes=minutes))
        for rid in rng.sample(ids, 15):
            store.set_status(rid, "cancelled", NOW)
        waiting = list(counted_positions(store))
        for rid in waiting[:5]:
            store.set_status(rid, "confirmed", NOW)
        store.conn.execute("DELETE FROM registrations WHERE id = ?", (waiting[10],))
    expected = counted_positions(store)
    assert len(expected) > 50
    assert {rid: store.waitlist_position(rid) for rid in expected} == expected
    assert store.waitlist_position(ids[0]) is None or ids[0] in expected
    confirmed = store.conn.execute(
        "SELECT id FROM registrations WHERE status = 'confirmed' LIMIT 1").fetchone()[0]
    assert store.waitlist_position(confirmed) is None


def test_the_length_is_carried_over_for_a_database_made_before_the_migration(tmp_path):
    path = tmp_path / "state.sqlite"
    store = db.Store(db.connect(path))
    with store.transaction():
        for i in range(30):
            add(store, i)
        # As if the database predates migration 9: no length table yet.
        store.conn.execute("DROP TABLE waitlist_size")
        for trigger in ("insert", "delete", "update"):
            store.conn.execute(f"DROP TRIGGER waitlist_size_{trigger}")
        store.conn.execute("DELETE FROM schema_migrations WHERE version = 9")
    store.conn.close()
    store = db.Store(db.connect(path))
    assert store.conn.execute("SELECT waiting FROM waitlist_size").fetchone()[0] == 10
    last = store.conn.execute("SELECT MAX(id) FROM registrations").fetchone()[0]
    assert store.waitlist_position(last) == 10


def _steps(conn, call) -> int:
    """SQLite virtual-machine steps a call takes: work, independent of the machine's speed."""
    steps = 0

    def tick():
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(tick, 1)
    try:
        call()
    finally:
        conn.set_progress_handler(None, 0)
    return steps


def test_telling_a_newcomer_their_place_costs_the_same_at_any_length(tmp_path):
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    costs = {}
    i = 0
    for length in (100, 5000):
        with store.transaction():
            while i < CAPACITY + length:
                newest = add(store, i)
                i += 1
        assert store.waitlist_position(newest) == length
        costs[length] = _steps(store.conn, lambda: store.waitlist_position(newest))
    # Counting those ahead took about one step per person waiting; now it is a seek.
    assert costs[5000] <= costs[100] + 10, costs
