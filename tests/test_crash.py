"""Crash anywhere: the worker SIGKILLed at random moments over a backlog, restarted each time."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.desk import PROJECT, signup
from tests.test_desk import write_config

START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone.utc)
BACKLOG = 400
KILLS = 30


@pytest.mark.slow
def test_killing_the_worker_anywhere_loses_nothing_and_sends_nothing_twice(
        dovecot, smtp_server, tmp_path):
    rnd = random.Random(int(os.environ.get("CRASH_SEED", "2018")))
    cfg = write_config(tmp_path, dovecot, smtp_server)
    cfg.write_text(cfg.read_text().replace("poll_interval_seconds = 60", "poll_interval_seconds = 1")
                   .replace("batch_size = 50", "batch_size = 16")
                   .replace("max_per_minute = 30", "max_per_minute = 0"))
    arrivals = {}
    order = list(range(BACKLOG))
    rnd.shuffle(order)
    for i in order:
        email = f"deelnemer.{i:03d}@gemeente{i % 7}.be"
        arrived = START + dt.timedelta(minutes=i)
        # Date headers run backwards: only the server's arrival time may decide.
        dovecot.append(signup(f"Deelnemer Nummer{i:03d}", email, f"Gemeente {i % 7}",
                              date=START - dt.timedelta(minutes=i)), arrived)
        arrivals[email] = arrived

    env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
    args = ["--config", str(cfg), "--db", str(tmp_path / "state.sqlite"),
            "--now", "2018-05-20T12:00:00+02:00"]
    kills = 0
    for _ in range(KILLS):
        worker = subprocess.Popen([sys.executable, "-m", "processor", "run", "-q", *args],
                                  cwd=PROJECT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.5, 1.4))
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            kills += 1
        worker.wait(timeout=30)
        if len(smtp_server.messages) >= BACKLOG:   # the organisers' digest may come on top
            break
    # Then it runs to the end, undisturbed.
    for _ in range(5):
        done = subprocess.run([sys.executable, "-m", "processor", "poll", "--json", *args],
                              cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        if report["fetched"] == 0 and report["applied"] == 0 and report["flush"]["sent"] == 0:
            break

    status = json.loads(subprocess.run(
        [sys.executable, "-m", "processor", "status", "--json", *args], cwd=PROJECT, env=env,
        check=True, capture_output=True, text=True, timeout=60).stdout)
    rows = status["registrations"]
    # Every signup is in the registry exactly once, with the seat its arrival gave it.
    assert sorted(r["email"] for r in rows) == sorted(arrivals)
    by_arrival = sorted(arrivals, key=arrivals.get)
    confirmed = [r["email"] for r in rows if r["status"] == "confirmed"]
    waiting = [r["email"] for r in rows if r["status"] == "waitlisted"]
    assert confirmed == by_arrival[:20]
    assert waiting == by_arrival[20:]
    assert [r["position"] for r in rows if r["status"] == "waitlisted"] == list(range(1, BACKLOG - 19))

    # Every reply due was sent; a duplicate is the same mail (same Message-ID) twice, which only
    # the window between the server's 250 and our commit can cause.
    per_recipient = collections.defaultdict(set)
    copies = collections.Counter()
    participant_mail = [m for m in smtp_server.messages
                        if not set(m.rcpt_tos) & {"duurzameontwikkeling@vlaanderen.be"}]
    for m in participant_mail:
        per_recipient[m.rcpt_tos[0]].add(m.message["Message-ID"])
        copies[m.message["Message-ID"]] += 1
    assert set(per_recipient) == set(arrivals)
    assert all(len(ids) == 1 for ids in per_recipient.values()), "two different replies to one person"
    duplicates = sum(n - 1 for n in copies.values())
    figure = (f"crash test: {BACKLOG} signups, {kills} SIGKILLs, {len(smtp_server.messages)} "
              f"mails received, {duplicates} duplicate(s) from the 250-before-commit window")
    print(figure)
    artifacts = Path(PROJECT, "artifacts")
    artifacts.mkdir(exist_ok=True)
    (artifacts / "crash-test.txt").write_text(figure + "\n")
    assert duplicates <= kills
