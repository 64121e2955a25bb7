"""The registration desk end to end against a real Dovecot, a real aiosmtpd and a real SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys

import pytest

from processor.store import db
from processor.desk import pipeline
from processor.clock import Clock
from tests.desk import PROJECT, TEST_AUTHSERV, desk_settings, signup

START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
NOW = Clock(dt.datetime(2018, 5, 20, 12, 0, tzinfo=dt.timezone.utc))


FIRST = ["Karel", "Ann", "Bert", "Carine", "Dirk", "Evelien", "Frank", "Griet", "Hans", "Inge",
         "Joris", "Kaat", "Luc", "Mieke", "Niels", "Oona", "Paul", "Rita", "Stijn", "Tine",
         "Ward", "Xavier", "Yente", "Zita", "Arne"]
LAST = ["Maes", "Peeters", "Claes", "Wouters", "Jacobs", "Mertens", "Willems", "Dubois"]


def people(n: int) -> list[tuple[str, str, str]]:
    """Distinct, realistic participants of four test municipalities."""
    out = []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST) + i) % len(LAST)]
        out.append((f"{first} {last}", f"{first}.{last}.{i}@gemeente{i % 4}.be".lower(),
                    f"Gemeente Proef{i % 4}"))
    return out


def append_out_of_order(dovecot, persons, start=START, seed=7):
    """Append with INTERNALDATEs in one order, Date headers in the reverse: arrival must win."""
    arrivals = {}
    order = list(range(len(persons)))
    random.Random(seed).shuffle(order)
    for i in order:
        name, email, org = persons[i]
        arrived = start + dt.timedelta(minutes=5 * i)
        claimed = start + dt.timedelta(days=3) - dt.timedelta(minutes=5 * i)
        dovecot.append(signup(name, email, org, date=claimed), arrived)
        arrivals[email] = arrived
    return arrivals


def by_recipient(smtp_server):
    out = {}
    for m in smtp_server.messages:
        out.setdefault(m.message["To"].addresses[0].addr_spec, []).append(m.message)
    return out


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    return settings, store


def test_first_twenty_by_arrival_are_confirmed_and_five_wait_in_order(desk, dovecot, smtp_server):
    settings, store = desk
    persons = people(25)
    arrivals = append_out_of_order(dovecot, persons)

    report = pipeline.poll(store, settings, NOW)

    assert report.fetched == 25 and report.applied == 25
    replies = by_recipient(smtp_server)
    assert len(smtp_server.messages) == 25
    in_arrival = sorted(arrivals, key=arrivals.get)
    for email in in_arrival[:20]:
        [reply] = replies[email]
        assert reply["Subject"].startswith("Inschrijving bevestigd")
        assert "dinsdag 26 juni 2018, 14.00 – 17.00 uur" in reply.get_body(("plain",)).get_content()
    for position, email in enumerate(in_arrival[20:], start=1):
        [reply] = replies[email]
        assert reply["Subject"].startswith("Op de wachtlijst")
        assert f"op plaats {position}." in reply.get_body(("plain",)).get_content()

    # The registry keeps the server's arrival time, not the Date header.
    status = {r["email"]: r for r in store.registry()}
    for email, arrived in arrivals.items():
        assert dt.datetime.fromisoformat(status[email]["arrived_at"]) == arrived

    # Handled mail is flagged on the server, never deleted.
    flags = dovecot.flags_of()
    assert len(flags) == 25
    assert all({b"\\Seen", b"$Processed"} <= f for f in flags.values())


def test_a_second_poll_sends_nothing(desk, dovecot, smtp_server):
    settings, store = desk
    append_out_of_order(dovecot, people(3))
    pipeline.poll(store, settings, NOW)
    assert len(smtp_server.messages) == 3

    again = pipeline.poll(store, settings, NOW)

    assert again.fetched == 0 and again.applied == 0 and again.flush.sent == 0
    assert len(smtp_server.messages) == 3
    assert store.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 3


def test_replies_carry_threading_and_auto_submitted_headers(desk, dovecot, smtp_server):
    settings, store = desk
    raw = signup("Zoë Van den Heuvel-D'Hondt", "zoe.vandenheuvel@leuven.be", "Stad Leuven",
                 date=START)
    dovecot.append(raw, START)
    pipeline.poll(store, settings, NOW)

    [received] = smtp_server.messages
    reply = received.message
    original_id = store.conn.execute("SELECT message_id FROM messages").fetchone()[0]
    assert reply["In-Reply-To"] == original_id
    assert original_id in reply["References"]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Message-ID"].endswith("@leernetwerk.vlaanderen.be>")
    assert reply["To"].addresses[0].display_name == "Zoë Van den Heuvel-D'Hondt"
    text = reply.get_body(("plain",)).get_content()
    assert "Beste Zoë Van den Heuvel-D'Hondt," in text
    # The privacy note: what the data is for, how long it is kept, how to have it erased.
    assert "uiterlijk op woensdag 18 december 2019" in " ".join(text.split())
    assert "Wilt u dat we ze eerder wissen?" in text
    assert received.rcpt_tos == ("zoe.vandenheuvel@leuven.be",)


def test_a_second_signup_from_a_registered_address_gets_no_second_seat(desk, dovecot, smtp_server):
    settings, store = desk
    name, email, org = people(1)[0]
    dovecot.append(signup(name, email, org, date=START), START)
    pipeline.poll(store, settings, NOW)

    later = START + dt.timedelta(hours=2)
    dovecot.append(signup(name, email, org, date=later, subject="nogmaals inschrijving"), later)
    pipeline.poll(store, settings, NOW)

    subjects = [m.message["Subject"] for m in smtp_server.messages]
    assert subjects[0].startswith("Inschrijving bevestigd")
    assert subjects[1].startswith("U bent al ingeschreven")
    assert "uw plaats is bevestigd" in smtp_server.messages[1].message.get_body(("plain",)).get_content()
    assert store.conn.execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 1


def test_a_late_mail_with_an_older_arrival_queues_by_arrival_but_takes_no_given_seat(
        desk, dovecot, smtp_server, monkeypatch):
    _, store = desk
    persons = people(3)
    small = desk_settings(dovecot, smtp_server, monkeypatch, event={"capacity": 2})
    for i, (name, email, org) in enumerate(persons):
        dovecot.append(signup(name, email, org, date=START), START + dt.timedelta(hours=i + 1))
    pipeline.poll(store, small, NOW)
    # An older mail turns up late (restored from another folder, a slow relay …).
    dovecot.append(signup("Laat Binnen", "laat@gemeente9.be", "Gemeente Proef9", date=START),
                   START)
    pipeline.poll(store, small, NOW)

    rows = {r["email"]: r for r in store.registry()}
    assert rows["laat@gemeente9.be"]["status"] == "waitlisted"   # seats already given stay given
    assert [r["status"] for r in rows.values()].count("confirmed") == 2
    assert store.waitlist_position(rows["laat@gemeente9.be"]["id"]) == 1
    assert store.waitlist_position(rows[persons[2][1]]["id"]) == 2
    last = smtp_server.messages[-1].message
    assert "op plaats 1." in last.get_body(("plain",)).get_content()


KILL_AFTER_COMMIT = """
import os, signal, sys
from processor.desk import outbox
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
outbox.flush = die
from processor.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_config(tmp_path, dovecot, smtp_server):
    """A config file for the subprocess runs, pointing at the test servers."""
    text = (PROJECT / "config" / "leernetwerk.toml").read_text(encoding="utf-8")
    text = text.replace('host = "outlook.office365.com"\nport = 993\nsecurity = "tls"',
                        f'host = "{dovecot.host}"\nport = {dovecot.port}\nsecurity = "none"')
    text = text.replace('username = "duurzameontwikkeling@vlaanderen.be"\n'
                        'password_env = "LEERNETWERK_IMAP_PASSWORD"',
                        f'username = "{dovecot.username}"\npassword_env = "LEERNETWERK_IMAP_PASSWORD"')
    text = text.replace('host = "smtp.office365.com"\nport = 587\nsecurity = "starttls"\n'
                        'username = "duurzameontwikkeling@vlaanderen.be"\n'
                        'password_env = "LEERNETWERK_SMTP_PASSWORD"',
                        f'host = "{smtp_server.host}"\nport = {smtp_server.port}\nsecurity = "none"\n'
                        'username = ""\npassword_env = ""')
    # The tests' receiving server is trusted, as desk_settings does (issue 16).
    text = text.replace("trusted_authserv_ids = []", f'trusted_authserv_ids = ["{TEST_AUTHSERV}"]')
    path = tmp_path / "config" / "leernetwerk.toml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    for other in (PROJECT / "config").glob("*.toml"):
        if other.name != path.name:
            (path.parent / other.name).write_text(other.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def run_cli(args, dovecot, code=None):
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "processor", *args]
    return subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)


def test_a_process_killed_after_commit_sends_the_replies_after_restart_once(
        dovecot, smtp_server, tmp_path):
    cfg = write_config(tmp_path, dovecot, smtp_server)
    state = tmp_path / "state.sqlite"
    append_out_of_order(dovecot, people(4))
    args = ["poll", "--config", str(cfg), "--db", str(state), "--now", "2018-05-20T12:00:00+02:00"]

    killed = run_cli(args, dovecot, code=KILL_AFTER_COMMIT)
    assert killed.returncode == -9, killed.stderr
    assert smtp_server.messages == []
    conn = db.connect(state)
    assert conn.execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 4
    assert conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0] == 4

    restarted = run_cli(args, dovecot)
    assert restarted.returncode == 0, restarted.stderr
    assert len(smtp_server.messages) == 4
    assert len({m.rcpt_tos for m in smtp_server.messages}) == 4

    again = run_cli(args, dovecot)
    assert again.returncode == 0, again.stderr
    assert len(smtp_server.messages) == 4

    status = run_cli(["status", "--json", "--config", str(cfg), "--db", str(state)], dovecot)
    data = json.loads(status.stdout)
    assert data["capacity"] == 20
    assert [r["status"] for r in data["registrations"]] == ["confirmed"] * 4
    assert all(r["arrived_at"].endswith("+02:00") for r in data["registrations"])


def test_a_second_worker_on_the_same_database_refuses(dovecot, smtp_server, tmp_path):
    cfg = write_config(tmp_path, dovecot, smtp_server)
    state = tmp_path / "state.sqlite"
    with db.WorkerLock(state):
        result = run_cli(["poll", "--config", str(cfg), "--db", str(state)], dovecot)
    assert result.returncode == 3
    assert "already using" in result.stderr
    # The lock goes with the process: a later run works.
    assert run_cli(["poll", "--config", str(cfg), "--db", str(state)], dovecot).returncode == 0
