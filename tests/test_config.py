"""A bad config stops with a message naming the file and the key; secrets only from the environment."""

from __future__ import annotations

import copy

import pytest

from processor import config
from tests.desk import PROJECT, base_config


def load_with(tmp_path, mutate):
    import tomllib  # noqa: F401  (the file is written as TOML text below)

    raw = copy.deepcopy(base_config())
    mutate(raw)
    path = tmp_path / "leernetwerk.toml"
    path.write_text(_dump(raw), encoding="utf-8")
    (tmp_path / "charter.toml").write_text("", encoding="utf-8")
    return config.load(path), path


def _dump(value, prefix=""):
    """A tiny TOML writer for these tests: tables, arrays of tables, strings, numbers, dates."""
    lines, tables = [], []
    for key, item in value.items():
        if isinstance(item, dict):
            tables.append((key, item))
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            for entry in item:
                lines.append(f"\n[[{prefix}{key}]]")
                lines.append(_dump(entry))
        else:
            lines.append(f"{key} = {_literal(item)}")
    for key, item in tables:
        lines.append(f"\n[{prefix}{key}]")
        lines.append(_dump(item, prefix=f"{prefix}{key}."))
    return "\n".join(lines)


def _literal(item):
    import json

    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (int, float)):
        return str(item)
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False)
    if isinstance(item, list):
        return "[" + ", ".join(_literal(i) for i in item) + "]"
    return item.isoformat()


def test_the_shipped_config_is_the_2018_edition():
    settings = config.load(PROJECT / "config" / "leernetwerk.toml")
    assert settings.event.capacity == 20
    assert [s.number for s in settings.event.sessions] == [1, 2, 3, 4, 5, 6]
    first = settings.event.sessions[0]
    assert first.starts_at.isoformat() == "2018-06-26T14:00:00+02:00"
    assert settings.event.sessions[-1].starts_at.isoformat() == "2018-12-18T14:00:00+01:00"
    assert all(s.date.weekday() == 1 for s in settings.event.sessions)  # Tuesdays
    assert settings.mailbox.address == "duurzameontwikkeling@vlaanderen.be"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["event"].pop("capacity"), "[event] capacity: is missing"),
    (lambda r: r["event"].update(capacity=0), "[event] capacity: must be a positive number"),
    (lambda r: r["event"].update(capacity="twintig"), "[event] capacity: must be a int"),
    (lambda r: r["event"].update(timezone="Europe/Brussel"), "[event] timezone: unknown timezone"),
    (lambda r: r["sessions"][2].update(start="14u"), "[sessions #3] start: must be a time"),
    (lambda r: r["sessions"][0].update(end="13:00"), "[sessions #1] end: must be after start"),
    (lambda r: r["mailbox"].update(security="ssl"), "[mailbox] security: must be one of tls, starttls, none"),
    (lambda r: r["mailbox"].update(security="none"), '[mailbox] security: "none" (plain text) is only allowed for a loopback host'),
    (lambda r: r["smtp"].update(port="587"), "[smtp] port: must be a int"),
    (lambda r: r["organisers"].update(addresses=[]), "[organisers] addresses: must be a non-empty list"),
])
def test_a_bad_value_names_the_file_and_the_key(tmp_path, mutate, message):
    with pytest.raises(config.ConfigError) as err:
        load_with(tmp_path, mutate)
    assert str(tmp_path / "leernetwerk.toml") in str(err.value)
    assert message in str(err.value)


def test_plain_text_is_allowed_to_loopback(tmp_path):
    settings, _ = load_with(tmp_path, lambda r: r["mailbox"].update(host="127.0.0.1", security="none"))
    assert settings.mailbox.security == "none"


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[event\nname = 1", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="broken.toml: not valid TOML"):
        config.load(path)


def test_the_password_comes_from_the_named_environment_variable(tmp_path, monkeypatch):
    settings, path = load_with(tmp_path, lambda r: None)
    monkeypatch.delenv("LEERNETWERK_IMAP_PASSWORD", raising=False)
    with pytest.raises(config.ConfigError, match=r"\[mailbox\] password_env: the environment "
                                                 r"variable LEERNETWERK_IMAP_PASSWORD is not set"):
        settings.mailbox.password()
    monkeypatch.setenv("LEERNETWERK_IMAP_PASSWORD", "from-the-environment")
    assert settings.mailbox.password() == "from-the-environment"


def test_the_cli_reports_a_config_error_and_exits_2(tmp_path, capsys):
    from processor.commands.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[event]\nname = 'x'\n", encoding="utf-8")
    assert main(["status", "--config", str(bad), "--db", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "config error" in err
