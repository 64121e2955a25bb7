"""`leernetwerk reprocess` on Dovecot + aiosmtpd + SQLite: a mail misread by an older understanding,
read again; dry run by default, only confirmed changes applied, no seat taken, no second reply."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from processor.commands import cli
from processor.desk import pipeline, readahead, reprocess
from processor.understand import understand as real_understand
from tests.desk import signup
from tests.test_waitlist import NOW, START, Desk

LATER = NOW + dt.timedelta(days=1)


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    d = Desk(dovecot, smtp_server, tmp_path, monkeypatch, event={"capacity": 2})
    monkeypatch.setattr("processor.config.load", lambda path=None: d.settings)
    return d


def misread(monkeypatch, how):
    """The understanding of an older version: `how(reading)` returns what it made of a mail."""
    monkeypatch.setattr(pipeline, "understand",
                        lambda raw, options: how(real_understand(raw, options)))
    # Patched into this process: the mail must be read here, not in the guarded helper.
    monkeypatch.setattr(readahead, "GUARDED", False)


def as_other(reading):
    return dataclasses.replace(reading, kind="other", participants=(), needs_review=True,
                               reasons=("older version: not recognised",))


def run(desk, *args) -> int:
    return cli.main(["reprocess", "--db", str(desk.path), "--now", LATER.isoformat(), *args])


def test_ids_ranges():
    assert reprocess.parse_ids("3,5-7, 9") == [3, 5, 6, 7, 9]
    for bad in ("", "x", "9-5"):
        with pytest.raises(reprocess.ReprocessError):
            reprocess.parse_ids(bad)


def test_a_misread_signup_joins_the_queue_at_its_arrival_without_taking_a_seat(
        desk, monkeypatch, capsys):
    misread(monkeypatch, lambda r: as_other(r) if r.sender == "bert@gent.be" else r)
    for name, email in (("An", "an@leuven.be"), ("Bert", "bert@gent.be"), ("Cas", "cas@brugge.be"),
                        ("Dirk", "dirk@mechelen.be")):
        desk.arrive(signup(name, email, "Stad", date=START))
    desk.poll()
    status = desk.status()
    assert "bert@gent.be" not in status
    assert [status[e]["status"] for e in ("an@leuven.be", "cas@brugge.be", "dirk@mechelen.be")] \
        == ["confirmed", "confirmed", "waitlisted"]
    sent_before = len(desk.smtp.messages)
    monkeypatch.undo()  # the improved understanding
    monkeypatch.setattr("processor.config.load", lambda path=None: desk.settings)

    # The default is a dry run: it shows the change and what applying would do, changes nothing.
    assert run(desk, "--review") == 0
    out = capsys.readouterr().out
    assert "kind:         other → registration" in out
    assert "participant:  + Bert <bert@gent.be>" in out
    assert "would do:   waitlisted: bert@gent.be" in out and "1 would leave" in out
    assert "bert@gent.be" not in desk.status() and len(desk.smtp.messages) == sent_before

    # Not on a terminal, --apply needs --yes.
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run(desk, "--review", "--apply") == 2
    assert run(desk, "--review", "--apply", "--yes") == 0
    capsys.readouterr()
    status = desk.status()
    # Bert arrived before Dirk: first on the waiting list; nobody confirmed lost a seat.
    assert status["bert@gent.be"]["status"] == "waitlisted"
    assert status["bert@gent.be"]["position"] == 1 and status["dirk@mechelen.be"]["position"] == 2
    assert status["an@leuven.be"]["status"] == status["cas@brugge.be"]["status"] == "confirmed"
    desk.smtp.wait_for(sent_before + 1)
    assert desk.subjects_to("bert@gent.be") == ["Op de wachtlijst"]
    assert desk.store.message(2)["state"] == "processed"
    assert desk.store.message(2)["kind"] == "registration"

    # Read again: nothing left to change, and no second mail.
    assert run(desk, "--ids", "1-4", "--apply", "--yes", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["changed"] for m in data["mails"]] == [False] * 4
    assert len(desk.mails_to("bert@gent.be")) == 1


def test_a_colleague_found_later_gets_one_mail_and_the_sender_none(desk, monkeypatch, capsys):
    body = ("Beste,\n\nGraag schrijf ik mij en mijn collega in voor het Leernetwerk.\n\n"
            "Eva Claes, Stad Gent, eva.claes@gent.be\n"
            "Fien Wouters, Stad Gent, fien.wouters@gent.be\n\nGroeten,\nEva\n")
    misread(monkeypatch, lambda r: dataclasses.replace(r, participants=r.participants[:1]))
    desk.arrive(signup("Eva Claes", "eva.claes@gent.be", "Stad Gent", date=START, body=body))
    desk.poll()
    assert set(desk.status()) == {"eva.claes@gent.be"}
    assert desk.subjects_to("eva.claes@gent.be") == ["Inschrijving bevestigd"]
    monkeypatch.undo()
    monkeypatch.setattr("processor.config.load", lambda path=None: desk.settings)
    assert len(real_understand(desk.store.message(1)["raw"],
                               pipeline.understanding_options(desk.settings)).participants) == 2

    # Asked per mail on a terminal: "n" changes nothing.
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert run(desk, "--ids", "1", "--apply") == 0
    assert "fien.wouters@gent.be" not in desk.status()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert run(desk, "--ids", "1", "--apply") == 0
    out = capsys.readouterr().out
    assert "participant:  + Fien Wouters <fien.wouters@gent.be> (Stad Gent)" in out
    assert desk.status()["fien.wouters@gent.be"]["status"] == "confirmed"
    desk.smtp.wait_for(2)
    assert desk.subjects_to("fien.wouters@gent.be") == ["Inschrijving bevestigd"]
    # Eva is copied on Fien's confirmation (she registered her), but gets no second answer
    # of her own.
    own = [m for m in desk.mails_to("eva.claes@gent.be") if "eva.claes@gent.be" in m["To"]]
    assert len(own) == 1


def test_nothing_is_undone(desk, monkeypatch, capsys):
    """An older reading registered someone the new one does not name: they keep their seat and
    the output says how to cancel by hand."""
    from processor.understand.model import Participant

    stranger = Participant("Gert", "gert@example.org", None)
    misread(monkeypatch, lambda r: dataclasses.replace(r, participants=r.participants + (stranger,)))
    desk.arrive(signup("Hanne", "hanne@gent.be", "Stad Gent", date=START))
    desk.poll()
    assert desk.status()["gert@example.org"]["status"] == "confirmed"
    monkeypatch.undo()
    monkeypatch.setattr("processor.config.load", lambda path=None: desk.settings)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run(desk, "--ids", "1", "--apply", "--yes") == 0
    out = capsys.readouterr().out
    assert "participant:  - Gert <gert@example.org>" in out
    assert "left as is: gert@example.org was registered from this mail (confirmed)" in out
    assert "leernetwerk cancel gert@example.org" in out
    assert desk.status()["gert@example.org"]["status"] == "confirmed"
    assert desk.store.message(1)["reading"].count("gert@example.org") == 0


def test_skips_and_errors(desk, monkeypatch, capsys):
    assert run(desk, "--ids", "40-41") == 2
    assert "no stored mail" in capsys.readouterr().err
    desk.arrive(signup("Ine", "ine@gent.be", "Stad Gent", date=START))
    desk.poll()
    desk.store.conn.execute("UPDATE messages SET raw = x''")
    assert run(desk, "--ids", "1") == 0
    assert "skipped: the raw mail was erased" in capsys.readouterr().out
