"""JSON log lines, --verbose/--quiet on every command, and the progress bar that only a terminal sees."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

from processor.commands import cli
from processor import logs, progress
from tests.desk import PROJECT
from tests.test_desk import write_config


def test_every_command_takes_the_logging_options():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        for option in ("--verbose", "--quiet", "--log-format"):
            assert option in command._option_string_actions, (name, option)


def test_json_lines_carry_extra_fields_and_exceptions():
    stream = io.StringIO()
    logs.setup(logging.DEBUG, "json", stream)
    try:
        log = logging.getLogger("leernetwerk.test")
        log.info("poll: %s fetched", 3, extra={"fetched": 3})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("mail %s set aside", 7)
    finally:
        logs.setup(logging.WARNING, "text")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "INFO" and first["logger"] == "leernetwerk.test"
    assert first["message"] == "poll: 3 fetched" and first["fetched"] == 3
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_the_progress_bar_only_on_a_terminal_and_never_with_json_logs():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    quiet = io.StringIO()
    with progress.Progress("reading", stream=quiet) as bar:
        bar.update(5, 10)
    assert quiet.getvalue() == ""

    tty = Tty()
    with progress.Progress("reading", stream=tty) as bar:
        bar.update(10, 10)
    assert "reading [##############################] 10/10" in tty.getvalue()
    assert tty.getvalue().endswith("\n")

    progress.json_logs = True
    try:
        assert not progress.Progress("reading", stream=Tty()).enabled
    finally:
        progress.json_logs = False


def test_poll_logs_json_lines_to_stderr(dovecot, smtp_server, tmp_path):
    config = write_config(tmp_path, dovecot, smtp_server)
    dovecot.stop()  # the mailbox is down: the poll logs a warning and still exits
    env = os.environ | {"LEERNETWERK_IMAP_PASSWORD": dovecot.password}
    done = subprocess.run(
        [sys.executable, "-m", "processor", "poll", "--config", str(config), "--db",
         str(tmp_path / "state.sqlite"), "--log-format", "json"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines, done.stderr
    warning = next(r for r in lines if r["level"] == "WARNING")
    assert warning["logger"] == "processor.desk.pipeline"
    assert warning["message"].startswith("mailbox unavailable")
    assert "\r" not in done.stderr  # no progress bar in a log stream


def test_quiet_and_verbose_set_the_level(tmp_path, capsys):
    assert cli.main(["preview", "promoted", "--quiet"]) == 0
    assert logging.getLogger().level == logging.WARNING
    assert cli.main(["preview", "promoted", "--verbose"]) == 0
    assert logging.getLogger().level == logging.DEBUG
    logs.setup(logging.WARNING, "text")
