"""The README's first command: the demo runs the real IMAP and SMTP code paths on embedded servers."""

from __future__ import annotations

import subprocess
import sys

from tests.desk import PROJECT


def test_the_demo_confirms_twenty_and_waitlists_five(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "processor", "demo", "--db", str(tmp_path / "demo.sqlite")],
        cwd=PROJECT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Poll 1: 27 fetched; 27 applied" in out
    assert "25 sent" in out
    # The question and the spam are kept and set aside with their reasons, never answered.
    assert "Set aside for an organiser, unanswered (2):" in out
    assert "bart.aerts@zemst.be" in out and "events@conference-deals.example" in out
    assert "Poll 2: 0 fetched; 0 applied; 0 quarantined; 0 marked on the server; 0 sent" in out
    assert "Bevestigd 20/20 · wachtlijst 5 · geannuleerd 0" in out
    assert out.count("Inschrijving bevestigd:") >= 20
    assert out.count("Op de wachtlijst:") >= 5
    assert "U staat op de wachtlijst, op plaats 5." in out.replace("\n", " ")
    replies = out.split("replies reached the SMTP server", 1)[1]
    assert "bart.aerts@zemst.be" not in replies and "conference-deals" not in replies
    # The organisation names must be right: "De Lijn", not "Lijn".
    rows = [line for line in out.splitlines() if "@delijn.be " in line]
    assert rows and all(line.rstrip().endswith("De Lijn") for line in rows), rows
