"""`leernetwerk check-config` against Dovecot and aiosmtpd: logins without sending, folders, templates."""

from __future__ import annotations

import json
import shutil

import pytest

from processor.commands import checkconfig, cli
from processor.demo import samples
from tests.desk import PROJECT, desk_settings
from tests.servers import free_port
from tests.test_desk import write_config

SMTP_ENV = "LEERNETWERK_TEST_SMTP_PASSWORD"


@pytest.fixture(autouse=True)
def token_secret(monkeypatch):
    """Decisions by mail are on in the shipped config: their key is a secret like the passwords."""
    monkeypatch.setenv("LEERNETWERK_TOKEN_SECRET", "een-geheim-van-minstens-zestien-tekens")


def _settings(dovecot, smtp, monkeypatch, *, smtp_password="smtp-pass", **sections):
    monkeypatch.setenv(SMTP_ENV, smtp_password)
    sections.setdefault("smtp", {}).update(username="desk", password_env=SMTP_ENV)
    return desk_settings(dovecot, smtp, monkeypatch, **sections)


def _keys(report) -> list[str]:
    return [p.key for p in report.problems]


def test_everything_right_logs_in_to_both_and_sends_nothing(dovecot, make_smtp_server,
                                                            monkeypatch):
    smtp = make_smtp_server(auth=("desk", "smtp-pass"))
    settings = _settings(dovecot, smtp, monkeypatch)
    report = checkconfig.run(None, settings=settings)
    assert report.problems == [], report.problems
    assert any(line.startswith("IMAP: logged in") for line in report.ok)
    assert any(line.startswith("SMTP: connected") for line in report.ok)
    assert smtp.messages == [] and smtp.attempts == []


def test_wrong_passwords_name_the_section_and_the_fix(dovecot, make_smtp_server, monkeypatch):
    smtp = make_smtp_server(auth=("desk", "smtp-pass"))
    settings = _settings(dovecot, smtp, monkeypatch, smtp_password="wrong")
    monkeypatch.setenv("LEERNETWERK_TEST_IMAP_PASSWORD", "also-wrong")
    report = checkconfig.run(None, settings=settings)
    assert _keys(report) == ["[mailbox] username", "[smtp] username"]
    assert all("password in LEERNETWERK_TEST_" in p.fix for p in report.problems)


def test_a_missing_password_variable_is_one_problem(dovecot, smtp_server, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    monkeypatch.delenv("LEERNETWERK_TEST_IMAP_PASSWORD")
    report = checkconfig.run(None, settings=settings)
    assert _keys(report) == ["[mailbox] password_env"]
    assert "LEERNETWERK_TEST_IMAP_PASSWORD" in report.problems[0].problem


def test_missing_folders_are_reported_or_created(dovecot, smtp_server, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch,
                             mailbox={"folder": "Inschrijvingen", "move_to": "Verwerkt"})
    report = checkconfig.run(None, settings=settings)
    assert _keys(report) == ["[mailbox] folder", "[mailbox] move_to"]
    assert "--create-folders" in report.problems[0].fix

    asked = []
    report = checkconfig.run(None, settings=settings,
                             ask=lambda q: asked.append(q) or "Verwerkt" in q)
    assert len(asked) == 2 and _keys(report) == ["[mailbox] folder"]

    report = checkconfig.run(None, settings=settings, create_folders=True)
    assert report.problems == []
    client = dovecot.client()
    assert client.folder_exists("Inschrijvingen") and client.folder_exists("Verwerkt")


def test_unreachable_smtp_and_a_server_without_starttls(dovecot, smtp_server, monkeypatch):
    closed = free_port()
    settings = desk_settings(dovecot, smtp_server, monkeypatch, smtp={"port": closed})
    report = checkconfig.run(None, settings=settings)
    assert _keys(report) == ["[smtp] port"]
    assert f"127.0.0.1:{closed}" in report.problems[0].problem

    settings = desk_settings(dovecot, smtp_server, monkeypatch, smtp={"security": "starttls"})
    report = checkconfig.run(None, settings=settings)
    assert _keys(report) == ["[smtp] security"]


def test_a_template_with_an_unknown_variable(dovecot, smtp_server, monkeypatch, tmp_path):
    folder = tmp_path / "templates"
    shutil.copytree(PROJECT / "templates", folder)
    path = folder / "waitlist.txt"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(6, "op plaats {{ positon }}\n")
    path.write_text("".join(lines), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = samples.with_templates(desk_settings(dovecot, smtp_server, monkeypatch), folder)
    report = checkconfig.run(None, settings=settings)
    assert [str(p).splitlines()[0] for p in report.problems] == [
        "PROBLEM templates/waitlist.txt line 7: 'positon' is undefined"]
    assert "leernetwerk preview waitlist" in report.problems[0].fix


def test_the_command_exit_codes_and_json(dovecot, smtp_server, monkeypatch, tmp_path, capsys):
    path = write_config(tmp_path, dovecot, smtp_server)
    monkeypatch.setenv("LEERNETWERK_IMAP_PASSWORD", dovecot.password)
    assert cli.main(["check-config", "--config", str(path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("All good.")

    monkeypatch.setenv("LEERNETWERK_IMAP_PASSWORD", "wrong")
    assert cli.main(["check-config", "--config", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [p["key"] for p in data["problems"]] == ["[mailbox] username"]

    text = path.read_text(encoding="utf-8").replace("capacity = 20", "capacity = -3")
    path.write_text(text, encoding="utf-8")
    assert cli.main(["check-config", "--config", str(path), "--offline"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM [event] capacity: must be a positive number" in out

    assert cli.main(["check-config", "--config", str(tmp_path / "nope.toml")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_organiser_mail_needs_its_key_and_personal_addresses(dovecot, smtp_server, monkeypatch,
                                                            tmp_path, capsys):
    """Issue 19: the shipped [organisers] is the desk's own mailbox (a warning: the digest
    arrives, but nobody can decide by mail), and the token key must be in the environment."""
    path = write_config(tmp_path, dovecot, smtp_server)
    monkeypatch.setenv("LEERNETWERK_IMAP_PASSWORD", dovecot.password)
    monkeypatch.delenv("LEERNETWERK_TOKEN_SECRET")
    assert cli.main(["check-config", "--config", str(path), "--json", "--offline"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [p["key"] for p in data["problems"]] == ["[organisers] token_secret_env"]
    assert [w["key"] for w in data["warnings"]] == ["[organisers] addresses"]
    assert "no organiser can decide by mail" in data["warnings"][0]["problem"]

    monkeypatch.setenv("LEERNETWERK_TOKEN_SECRET", "kort")
    text = path.read_text(encoding="utf-8").replace(
        'addresses = ["duurzameontwikkeling@vlaanderen.be"]',
        'addresses = ["ann.organisator@vlaanderen.be"]')
    path.write_text(text, encoding="utf-8")
    assert cli.main(["check-config", "--config", str(path), "--json", "--offline"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert "shorter than 16" in data["problems"][0]["problem"] and data["warnings"] == []

    monkeypatch.setenv("LEERNETWERK_TOKEN_SECRET", "een-geheim-van-minstens-zestien-tekens")
    assert cli.main(["check-config", "--config", str(path), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "may decide by mail" in out and out.rstrip().endswith("All good.")
