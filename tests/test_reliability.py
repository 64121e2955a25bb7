"""Faults and hostile input: servers away, full disk, poison mail, locks, caps, injection, secrets."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from processor.store import db
from processor.desk import organiser, outbox, pipeline, review
from processor.clock import Clock
from processor.mail.imap import Mailbox, worker_lock
from tests.desk import PROJECT, TEST_AUTHSERV, WorkerProcess, desk_settings, signup
from tests.test_desk import people, write_config
from tests.test_relay import queue
from tests.test_waitlist import NOW, START, Desk, plain_mail


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    return Desk(dovecot, smtp_server, tmp_path, monkeypatch)


def received_ids(smtp_server) -> list[str]:
    return [m.message["Message-ID"] for m in smtp_server.messages]


# --- servers away -------------------------------------------------------------------------------

def test_an_imap_restart_in_the_middle_of_a_fetch_loses_and_repeats_nothing(desk, dovecot,
                                                                           smtp_server):
    persons = people(20)
    for name, email, org in persons:
        desk.arrive(signup(name, email, org, date=START))

    class RestartAfterFirstBatch(Mailbox):
        def fetch(self, uids):
            for i, mail in enumerate(super().fetch(uids)):
                yield mail
                if i == desk.settings.mailbox.batch_size:
                    # The server goes down with our session on it, and comes back.
                    subprocess.run([dovecot.doveadm_bin, "-c", str(dovecot.conf_path), "kick",
                                    dovecot.username], check=True, capture_output=True, timeout=30)
                    dovecot.restart()

    first = pipeline.poll(desk.store, desk.settings, Clock(NOW),
                          mailbox_factory=RestartAfterFirstBatch)
    assert first.mailbox_error and 0 < first.fetched < 20
    second = desk.poll()

    assert first.fetched + second.fetched == 20
    assert len(smtp_server.messages) == 20
    assert len(set(received_ids(smtp_server))) == 20
    assert all(b"$Processed" in f for f in dovecot.flags_of().values())


def test_mail_deleted_by_a_person_while_the_worker_runs_is_skipped(desk, dovecot, smtp_server):
    for name, email, org in people(3):
        desk.arrive(signup(name, email, org, date=START))

    class DeleteBetweenSearchAndFetch(Mailbox):
        def new_uids(self, after_uid):
            uids = super().new_uids(after_uid)
            other = dovecot.client()
            other.select_folder("INBOX")
            other.delete_messages([uids[1]])
            other.expunge()
            other.logout()
            return uids

    report = pipeline.poll(desk.store, desk.settings, Clock(NOW),
                           mailbox_factory=DeleteBetweenSearchAndFetch)
    assert report.mailbox_error is None
    assert (report.fetched, report.applied) == (2, 2)
    assert len(smtp_server.messages) == 2


def test_an_smtp_server_that_stalls_times_out_and_the_reply_goes_later(desk, dovecot, smtp_server):
    desk.arrive(signup("Ann Peeters", "ann@stad.be", "Stad Gent", date=START))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    stalled = desk.settings.smtp.__class__(**{**desk.settings.smtp.__dict__,
                                              "port": listener.getsockname()[1],
                                              "timeout_seconds": 1.0})
    settings = desk.settings.__class__(**{**desk.settings.__dict__, "smtp": stalled})
    began = time.monotonic()
    report = pipeline.poll(desk.store, settings, Clock(NOW))
    listener.close()

    assert time.monotonic() - began < 15
    assert report.flush.unavailable and report.flush.sent == 0
    assert smtp_server.messages == []
    later = desk.poll(NOW + dt.timedelta(minutes=5))
    assert later.flush.sent == 1 and len(smtp_server.messages) == 1


def test_four_hundreds_for_a_long_time_then_one_delivery(desk, dovecot, smtp_server):
    desk.arrive(signup("Ann Peeters", "ann@stad.be", "Stad Gent", date=START))
    smtp_server.set_responder(lambda envelope: "451 4.3.2 System not accepting messages")
    moment = NOW
    desk.poll(moment)
    attempts_at = []
    for _ in range(12):                      # about an hour and a half of refusals
        moment += dt.timedelta(minutes=8)
        report = desk.poll(moment)
        if report.flush.retried:
            attempts_at.append(moment)
    smtp_server.reset_failures()
    desk.poll(moment + dt.timedelta(hours=2))

    gaps = [(b - a).total_seconds() for a, b in zip(attempts_at, attempts_at[1:])]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]         # the delays grow
    assert len(smtp_server.messages) == 1
    assert len(smtp_server.attempts) == 1 + len(attempts_at) + 1


# --- the database -------------------------------------------------------------------------------

def test_a_full_disk_is_a_clear_error_and_nothing_is_lost_or_corrupted(desk, smtp_server, caplog):
    filler = "x" * 30_000
    for name, email, org in people(12):
        desk.arrive(signup(name, email, org, date=START,
                           body=f"Graag schrijf ik mij in.\n\nNaam: {name}\nOrganisatie: {org}\n"
                                f"E-mail: {email}\n\n{filler}\n"))
    pages = desk.store.conn.execute("PRAGMA page_count").fetchone()[0]
    desk.store.conn.execute(f"PRAGMA max_page_count = {pages + 40}")

    full = desk.poll()

    assert full.database_error and "full" in full.database_error
    assert "database unavailable" in caplog.text
    assert desk.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Space again: everything arrives once, in order.
    desk.store.conn.execute("PRAGMA max_page_count = 1073741823")
    desk.poll()
    assert desk.store.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 12
    assert desk.store.conn.execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 12
    assert desk.store.conn.execute(
        "SELECT COUNT(*) FROM messages WHERE state = 'quarantined'").fetchone()[0] == 0
    assert len(smtp_server.messages) == 12


def test_backup_is_consistent_while_the_worker_writes(tmp_path):
    source = tmp_path / "state.sqlite"
    conn = db.connect(source)
    store = db.Store(conn)
    stop = threading.Event()

    def writer():
        w = db.Store(db.connect(source))
        i = 0
        while not stop.is_set():
            with w.transaction():
                w.log(now=NOW, action="test", reason=f"row {i}")
                w.log(now=NOW, action="test", reason=f"row {i} twin")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    db.backup(store.conn, tmp_path / "copy.sqlite")
    stop.set()
    thread.join()

    copy = sqlite3.connect(tmp_path / "copy.sqlite")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count = copy.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert count > 0 and count % 2 == 0                     # never half a transaction
    with pytest.raises(FileExistsError):
        db.backup(store.conn, tmp_path / "copy.sqlite")


def test_the_backup_command(tmp_path):
    db.connect(tmp_path / "state.sqlite")
    result = subprocess.run([sys.executable, "-m", "processor", "backup", str(tmp_path / "b.sqlite"),
                             "--db", str(tmp_path / "state.sqlite")], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout


def test_a_backup_records_the_replies_the_sent_journal_holds(tmp_path, smtp_server):
    """Taken after a crash during a backlog, before the worker folded its journal: restoring the
    copy must not send those replies a second time."""
    settings = desk_settings(smtp_server=smtp_server, smtp={"max_per_minute": 0})
    store = db.Store(db.connect(tmp_path / "state.sqlite"))
    queue(store, 3)
    rows = store.outbox_rows()
    journal = db.SentJournal(store.path)
    journal.add(rows[0]["id"], rows[0]["message_id"], START)
    journal.add(rows[-1]["id"] + 1, "<not-in-this-database@leernetwerk>", START)
    journal.close()

    result = subprocess.run([sys.executable, "-m", "processor", "backup",
                             str(tmp_path / "copy.sqlite"), "--db", store.path], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 reply(ies) from the sent journal recorded as sent in the copy" in result.stdout

    # The copy, restored in place of the database (without its journal), sends the other two.
    restored = db.Store(db.connect(tmp_path / "copy.sqlite"))
    assert outbox.flush(restored, settings, NOW).sent == 2
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["p1@stad.be", "p2@stad.be"]
    # The live database and its journal are left to their own worker, which folds it.
    assert [r["state"] for r in store.outbox_rows()] == ["pending"] * 3
    assert len(db.read_sent_journal(store.path)) == 2


class _WorkerRecordsDuringTheCopy(sqlite3.Connection):
    """The worker records the journal's entry in the outbox just after the copy's snapshot, and
    clears the journal, before the backup reads it again."""

    def backup(self, target, **kwargs):
        super().backup(target, **kwargs)
        worker = db.Store(db.connect(self.execute("PRAGMA database_list").fetchone()[2]))
        assert outbox.fold_sent_journal(worker) == 1


def test_a_backup_records_a_reply_the_worker_folds_while_it_copies(tmp_path):
    db.connect(tmp_path / "state.sqlite")
    conn = sqlite3.connect(tmp_path / "state.sqlite", isolation_level=None,
                           factory=_WorkerRecordsDuringTheCopy)
    conn.row_factory = sqlite3.Row
    store = db.Store(conn)
    queue(store, 2)
    first = store.outbox_rows()[0]
    journal = db.SentJournal(store.path)
    journal.add(first["id"], first["message_id"], START)
    journal.close()

    done = db.backup(conn, tmp_path / "copy.sqlite")

    assert db.read_sent_journal(store.path) == []          # the worker did fold it meanwhile
    copy = db.Store(db.connect(tmp_path / "copy.sqlite"))
    assert done.journaled == 1
    assert [r["state"] for r in copy.outbox_rows()] == ["sent", "pending"]


def test_a_backup_is_written_even_when_the_sent_journal_cannot_be_read(tmp_path):
    db.connect(tmp_path / "state.sqlite")
    db.sent_journal_path(tmp_path / "state.sqlite").write_bytes(b"not a database " * 40)

    result = subprocess.run([sys.executable, "-m", "processor", "backup",
                             str(tmp_path / "copy.sqlite"), "--db", str(tmp_path / "state.sqlite")],
                            cwd=PROJECT, capture_output=True, text=True, timeout=60)

    # The copy is kept, and the backup timer shows a failure for a person to look at.
    assert result.returncode == 1 and "integrity ok" in result.stdout
    assert "state.sqlite.sent cannot be read" in result.stderr
    assert "restoring it may send those few replies again" in result.stderr
    assert (tmp_path / "copy.sqlite").exists()


# --- locks --------------------------------------------------------------------------------------

def test_a_second_worker_on_the_same_mailbox_refuses_even_with_another_database(
        dovecot, smtp_server, tmp_path, monkeypatch):
    cfg = write_config(tmp_path, dovecot, smtp_server)
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    with worker_lock(settings.mailbox):
        result = subprocess.run(
            [sys.executable, "-m", "processor", "poll", "--config", str(cfg),
             "--db", str(tmp_path / "other.sqlite")], cwd=PROJECT, capture_output=True, text=True,
            env=dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password), timeout=60)
    assert result.returncode == 3
    assert "the mailbox" in result.stderr and "already using" in result.stderr


def test_a_worker_killed_with_sigkill_leaves_no_stale_lock(dovecot, smtp_server, tmp_path):
    cfg = write_config(tmp_path, dovecot, smtp_server)
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    args = ["--config", str(cfg), "--db", str(tmp_path / "state.sqlite")]
    worker = WorkerProcess(args, env=env, log=tmp_path / "worker.log")
    deadline = time.monotonic() + 30
    while not (tmp_path / "state.sqlite.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    blocked = subprocess.run([sys.executable, "-m", "processor", "poll", *args], cwd=PROJECT,
                             env=env, capture_output=True, text=True, timeout=60)
    assert blocked.returncode == 3
    worker.stop(signal.SIGKILL)
    after = subprocess.run([sys.executable, "-m", "processor", "poll", *args], cwd=PROJECT,
                           env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr


def test_sigterm_stops_the_worker_cleanly(dovecot, smtp_server, tmp_path):
    cfg = write_config(tmp_path, dovecot, smtp_server)
    for name, email, org in people(3):
        dovecot.append(signup(name, email, org, date=START), START)
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    worker = WorkerProcess(["--config", str(cfg), "--db", str(tmp_path / "state.sqlite")],
                           env=env, log=tmp_path / "worker.log")
    smtp_server.wait_for(3, timeout=30)
    err = worker.stop()
    assert worker.returncode == 0, err
    assert "worker stopped" in err


# --- poison mail --------------------------------------------------------------------------------

def test_a_poison_mail_is_shown_for_review_and_rerun_after_a_fix(desk, smtp_server, monkeypatch):
    desk.arrive(signup("Ann Peeters", "ann@stad.be", "Stad Gent", date=START))
    real = pipeline.registry.register
    monkeypatch.setattr(pipeline.registry, "register",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("a bug")))
    desk.poll()
    [item] = review.review_items(desk.store)
    assert item["state"] == "quarantined"
    assert any("a bug" in r for r in item["reasons"])
    assert item["command"] == f"leernetwerk retry {item['id']}"

    monkeypatch.setattr(pipeline.registry, "register", real)        # the fix
    organiser.retry(desk.store, message_id=item["id"], now=NOW)
    desk.poll()
    assert review.review_items(desk.store) == []
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ann@stad.be",)]


def test_a_mail_over_the_size_limit_is_not_downloaded_and_goes_to_review(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch, mailbox={"max_message_bytes": 50_000})
    desk.arrive(signup("Groot Bericht", "groot@stad.be", "Stad Gent", date=START,
                       body="Inschrijving\n\n" + "bijlage " * 20_000))
    desk.arrive(signup("Klein Bericht", "klein@stad.be", "Stad Gent", date=START))
    desk.poll()
    big = desk.store.conn.execute("SELECT * FROM messages WHERE uid = 1").fetchone()
    assert big["truncated"] == 1 and big["size"] > 150_000 and len(big["raw"]) < 5_000
    assert big["state"] == "review"
    assert [m.rcpt_tos for m in smtp_server.messages] == [("klein@stad.be",)]
    [item] = review.review_items(desk.store)
    assert item["id"] == big["id"]


# --- no loops, no flooding ------------------------------------------------------------------------

def test_a_sender_gets_at_most_a_handful_of_automatic_mails_a_day(desk, smtp_server):
    for i in range(8):
        desk.arrive(signup("Ann Peeters", "ann@stad.be", "Stad Gent", date=START))
    desk.poll()
    assert len(smtp_server.messages) == 5
    capped = desk.store.conn.execute(
        "SELECT COUNT(*) FROM events WHERE action = 'reply_capped'").fetchone()[0]
    assert capped == 3
    # A day later the person can be answered again.
    desk.arrive(signup("Ann Peeters", "ann@stad.be", "Stad Gent", date=START))
    desk.poll(NOW + dt.timedelta(days=1, minutes=1))
    assert len(smtp_server.messages) == 6


def test_our_own_address_and_robots_are_never_answered(desk, smtp_server):
    desk.arrive(plain_mail("Team Duurzame Ontwikkeling", "duurzameontwikkeling@vlaanderen.be",
                           "Inschrijving", "Graag schrijf ik mij in voor het leernetwerk.\n"))
    desk.arrive(plain_mail("No Reply", "noreply@stad.be", "Inschrijving bevestigd",
                           "Graag schrijf ik mij in voor het leernetwerk.\n"))
    desk.arrive(plain_mail("Mailer", "MAILER-DAEMON@stad.be", "Undeliverable: Inschrijving",
                           "Your message to x@stad.be could not be delivered.\n"))
    desk.poll()
    assert smtp_server.messages == []
    assert desk.store.conn.execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 0


# --- injection ----------------------------------------------------------------------------------

def test_a_name_with_line_breaks_adds_no_header_and_no_recipient(desk, smtp_server):
    evil_from = "=?utf-8?q?Ann=0D=0ABcc=3A_victim=40evil=2Eexample?= <ann@stad.be>"
    raw = plain_mail("x", "ann@stad.be", "Inschrijving",
                     "Graag schrijf ik mij in voor het leernetwerk.\n\n"
                     "Naam: Ann\x00 Peeters\nOrganisatie: Stad Gent\n")
    raw = raw.replace(b"From: x <ann@stad.be>", f"From: {evil_from}".encode())
    desk.arrive(raw)
    desk.poll()
    [received] = smtp_server.messages
    assert received.rcpt_tos == ("ann@stad.be",)
    headers = received.data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc") for line in headers.split(b"\r\n"))
    assert received.message["Bcc"] is None
    assert [a.addr_spec for a in received.message["To"].addresses] == ["ann@stad.be"]
    assert desk.store.live_registration("victim@evil.example") is None
    for value in received.message.values():
        assert "\n" not in value and "\r" not in value and "\x00" not in value


def test_passwords_never_reach_the_logs_or_the_database(dovecot, make_smtp_server, tmp_path):
    smtp = make_smtp_server(auth=("desk", "smtp-Secret-4321"))
    cfg = write_config(tmp_path, dovecot, smtp)
    text = cfg.read_text()
    text = text.replace(f'port = {smtp.port}\nsecurity = "none"\nusername = ""\npassword_env = ""',
                        f'port = {smtp.port}\nsecurity = "none"\nusername = "desk"\n'
                        'password_env = "LEERNETWERK_SMTP_PASSWORD"')
    cfg.write_text(text)
    for name, email, org in people(2):
        dovecot.append(signup(name, email, org, date=START), START)
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password,
               LEERNETWERK_SMTP_PASSWORD="smtp-Secret-4321")
    args = ["--config", str(cfg), "--db", str(tmp_path / "state.sqlite"), "-v"]
    ok = subprocess.run([sys.executable, "-m", "processor", "poll", *args], cwd=PROJECT, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert len(smtp.messages) == 2
    # And a failing login: the error names the server, never the password.
    env["LEERNETWERK_IMAP_PASSWORD"] = "wrong-Secret-9876"
    bad = subprocess.run([sys.executable, "-m", "processor", "poll", *args], cwd=PROJECT, env=env,
                         capture_output=True, text=True, timeout=60)
    logs = ok.stdout + ok.stderr + bad.stdout + bad.stderr
    assert "IMAP" in bad.stdout + bad.stderr
    for secret in (dovecot.password, "smtp-Secret-4321", "wrong-Secret-9876"):
        assert secret not in logs
        dump = "\n".join(sqlite3.connect(tmp_path / "state.sqlite").iterdump())
        assert secret not in dump


# --- spoofed senders ----------------------------------------------------------------------------

def with_auth_results(raw: bytes, result: str) -> bytes:
    # The receiving server prepends its header; a forger's own header sits below it.
    return (f"Authentication-Results: {TEST_AUTHSERV}; {result}\r\n"
            f"Authentication-Results: {TEST_AUTHSERV}; dmarc=pass header.from=x\r\n").encode() + raw


def test_a_forged_cancellation_changes_nothing_and_waits_for_a_person(desk, smtp_server):
    name, email, org = people(1)[0]
    desk.arrive(with_auth_results(signup(name, email, org, date=START, auth=None),
                                  "spf=pass smtp.mailfrom=gemeente0.be; dkim=pass; dmarc=pass"))
    desk.poll()
    forged = plain_mail(name, email, "Afmelding",
                        "Beste,\n\nIk moet mijn inschrijving helaas annuleren.\n\nGroeten\n",
                        auth=None)
    desk.arrive(with_auth_results(forged, "spf=fail smtp.mailfrom=gemeente0.be; dkim=none; "
                                          "dmarc=fail (p=quarantine) header.from=gemeente0.be"))
    desk.poll()

    assert desk.status()[email]["status"] == "confirmed"
    assert len(smtp_server.messages) == 1                 # the forger got no answer either
    [item] = review.review_items(desk.store)
    assert any("vervalst" in r for r in item["reasons"])


@pytest.mark.parametrize("headers, expected", [
    (["mx; dmarc=fail header.from=a.be"], "fail"),
    (["mx; spf=softfail; dkim=none"], "fail"),
    (["mx; spf=fail; dkim=pass header.d=a.be"], "pass"),
    (["mx; compauth=fail reason=001"], "fail"),
    (["mx; dmarc=pass header.from=a.be"], "pass"),
    (["mx; dmarc=pass header.from=a.be", "mx; dmarc=fail"], "pass"),  # only the topmost counts
    ([], "none"),
])
def test_authentication_results_are_read_from_our_own_server(headers, expected):
    from processor.understand.authentication import verdict

    assert verdict(headers, frozenset({"mx"}), "a.be").status == expected


def test_only_trusted_authserv_ids_count_when_configured():
    from processor.understand.authentication import verdict

    forged_on_top = ["evil.example; dmarc=pass", "mx.vlaanderen.be; dmarc=fail"]
    assert verdict(forged_on_top, frozenset({"mx.vlaanderen.be"})).status == "fail"
    assert verdict(["evil.example; dmarc=pass"], frozenset({"mx.vlaanderen.be"})).status == "none"


def test_a_mail_naming_a_crowd_mails_nobody_until_a_person_resolves_it(desk, smtp_server):
    lines = "\n".join(f"- Collega{i} Achternaam{i} (collega{i}@stad.be)" for i in range(12))
    desk.arrive(plain_mail("Chef Baas", "chef@stad.be", "Inschrijving team",
                           f"Beste,\n\nIk schrijf deze collega's in voor het leernetwerk:\n{lines}\n\n"
                           "Groeten,\nChef Baas\n"))
    desk.poll()
    assert smtp_server.messages == []
    assert desk.store.conn.execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 0
    [item] = review.review_items(desk.store)
    assert item["command"] == f"leernetwerk resolve {item['id']} --as registration"


def test_a_capped_sender_is_mentioned_in_the_digest(desk, smtp_server):
    from processor.desk import digest

    for _ in range(7):
        desk.arrive(signup("Ann Peeters", "ann@stad.be", "Stad Gent", date=START))
    desk.poll()
    data = digest.contents(desk.store, desk.settings, NOW)
    capped = [c for c in data["changes"] if c["action"] == "reply_capped"]
    assert len(capped) == 2 and "ann@stad.be" in str(capped[0]["person"])
