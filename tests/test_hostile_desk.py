"""Hostile mail against the desk (issue 16): one mail must not stop, stall or hijack it.

Through a real poll (Dovecot + aiosmtpd) wherever the finding came from one.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import subprocess
import sys

import pytest

from processor.desk import digest, organiser
from tests.desk import PROJECT, signup
from tests.test_desk import write_config
from tests.test_waitlist import NOW, START, Desk, plain_mail

COLLEAGUE = ("Beste,\n\nIk schrijf mijn collega in voor het Leernetwerk SDG: {name} ({address}), "
             "Stad Gent.\n\nMet vriendelijke groeten,\nAnn Maes\nStad Gent\n")


def names_colleague(name: str, address: str) -> bytes:
    return plain_mail("Ann Maes", "ann.maes@gent.be", "Inschrijving collega",
                      COLLEAGUE.format(name=name, address=address))


# -- finding 1: one accented address never stops sending ---------------------------------------

def test_an_accented_address_is_sent_with_smtputf8_and_the_queue_goes_on(dovecot, smtp_server,
                                                                         tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    desk.arrive(names_colleague("José Peeters", "jösé.peeters@gent.be"))
    desk.arrive(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent", date=START))

    report = desk.poll()

    assert report.flush.failed == 0
    assert "jösé.peeters@gent.be" in [r for m in smtp_server.messages for r in m.rcpt_tos]
    assert desk.mails_to("bert.claes@gent.be")
    [reply] = [m for m in smtp_server.messages if "jösé.peeters@gent.be" in m.rcpt_tos]
    # As UTF-8 (RFC 6532), not an encoded-word inside the address, which is no address.
    parsed = email.message_from_bytes(reply.data, policy=email.policy.default.clone(utf8=True))
    assert "<jösé.peeters@gent.be>".encode() in reply.data
    assert parsed["To"].addresses[0].domain == "gent.be"
    # Registered in its arrival order, and shown to a person: an accent is most often a typo.
    assert desk.status()["jösé.peeters@gent.be"]["status"] == "confirmed"
    from processor.desk import review
    [item] = review.review_items(desk.store)
    assert item["state"] == "review" and any("non-ASCII" in r for r in item["reasons"])


def test_without_smtputf8_the_accented_reply_fails_alone_and_the_digest_shows_it(
        dovecot, make_smtp_server, tmp_path, monkeypatch):
    relay = make_smtp_server(smtputf8=False)
    desk = Desk(dovecot, relay, tmp_path, monkeypatch)
    desk.arrive(names_colleague("José Peeters", "jösé.peeters@gent.be"))
    desk.arrive(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent", date=START))

    report = desk.poll()

    assert report.flush.failed == 1
    assert desk.mails_to("bert.claes@gent.be")
    assert not any("jösé.peeters@gent.be" in m.rcpt_tos for m in relay.messages)
    # A second poll neither crashes nor tries again: the row failed for good.
    again = desk.poll()
    assert again.flush.sent == again.flush.failed == 0
    [failed] = digest.contents(desk.store, desk.settings, NOW)["attention"]["failed_mail"]
    assert "jösé.peeters@gent.be" in failed["to"]
    assert "SMTPUTF8" in failed["error"]


def test_an_organiser_command_that_sends_at_once_does_not_crash(dovecot, make_smtp_server,
                                                                tmp_path):
    relay = make_smtp_server(smtputf8=False)
    cfg = write_config(tmp_path, dovecot, relay)
    base = ["--config", str(cfg), "--db", str(tmp_path / "state.sqlite"),
            "--now", "2018-05-20T12:00:00+02:00"]
    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    run = subprocess.run([sys.executable, "-m", "processor", "register", "--email",
                          "jösé.peeters@gent.be", "--name", "José Peeters", *base],
                         cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "1 mail(s) konden niet verstuurd worden" in run.stdout


# -- finding 4: identity is the Message-ID and the hash of the bytes ---------------------------

def _with_message_id(raw: bytes, message_id: str) -> bytes:
    lines = raw.split(b"\r\n")
    return b"\r\n".join(b"Message-ID: " + message_id.encode() if line.startswith(b"Message-ID:")
                        else line for line in lines)


def test_two_mails_with_one_message_id_are_each_registered_answered_and_marked(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    reused = "<formulier@webformulier.example>"
    desk.arrive(_with_message_id(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent",
                                        date=START), reused))
    desk.arrive(_with_message_id(signup("Carine Wouters", "carine.wouters@gent.be", "Stad Gent",
                                        date=START), reused))

    desk.poll()

    assert set(desk.status()) == {"bert.claes@gent.be", "carine.wouters@gent.be"}
    assert desk.mails_to("bert.claes@gent.be") and desk.mails_to("carine.wouters@gent.be")
    rows = desk.store.conn.execute("SELECT uid, state FROM messages ORDER BY uid").fetchall()
    assert [tuple(r) for r in rows] == [(1, "processed"), (2, "processed")]
    assert all(b"$Processed" in f for f in dovecot.flags_of().values())


def test_the_same_mail_fetched_again_after_the_upgrade_is_still_one_row(
        dovecot, smtp_server, tmp_path, monkeypatch):
    """A database from before migration 10 (identity = the Message-ID) is rewritten in place:
    after a UIDVALIDITY reset its mails are recognised, not answered again."""
    from processor.store import db

    import hashlib

    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    desk.arrive(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent", date=START))
    desk.arrive(signup("Carine Wouters", "carine.wouters@gent.be", "Stad Gent", date=START))
    desk.poll()
    conn = desk.store.conn
    # As the old code left it: identity = the Message-ID; Carine erased on request, her row
    # marked with the hash of her Message-ID.
    carine_id = conn.execute("SELECT message_id FROM messages WHERE uid = 2").fetchone()[0]
    organiser.forget(desk.store, email="carine.wouters@gent.be", now=NOW)
    conn.execute("UPDATE messages SET identity = message_id WHERE uid = 1")
    conn.execute("UPDATE messages SET identity = ? WHERE uid = 2",
                 ("forgotten:" + hashlib.sha256(carine_id.encode()).hexdigest(),))
    conn.execute("DELETE FROM schema_migrations WHERE version = 10")
    store = db.Store(db.connect(desk.path))
    desk.store = store

    dovecot.recreate_inbox(keep_messages=True)
    desk.poll()

    assert store.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 2
    assert len(smtp_server.messages) == 2
    assert "carine.wouters@gent.be" not in desk.status()
    assert all(b"$Processed" in f for f in dovecot.flags_of().values())


# -- finding 6: every suggested command quotes its arguments -----------------------------------

HOSTILE = '"$(touch pwned)"@gent.be'
SIGNUP_BODY = ("Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk Sustainable Development "
               "Goals.\n\nNaam: Eve Test\nOrganisatie: Stad Gent\n\nGroeten,\nEve\n")


def delivery_failure(recipient: str, original_id: str, *, to: str = "duurzameontwikkeling@vlaanderen.be") -> bytes:
    """A DSN for `recipient` whose returned headers name `original_id` (RFC 3464)."""
    return (f"From: Mail Delivery System <MAILER-DAEMON@relay.gent.be>\r\n"
            f"To: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            f"Message-ID: <dsn-{abs(hash(original_id))}@relay.gent.be>\r\n"
            "Date: Mon, 14 May 2018 12:00:00 +0200\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.gent.be\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            "From: Leernetwerk SDG <duurzameontwikkeling@vlaanderen.be>\r\n"
            f"To: {recipient}\r\nMessage-ID: {original_id}\r\n"
            "--b--\r\n").encode()


def _runs_in_bash(command: str, where) -> list[str]:
    """Run a printed command the way an organiser would paste it; what files appeared."""
    subprocess.run(["bash", "-c", command], cwd=where, capture_output=True, timeout=30)
    return sorted(p.name for p in where.iterdir())


def test_the_digests_cancel_command_for_a_hostile_address_runs_nothing(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    desk.arrive(plain_mail("Eve", HOSTILE, "Inschrijving Leernetwerk SDG", SIGNUP_BODY))
    desk.poll()
    [reply] = smtp_server.messages
    desk.arrive(delivery_failure(HOSTILE, reply.message["Message-ID"]))
    desk.poll()

    [bounced] = digest.contents(desk.store, desk.settings, NOW)["attention"]["bounced"]
    shell = tmp_path / "shell"
    shell.mkdir()
    assert _runs_in_bash(bounced["command"], shell) == []
    assert HOSTILE in __import__("shlex").split(bounced["command"])


def test_review_and_reprocess_commands_are_quoted():
    from processor.display import shell_command
    import shlex

    command = shell_command("cancel", HOSTILE, "--reason", "belde af; rm -rf ~")
    assert shlex.split(command) == ["leernetwerk", "cancel", HOSTILE, "--reason",
                                    "belde af; rm -rf ~"]
    source = "".join((PROJECT / "processor" / "desk" / f).read_text()
                     for f in ("review.py", "reprocess.py", "digest.py"))
    # Every command those modules suggest is built by shell_command, none by hand.
    assert not __import__("re").search(r"leernetwerk [a-z-]+ [^`\"\n]*\{", source)


# -- Medium: formula injection in export and the digest's CSV ----------------------------------

def test_export_and_digest_csv_show_formulas_as_text(dovecot, smtp_server, tmp_path,
                                                      monkeypatch):
    import csv
    import io

    from processor.desk import status

    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    body = ("Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk SDG.\n\n"
            "Naam: Bert Claes\nOrganisatie: =HYPERLINK(\"http://x.example\";\"klik\")\n\n"
            "Groeten,\nBert\n")
    desk.arrive(plain_mail("Bert Claes", "bert.claes@gent.be", "Inschrijving Leernetwerk SDG",
                           body))
    desk.poll()
    assert desk.status()["bert.claes@gent.be"]["organisation"].startswith("=")

    for text in (status.export_csv(desk.store, desk.settings),
                 digest.build(desk.store, desk.settings,
                              digest.contents(desk.store, desk.settings, NOW), NOW)
                 .get_payload()[1].get_content().lstrip("\ufeff")):
        [row] = list(csv.DictReader(io.StringIO(text)))
        assert row["organisation"].startswith("'=HYPERLINK")
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values())


# -- Low: control and bidi characters never reach what organisers read -------------------------

def test_control_and_bidi_characters_are_stripped_from_review_status_export_and_digest(
        dovecot, smtp_server, tmp_path, monkeypatch, capsys):
    from processor.desk import review, status

    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    tricky = "Bert\u202e gpj.exe\u202c Cl\x9baes"
    body = (f"Beste,\n\nGraag schrijf ik mij in voor het Leernetwerk SDG.\n\nNaam: {tricky}\rX\n"
            "Organisatie: Stad\u2066 Gent\n\nGroeten,\nBert\n")
    desk.arrive(plain_mail(tricky, "bert.claes@gent.be", f"Inschrijving {tricky}", body))
    desk.arrive(plain_mail(tricky, "bert.claes2@gent.be", f"Vraag\u202e {tricky}",
                           "Beste,\n\nWaar is de parking?\n\nBert\n"))
    desk.poll()

    bad = ("\u202e", "\u202c", "\u2066", "\x9b", "\r")
    shown = [status.as_table(status.registry_status(desk.store, desk.settings)),
             status.export_csv(desk.store, desk.settings),
             json.dumps(review.review_items(desk.store), ensure_ascii=False),
             json.dumps(digest.contents(desk.store, desk.settings, NOW), ensure_ascii=False)]
    from processor.commands import cli
    # Event reasons quote names from mails (cancellation_targets does, for one).
    with desk.store.transaction():
        desk.store.log(now=NOW, action="needs_review", email="bert.claes@gent.be",
                       reason=f"the name “{tricky}” matches 2 registration(s)")
    capsys.readouterr()
    cli.main(["history", "bert.claes@gent.be", "--db", str(desk.path),
              "--config", str(PROJECT / "config" / "leernetwerk.toml")])
    shown.append(capsys.readouterr().out)
    assert "Bert" in shown[0] and "Vraag" in shown[2] and "gpj.exe" in shown[4]
    for text in shown:
        # (csv ends its own rows with CRLF: only a CR inside a row is the mail's)
        assert not any(c in text.replace("\r\n", "\n") for c in bad), text


# -- finding 8: registered_by in a stranger's mail is short and clean --------------------------

def test_a_phishing_display_name_never_reaches_a_colleagues_confirmation(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    bait = ("Uw account verloopt vandaag. Bevestig uw gegevens op https://login.example/verify "
            "De helpdesk")
    desk.arrive(plain_mail(bait, "ann.maes@gent.be", "Inschrijving collega",
                           COLLEAGUE.format(name="Bert Claes", address="bert.claes@gent.be")))
    desk.poll()

    [mail] = desk.mails_to("bert.claes@gent.be")
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    for body in (text, html):
        assert "https://" not in body and "verloopt" not in body
        assert "ann.maes@gent.be schreef u in" in " ".join(body.split())


def test_a_plain_colleague_name_is_still_shown():
    from processor.display import short_name

    assert short_name("Ann Maes", "ann.maes@gent.be") == "Ann Maes"
    assert short_name("Ann\u202e Maes\x9b", "ann.maes@gent.be") == "Ann Maes"
    assert short_name("A" * 41, "ann.maes@gent.be") == "ann.maes@gent.be"
    assert short_name("zie www.example.be", "ann.maes@gent.be") == "ann.maes@gent.be"


# -- Medium: the daily cap never eats a state change; strangers are not copied -----------------

def test_a_promotion_after_strangers_used_up_her_day_is_deferred_not_dropped(
        dovecot, smtp_server, tmp_path, monkeypatch):

    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch, event={"capacity": 1})
    gina = "gina.test@gent.be"
    desk.arrive(signup("Ann Maes", "ann.maes@gent.be", "Stad Gent", date=START))
    desk.arrive(signup("Gina Test", gina, "Stad Gent", date=START))
    desk.poll()
    assert desk.status()[gina]["status"] == "waitlisted"
    strangers = [f"iemand{i}@elders.be" for i in range(5)]
    for stranger in strangers:
        desk.arrive(plain_mail("Iemand", stranger, "Inschrijving collega",
                               COLLEAGUE.format(name="Gina Test", address=gina)))
    desk.poll()
    desk.arrive(plain_mail("Ann Maes", "ann.maes@gent.be", "Afmelding",
                           "Beste,\n\nIk moet mijn inschrijving voor het leernetwerk helaas "
                           "annuleren; ik kan niet deelnemen.\n\nGroeten,\nAnn Maes\n"))
    desk.poll()

    assert desk.status()[gina]["status"] == "confirmed"
    kinds = lambda state: [r["kind"] for r in desk.store.outbox_rows()  # noqa: E731
                           if r["state"] == state and gina in json.loads(r["recipients"])]
    assert "promoted" in kinds("pending") and "promoted" not in kinds("sent")
    # Strangers never read her status, not even as a copy.
    assert not any(set(strangers) & set(m.rcpt_tos) for m in smtp_server.messages
                   if gina in m.rcpt_tos)
    assert all(m.rcpt_tos == (gina,) for m in smtp_server.messages if gina in m.rcpt_tos)

    desk.poll(NOW + dt.timedelta(days=1, minutes=1))
    assert "promoted" in kinds("sent")
    events = [r["action"] for r in desk.store.conn.execute(
        "SELECT action FROM events WHERE email = ?", (gina,))]
    assert "reply_deferred" in events


# -- Low: a forged delivery failure does not list a participant as bounced ---------------------

def test_a_delivery_failure_counts_only_for_a_mail_the_desk_sent_to_that_address(
        dovecot, smtp_server, tmp_path, monkeypatch):
    from processor.desk import review

    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    desk.arrive(signup("Bert Claes", "bert.claes@gent.be", "Stad Gent", date=START))
    desk.arrive(signup("Eve Test", "eve@elders.be", "Stad Brugge", date=START))
    desk.poll()
    [evesown] = desk.mails_to("eve@elders.be")
    # Forged: names no mail of ours; and one naming Eve's own confirmation, for Bert.
    desk.arrive(delivery_failure("bert.claes@gent.be", "<bestaat-niet@elders.be>"))
    desk.arrive(delivery_failure("bert.claes@gent.be", evesown["Message-ID"]))
    desk.poll()

    attention = digest.contents(desk.store, desk.settings, NOW)["attention"]
    assert attention["bounced"] == []
    held = [i for i in review.review_items(desk.store) if i["kind"] == "bounce"]
    assert len(held) == 2 and all(any("possibly forged" in r for r in i["reasons"]) for i in held)
    assert desk.store.conn.execute(
        "SELECT COUNT(*) FROM events WHERE action = 'bounce_unrelated'").fetchone()[0] == 2
    assert all("cancel" not in i["command"] for i in held)

    # The real one, returning Bert's own confirmation, is listed with its command.
    [bertsown] = desk.mails_to("bert.claes@gent.be")
    desk.arrive(delivery_failure("bert.claes@gent.be", bertsown["Message-ID"]))
    desk.poll()
    [bounced] = digest.contents(desk.store, desk.settings, NOW)["attention"]["bounced"]
    assert bounced["person"]["email"] == "bert.claes@gent.be"


# -- Low: a read-only database folder is one clear line, not a traceback -----------------------

@pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv"), reason="needs setpriv (util-linux)")
def test_a_read_only_database_folder_gives_one_clear_line():
    import shutil
    import tempfile

    from processor.store import db

    # Root writes anywhere: the command runs as nobody, the way an IT colleague's service user
    # meets a folder it may not write in.
    folder = tempfile.mkdtemp(prefix="leernetwerk-ro-")
    try:
        existing = os.path.join(folder, "state.sqlite")
        db.connect(existing).close()
        for leftover in ("state.sqlite-wal", "state.sqlite-shm"):
            if os.path.exists(os.path.join(folder, leftover)):
                os.unlink(os.path.join(folder, leftover))
        os.chmod(existing, 0o644)
        os.chmod(folder, 0o555)
        for path in (existing, os.path.join(folder, "nieuw.sqlite")):
            for command in (["status"], ["review"], ["export", "-o", "/dev/null"]):
                run = subprocess.run(
                    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     sys.executable, "-m", "processor", *command, "--db", path,
                     "--config", str(PROJECT / "config" / "leernetwerk.toml")],
                    cwd="/", capture_output=True, text=True, timeout=60,
                    env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
                assert run.returncode == 4, (command, run.stdout, run.stderr)
                assert "Traceback" not in run.stderr
                [line] = run.stderr.strip().splitlines()
                assert line.startswith(f"leernetwerk: database {path}: ")
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


# -- Low: addresses and display names in built mails -------------------------------------------

def test_a_quoted_local_part_with_an_at_sign_is_answered_at_its_own_domain(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    tricky = '"eve@evil.example"@gent.be'
    desk.arrive(plain_mail("Eve", tricky, "Inschrijving Leernetwerk SDG", SIGNUP_BODY))
    desk.poll()

    [reply] = smtp_server.messages
    parsed = email.message_from_bytes(reply.data, policy=email.policy.default)
    [to] = parsed["To"].addresses
    assert (to.username, to.domain) == ("eve@evil.example", "gent.be")
    assert reply.rcpt_tos == (tricky,)


def test_a_huge_unbreakable_display_name_never_makes_a_line_over_998(
        dovecot, smtp_server, tmp_path, monkeypatch):
    desk = Desk(dovecot, smtp_server, tmp_path, monkeypatch)
    desk.arrive(plain_mail("X" * 2000, "ann.maes@gent.be", "Inschrijving collega",
                           COLLEAGUE.format(name="Bert Claes", address="bert.claes@gent.be")))
    desk.poll()

    [reply] = smtp_server.messages
    assert "ann.maes@gent.be" in reply.rcpt_tos      # the registrant is copied, shortened
    assert max(len(line) for line in reply.data.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(reply.data, policy=email.policy.default)
    assert parsed["Cc"].addresses[0].display_name.count("X") < 100
