"""Issue 16: a mail over its CPU or memory budget is set aside with the reason, and the poll goes
on: the mail before it is answered and the mail after it applied (a real poll, Dovecot + SMTP)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time

import pytest

from processor.desk import pipeline, readahead
from processor.understand.model import Options
from tests.desk import signup
from tests.test_waitlist import START, Desk

SPIN_DOMAIN = "spin.example"


class SpinningTable(dict):
    """An organisations table whose look-up of one domain never ends: it stands for any
    understanding that runs away (the helper imports this module by name when unpickling)."""

    def __contains__(self, key):
        if key == SPIN_DOMAIN:
            while True:
                pass
        return super().__contains__(key)

    def __reduce__(self):
        return (SpinningTable, (dict(self),))


SLEEP_DOMAIN = "slaap.example"


class SleepingTable(dict):
    """An organisations table whose look-up of one domain blocks without using CPU (a stalled
    read, a lock): the CPU limit never fires, only the wall-clock limit can end it."""

    def __contains__(self, key):
        if key == SLEEP_DOMAIN:
            # Long enough to fail the test's 60 s bound without the limit, short enough that a
            # desk without it fails rather than hangs.
            time.sleep(90)
        return super().__contains__(key)

    def __reduce__(self):
        return (SleepingTable, (dict(self),))


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    return Desk(dovecot, smtp_server, tmp_path, monkeypatch)


def spinning_options(settings, table=SpinningTable) -> Options:
    options = pipeline_understanding_options(settings)
    return dataclasses.replace(options, domain_organisations=table(dict(options.domain_organisations)))


pipeline_understanding_options = pipeline.understanding_options


def set_aside_between_two_signups(desk, smtp_server, name: str, address: str) -> str:
    """Poll a mail between two signups: the two are confirmed and answered, it is quarantined.
    Returns the reason it was set aside with."""
    desk.arrive(signup("Eerste Persoon", "eerste@stad.be", "Stad Gent", date=START))
    desk.arrive(signup(name, address, "Stad Traag", date=START))
    desk.arrive(signup("Derde Persoon", "derde@stad.be", "Stad Gent", date=START))

    started = time.monotonic()
    report = desk.poll()
    assert time.monotonic() - started < 60

    assert report.quarantined == 1 and report.applied == 2
    status = desk.status()
    assert status["eerste@stad.be"]["status"] == "confirmed"
    assert status["derde@stad.be"]["status"] == "confirmed"
    assert address not in status
    assert {r for m in smtp_server.messages for r in m.rcpt_tos} >= {"eerste@stad.be", "derde@stad.be"}
    row = desk.store.conn.execute(
        "SELECT state, error FROM messages WHERE state = 'quarantined'").fetchone()
    assert row is not None and "budget" in row["error"]
    return row["error"]


def test_a_mail_over_its_cpu_budget_is_set_aside_and_the_poll_goes_on(desk, smtp_server, monkeypatch):
    monkeypatch.setattr(readahead, "MAIL_CPU_SECONDS", 2)
    monkeypatch.setattr(pipeline, "understanding_options", spinning_options)
    error = set_aside_between_two_signups(desk, smtp_server, "Traag Bericht", f"traag@{SPIN_DOMAIN}")
    assert "rekentijd" in error


def test_a_mail_whose_reading_blocks_is_set_aside_after_the_wall_clock_limit(desk, smtp_server,
                                                                              monkeypatch):
    monkeypatch.setattr(readahead, "MAIL_WALL_SECONDS", 3, raising=False)
    monkeypatch.setattr(pipeline, "understanding_options",
                        lambda settings: spinning_options(settings, SleepingTable))
    error = set_aside_between_two_signups(desk, smtp_server, "Slapend Bericht", f"slaap@{SLEEP_DOMAIN}")
    assert "3 s" in error
    # The blocked helper was killed, not left asleep beside the worker.
    assert multiprocessing.active_children() == []


def test_a_mail_over_the_memory_budget_is_set_aside_by_reason(monkeypatch):
    def exhausted(raw, options):
        raise MemoryError

    monkeypatch.setattr(readahead, "understand", exhausted)
    reading = readahead.read_one(b"From: a@b.be\r\n\r\nx", Options(domain_organisations={}))
    assert isinstance(reading, readahead.Unreadable) and "geheugen" in reading.error


def test_the_helper_limits_its_address_space():
    import resource
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=readahead._start_helper,
                             initargs=(Options(domain_organisations={}), 20, "text", 5, 1 << 30)) as pool:
        assert pool.submit(resource.getrlimit, resource.RLIMIT_AS).result()[0] == 1 << 30
        # A gigabyte more than allowed fails as MemoryError in the helper, which lives on.
        assert pool.submit(_allocate, 2 << 30).result() == "MemoryError"
        assert pool.submit(_allocate, 1 << 20).result() == "ok"


def _allocate(size: int) -> str:
    try:
        bytearray(size)
        return "ok"
    except MemoryError:
        return "MemoryError"
