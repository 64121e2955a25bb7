"""The organisers' daily digest on Dovecot + aiosmtpd + SQLite, at instants chosen with the clock."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from zoneinfo import ZoneInfo

import pytest

from processor import config
from processor.store import db
from processor.desk import digest, organiser, outbox, pipeline, readahead, review
from tests.desk import PROJECT, WorkerProcess, desk_settings
from tests.test_desk import run_cli, write_config
from tests.test_waitlist import CANCEL, Desk, plain_mail

BXL = ZoneInfo("Europe/Brussels")
ORGANISER = "duurzameontwikkeling@vlaanderen.be"
ARTIFACTS = PROJECT / "artifacts"
MARKUP_NAME = "Hacker <b>vet</b> <script>alert(1)</script>\nInjected: rij"


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2018, 5, day, hour, minute, tzinfo=BXL)


def digests_sent(smtp) -> list:
    return [m.message for m in smtp.messages
            if m.message["Subject"].strip().startswith("Dagoverzicht")]


def run_digest(store: db.Store, settings, path, moment) -> digest.Result:
    """What the worker's job does at `moment`, then what its poll does: flush the outbox."""
    result = digest.run_job(path, settings, moment)
    outbox.flush(store, settings, moment)
    return result


def bounce_for(address: str) -> bytes:
    raw = (PROJECT / "tests" / "data" / "bounce-01-postfix-dsn.eml").read_bytes()
    return raw.replace(b"bert.vanacker@aalter.be", address.encode())


PERSONS = [
    ("Ann Peeters", "ann.peeters@gent.be", "Stad Gent"),
    ("Bert Claes", "bert.claes@leuven.be", "Stad Leuven"),
    ("Carla Janssens", "carla.janssens@brugge.be", "Stad Brugge"),
    ("Dirk Maes", "dirk.maes@aalst.be", "Stad Aalst"),
    ("Eve <script>alert</script>", "eve@mechelen.be", "Stad Mechelen"),
    ("Frank Wouters", "frank.wouters@hasselt.be", "Stad Hasselt"),
]


def signup_mail(name: str, email: str, organisation: str) -> bytes:
    return plain_mail(name.split(" <")[0], email, "Inschrijving Leernetwerk SDG",
                      "Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk Sustainable "
                      f"Development Goals.\n\nNaam: {name}\nOrganisatie: {organisation}\n"
                      f"E-mail: {email}\n\nMet vriendelijke groeten,\n{name.split(' <')[0]}\n")


@pytest.fixture
def desk(dovecot, smtp_server, tmp_path, monkeypatch):
    d = Desk(dovecot, smtp_server, tmp_path, monkeypatch, event={"capacity": 3})
    d.arrival = at(20, 9)
    # A bug in understanding, for one marked mail: it must be set aside, not lost.
    real = pipeline.understand

    def understand(raw, options):
        if b"X-Test-Crash: yes" in raw:
            raise RuntimeError("kapot in de test")
        return real(raw, options)

    monkeypatch.setattr(pipeline, "understand", understand)
    # The crash above is patched into this process: the mail must be read here, not in the
    # guarded helper (which reads with the real understanding).
    monkeypatch.setattr(readahead, "GUARDED", False)
    return d


def first_day(desk: Desk) -> None:
    """Sunday 20 May: six signups (3 seats), a cancellation that promotes, a question, a bounce of
    a participant's address, a mail that crashes, a refused reply, and a signup by hand."""
    desk.smtp.reject_recipient("frank.wouters@hasselt.be", "550 5.1.1 No such user here")
    for person in PERSONS:
        desk.arrive(signup_mail(*person))
    desk.poll(at(20, 10))
    bert = desk.mails_to("bert.claes@leuven.be")[0]
    desk.arrive(plain_mail("Bert Claes", "bert.claes@leuven.be", "Re: " + bert["Subject"],
                           CANCEL.format(name="Bert Claes"), in_reply_to=bert["Message-ID"]))
    desk.arrive(plain_mail("Greet Willems", "greet.willems@leuven.be",
                           "Vraag over <b>parkeren</b>",
                           "Beste,\n\nIs er een parking in de buurt van de zaal?\n\nGreet\n"))
    desk.arrive(bounce_for("ann.peeters@gent.be"))
    desk.arrive(plain_mail("Hans Smet", "hans.smet@genk.be", "Inschrijving", "Graag inschrijven.")
                .replace(b"MIME-Version", b"X-Test-Crash: yes\r\nMIME-Version", 1))
    desk.poll(at(20, 12))
    organiser.register(desk.store, desk.settings, name=MARKUP_NAME, email="hacker@example.be",
                       organisation="Stad Genk", now=at(20, 13))
    outbox.flush(desk.store, desk.settings, at(20, 13))


def parts(mail) -> tuple[str, str, bytes]:
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    attachment = next(mail.iter_attachments())
    assert attachment.get_filename() == "inschrijvingen-2018-05-21.csv"
    return text, html, attachment.get_payload(decode=True)


def test_a_day_of_signups_cancellation_review_bounce_and_quarantine_makes_one_digest(
        desk, tmp_path):
    first_day(desk)
    before = len(desk.smtp.messages)
    assert run_digest(desk.store, desk.settings, desk.path, at(21, 7, 59)).state == "not_due"
    result = run_digest(desk.store, desk.settings, desk.path, at(21, 8))
    assert result.state == "queued"

    sent = digests_sent(desk.smtp)
    assert len(sent) == 1 and len(desk.smtp.messages) == before + 1
    mail = sent[0]
    assert mail["Auto-Submitted"] == "auto-generated"
    assert [m for m in desk.smtp.messages if "Dagoverzicht" in m.message["Subject"]][0].rcpt_tos \
        == (ORGANISER,)
    assert "3/3 bevestigd" in mail["Subject"]

    data = result.data
    assert data["headline"] | {"next_session": None} == {
        "confirmed": 3, "capacity": 3, "waitlisted": 3, "cancelled": 1, "next_session": None}
    assert data["headline"]["next_session"]["date"] == "dinsdag 26 juni 2018"
    assert data["headline"]["next_session"]["confirmed"] == 3

    # What changed, each once, in arrival order (the hand signup arrived last, at 13:00).
    changes = [(c["action"], c["person"]["email"]) for c in data["changes"]]
    assert changes == [
        ("confirmed", "ann.peeters@gent.be"), ("confirmed", "bert.claes@leuven.be"),
        ("confirmed", "carla.janssens@brugge.be"), ("waitlisted", "dirk.maes@aalst.be"),
        ("waitlisted", "eve@mechelen.be"), ("waitlisted", "frank.wouters@hasselt.be"),
        ("cancelled", "bert.claes@leuven.be"), ("promoted", "dirk.maes@aalst.be"),
        ("waitlisted", "hacker@example.be"),
    ]
    assert data["changes"][-1]["by"] and data["changes"][-1]["status_now"] == "wachtlijst (plaats 3)"

    # What needs a person, each once.
    a = data["attention"]
    assert [(r["sender"], r["subject"], r["new"]) for r in a["review"]] == [
        ("greet.willems@leuven.be", "Vraag over <b>parkeren</b>", True)]
    assert a["review"][0]["command"] == f"leernetwerk resolve {a['review'][0]['id']} --as nothing"
    assert "parking" in a["review"][0]["excerpt"]
    # Never understood, so sender and subject come from its headers alone.
    assert [(r["sender"], r["subject"]) for r in a["quarantined"]] == [
        ("hans.smet@genk.be", "Inschrijving")]
    assert a["quarantined"][0]["command"].startswith("leernetwerk retry ")
    assert "kapot in de test" in a["quarantined"][0]["reasons"][0]
    assert [b["person"]["email"] for b in a["bounced"]] == ["ann.peeters@gent.be"]
    assert a["bounced"][0]["status_now"] == "bevestigd"
    assert [(f["kind"], f["to"]) for f in a["failed_mail"]] == [
        ("wachtlijst", "frank.wouters@hasselt.be")]
    assert "No such user here" in a["failed_mail"][0]["error"]
    assert a["late_reminders"] == []
    assert data["attention_count"] == 4

    assert data["quiet"]["bounces"] == 1
    assert data["quiet"]["auto_replies"] == 0
    assert data["quiet"]["mails_processed"] == 10   # 6 signups, cancel, question, bounce, crash

    text, html, csv_bytes = parts(mail)
    # The same, as the organisers read it: the review item before the changes, each once.
    assert text.index("VRAAGT UW AANDACHT (4)") < text.index("WAT VERANDERDE (9)")
    assert text.count("greet.willems@leuven.be") == 1
    assert text.count("ann.peeters@gent.be") == 3    # bounced (+ its command), her signup
    assert f"oplossen: leernetwerk resolve {a['review'][0]['id']} --as nothing" in text
    assert "leernetwerk cancel ann.peeters@gent.be" in text
    assert "Onbestelbaar-meldingen:      1" in text


def test_markup_and_newlines_from_mail_and_desk_change_only_their_own_row(desk):
    first_day(desk)
    run_digest(desk.store, desk.settings, desk.path, at(21, 8))
    text, html, _ = parts(digests_sent(desk.smtp)[0])

    assert "<script" not in html and "<b>" not in html and "<img" not in html
    assert "Hacker &lt;b&gt;vet&lt;/b&gt; &lt;script&gt;alert(1)&lt;/script&gt; Injected: rij" in html
    assert "Eve &lt;script&gt;alert&lt;/script" in html
    assert "Vraag over &lt;b&gt;parkeren&lt;/b&gt;" in html
    # The changes table keeps one row per change (plus its header): nothing broke out of a cell.
    changes_table = html.split("Wat veranderde (9)")[1].split("In cijfers")[0]
    assert changes_table.count("<tr>") == 10
    # In the text part the name stays on its own line; nothing starts a line of its own.
    line = next(l for l in text.splitlines() if "hacker@example.be" in l)
    assert "Hacker <b>vet</b> <script>alert(1)</script> Injected: rij" in line
    assert not any(l.startswith("Injected") for l in text.splitlines())
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)


def test_the_csv_attachment_parses_back_into_the_rows_of_status_json(desk, tmp_path):
    first_day(desk)
    run_digest(desk.store, desk.settings, desk.path, at(21, 8))
    _, _, csv_bytes = parts(digests_sent(desk.smtp)[0])

    cfg = write_config(tmp_path, desk.dovecot, desk.smtp)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("capacity = 20", "capacity = 3"),
                   encoding="utf-8")
    out = run_cli(["status", "--json", "--config", str(cfg), "--db", str(desk.path)], desk.dovecot)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)

    rows = list(csv.DictReader(io.StringIO(csv_bytes.decode("utf-8-sig"))))
    fields = ("status", "position", "arrived_at", "name", "email", "organisation")
    expected = [{k: "" if r[k] is None else str(r[k]) for k in fields}
                for r in status["registrations"]]
    assert [{k: row[k] for k in fields} for row in rows] == expected
    assert len(rows) == 7 and any("\n" in row["name"] for row in rows)


def test_the_next_day_lists_only_what_happened_since_and_a_restart_sends_nothing_twice(
        desk, tmp_path):
    first_day(desk)
    run_digest(desk.store, desk.settings, desk.path, at(21, 8))
    assert len(digests_sent(desk.smtp)) == 1

    # A restart at 08:01: a new process, its own connection, the job runs at once; and the
    # command by hand. Neither sends a second digest for the day.
    assert run_digest(desk.store, desk.settings, desk.path, at(21, 8, 1)).state == "already"
    cfg = write_config(tmp_path, desk.dovecot, desk.smtp)
    out = run_cli(["digest", "--send", "--now", "2018-05-21T08:01:00", "--config", str(cfg),
                   "--db", str(desk.path)], desk.dovecot)
    assert out.returncode == 1 and "already" in out.stdout, out.stdout + out.stderr
    assert len(digests_sent(desk.smtp)) == 1

    # Monday: one more signup; an organiser settles the question. The crashed mail stays.
    desk.arrival = at(21, 10)
    desk.arrive(signup_mail("Ivo De Smet", "ivo.desmet@gent.be", "Stad Gent"))
    desk.poll(at(21, 10, 30))
    question = [i for i in review.review_items(desk.store) if i["state"] == "review"][0]
    organiser.resolve(desk.store, desk.settings, message_id=question["id"], as_kind="nothing",
                      person=None, now=at(21, 11))

    result = run_digest(desk.store, desk.settings, desk.path, at(22, 8))
    assert result.state == "queued" and len(digests_sent(desk.smtp)) == 2
    data = result.data
    assert data["since"]["day"] == "2018-05-21"
    assert [(c["action"], c["person"]["email"]) for c in data["changes"]] == [
        ("waitlisted", "ivo.desmet@gent.be"), ("resolved", "greet.willems@leuven.be")]
    a = data["attention"]
    assert a["review"] == [] and a["bounced"] == [] and a["failed_mail"] == []
    # Still waiting for a person, so still listed, but no longer new.
    assert [q["new"] for q in a["quarantined"]] == [False]
    assert data["quiet"]["mails_processed"] == 1 and data["quiet"]["bounces"] == 0
    assert data["headline"]["waitlisted"] == 4
    text = digests_sent(desk.smtp)[1].get_body(("plain",)).get_content()
    assert "ann.peeters@gent.be" not in text and "Vraag over" not in text
    assert [d["day"] for d in desk.store.digests()] == ["2018-05-21", "2018-05-22"]


@pytest.fixture
def quiet_desk(smtp_server, tmp_path):
    settings = desk_settings(smtp_server=smtp_server)
    path = tmp_path / "state.sqlite"
    return settings, path, db.Store(db.connect(path))


def test_after_a_day_down_the_digest_covers_everything_since_the_last_one(quiet_desk, smtp_server):
    settings, path, store = quiet_desk
    organiser.register(store, settings, name="Ann", email="ann@gent.be", organisation=None,
                       now=at(20, 15))
    assert run_digest(store, settings, path, at(21, 8)).state == "queued"
    organiser.register(store, settings, name="Bert", email="bert@gent.be", organisation=None,
                       now=at(21, 15))
    # The worker is down from Monday evening until Wednesday 09:30: no digest on Tuesday.
    organiser.register(store, settings, name="Carla", email="carla@gent.be", organisation=None,
                       now=at(22, 15))
    result = run_digest(store, settings, path, at(23, 9, 30))
    assert result.state == "queued"
    assert result.data["since"]["day"] == "2018-05-21"
    assert [c["person"]["email"] for c in result.data["changes"]] == ["bert@gent.be",
                                                                      "carla@gent.be"]
    assert [d["day"] for d in store.digests()] == ["2018-05-21", "2018-05-23"]
    assert len(digests_sent(smtp_server)) == 2


def test_two_runs_at_once_queue_one_digest(quiet_desk, smtp_server):
    settings, path, store = quiet_desk
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        digest.run_job(path, settings, at(21, 8)).state)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["already"] * 3 + ["queued"]
    outbox.flush(store, settings, at(21, 8))
    assert len(digests_sent(smtp_server)) == 1


def test_a_quiet_day_is_sent_by_default_and_skipped_when_configured(smtp_server, tmp_path):
    settings = desk_settings(smtp_server=smtp_server)
    store = db.Store(db.connect(tmp_path / "a.sqlite"))
    result = run_digest(store, settings, tmp_path / "a.sqlite", at(21, 8))
    assert result.state == "queued" and result.data["quiet_day"]
    assert "Geen wijzigingen." in digests_sent(smtp_server)[0].get_body(("plain",)).get_content()

    smtp_server.clear()
    settings = desk_settings(smtp_server=smtp_server, digest={"skip_when_quiet": True})
    path = tmp_path / "b.sqlite"
    store = db.Store(db.connect(path))
    assert run_digest(store, settings, path, at(21, 8)).state == "skipped"
    assert run_digest(store, settings, path, at(21, 9)).state == "already"
    organiser.register(store, settings, name="Ann", email="ann@gent.be", organisation=None,
                       now=at(21, 15))
    result = run_digest(store, settings, path, at(22, 8))
    assert result.state == "queued" and result.data["since"]["day"] is None
    assert len(digests_sent(smtp_server)) == 1


def test_print_and_json_preview_change_nothing(quiet_desk, smtp_server, tmp_path, capsys):
    settings, path, store = quiet_desk
    organiser.register(store, settings, name="Ann", email="ann@gent.be", organisation=None,
                       now=at(20, 15))
    from processor.commands import cli

    cfg = PROJECT / "config" / "leernetwerk.toml"  # a preview talks to no server
    assert cli.main(["digest", "--now", "2018-05-21T08:00", "--config", str(cfg), "--db",
                     str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Onderwerp: Dagoverzicht") and "ann@gent.be" in out
    assert cli.main(["digest", "--json", "--now", "2018-05-21T08:00", "--config", str(cfg),
                     "--db", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"][0]["person"]["email"] == "ann@gent.be"
    assert store.digests() == [] and not digests_sent(smtp_server)


@pytest.mark.parametrize("section, problem", [
    ({"send_time": "8u"}, "[digest] send_time"),
    ({"skip_when_quiet": "ja"}, "[digest] skip_when_quiet"),
])
def test_digest_config_errors_name_the_file_and_key(section, problem):
    with pytest.raises(config.ConfigError) as err:
        desk_settings(digest=section)
    assert problem in str(err.value) and "leernetwerk.toml" in str(err.value)


def test_digest_config_defaults():
    settings = desk_settings()
    assert settings.digest.send_time == dt.time(8, 0)
    assert settings.digest.skip_when_quiet is False


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                    "(Debian package `chromium`); the digest's HTML is not rendered in a browser")
def test_the_html_digest_renders_in_chromium_without_running_anything(desk):
    first_day(desk)
    run_digest(desk.store, desk.settings, desk.path, at(21, 8))
    _, html, _ = parts(digests_sent(desk.smtp)[0])
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "digest.html"
    page.write_text(html, encoding="utf-8")
    png = ARTIFACTS / "digest.png"
    png.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile:
        shot = subprocess.run(
            [CHROMIUM, *flags, f"--user-data-dir={profile}", "--window-size=800,2400",
             f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert png.exists() and png.stat().st_size > 20_000, shot.stderr[-2000:]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
    # What the browser built: no script or image element came from a participant's name.
    assert "<script" not in dom and "<img" not in dom
    assert "Hacker &lt;b&gt;vet&lt;/b&gt;" in dom and "Vraag over &lt;b&gt;parkeren&lt;/b&gt;" in dom


def test_the_worker_sends_todays_digest_at_start_and_a_restarted_worker_not_again(
        dovecot, smtp_server, tmp_path):
    """The real scheduler wiring, on the real clock: with send_time 00:00 today's digest is due
    whenever the test runs, so the job's run at start sends it; a restart sends nothing."""
    cfg = write_config(tmp_path, dovecot, smtp_server)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        '[digest]\n', '[digest]\nsend_time = "00:00"\n', 1).replace(
        'send_time = "08:00"\n', '', 1), encoding="utf-8")
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    state = tmp_path / "state.sqlite"

    def run_worker_until(condition):
        worker = WorkerProcess(["--config", str(cfg), "--db", str(state)], env=env,
                               log=tmp_path / "worker.log")
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.1)
        err = worker.stop()
        assert worker.returncode == 0, err
        return err

    err = run_worker_until(lambda: len(digests_sent(smtp_server)) >= 1)
    assert len(digests_sent(smtp_server)) == 1 and "digest: digest for" in err

    def recorded_and_settled():
        conn = sqlite3.connect(state)
        try:
            return conn.execute("SELECT COUNT(*) FROM digests").fetchone()[0] == 1
        finally:
            conn.close()

    # The restarted worker's jobs all run at start; give them time to do (nothing) twice over.
    started = time.monotonic()
    err = run_worker_until(lambda: time.monotonic() - started > 4 and recorded_and_settled())
    assert "digest: digest for" not in err
    assert len(digests_sent(smtp_server)) == 1


def test_reminders_caught_up_late_need_a_person(quiet_desk, smtp_server):
    from processor.desk import reminders

    settings, path, store = quiet_desk
    organiser.register(store, settings, name="Ann", email="ann@gent.be", organisation=None,
                       now=dt.datetime(2018, 6, 1, 9, tzinfo=BXL))
    run_digest(store, settings, path, dt.datetime(2018, 6, 2, 8, tzinfo=BXL))
    # The 7-day reminder for session 1 was due Tuesday 19 June 10:00; the worker was back at 14:00.
    reminders.queue_due(store, settings, dt.datetime(2018, 6, 19, 14, tzinfo=BXL))
    result = run_digest(store, settings, path, dt.datetime(2018, 6, 20, 8, tzinfo=BXL))
    assert result.data["attention"]["late_reminders"] == [
        {"session": 1, "lead_days": 7, "due": "di 19 jun 10:00", "sent": "di 19 jun 14:00",
         "participants": 1}]
    assert result.data["quiet"]["reminders_queued"] == 1
    text = digests_sent(smtp_server)[-1].get_body(("plain",)).get_content()
    assert "sessie 1, 7 dag(en) vooraf: gepland di 19 jun 10:00, verstuurd di 19 jun 14:00" in text
