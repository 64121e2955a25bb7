"""Fairness under the relay's limit: a burst of 300 signups against an aiosmtpd that answers 4xx past 30 a minute.

    .venv/bin/python benchmarks/relay.py                      # time-scale 10: about a minute
    .venv/bin/python benchmarks/relay.py --time-scale 1       # the real thing: about 10 minutes

A time scale of k shrinks the minute to 60/k seconds on both sides (the relay's window and the
outbox's pacer), so the same sequence of events happens k times faster. Before the burst a digest
and five reminders wait in the outbox. The poll cycle (fetch → apply → send) runs as the worker
runs it, every poll interval, with one pacer for the whole run. Goal (issue 8): all 300 answered
first-come-first-answered in about 10 (scaled) minutes with zero 4xx, replies before the
reminders and the digest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers as S  # noqa: E402

from processor.store import db
from processor.desk import outbox, pipeline
from processor.clock import Clock, iso  # noqa: E402


def queue_others(store) -> None:
    """Reminders and a digest queued before the burst, with earlier arrival keys than any reply."""
    early = iso(S.START - dt.timedelta(days=1))
    with store.transaction():
        for kind, priority, n in (("digest", 2, 1), ("reminder", 1, 5)):
            for i in range(n):
                raw = (f"From: desk@vlaanderen.be\r\nTo: org@vlaanderen.be\r\nSubject: {kind} {i}"
                       f"\r\nMessage-ID: <{kind}-{i}@bench>\r\n\r\n{kind}\r\n").encode()
                store.queue_mail(kind=kind, priority=priority, order_key=early,
                                 sender="desk@vlaanderen.be", recipients=["org@vlaanderen.be"],
                                 message_id=f"<{kind}-{i}@bench>", raw=raw, registration_id=None,
                                 source_message=None, now=S.NOW)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signups", type=int, default=300)
    parser.add_argument("--per-minute", type=int, default=30, help="the relay's limit and ours")
    parser.add_argument("--time-scale", type=float, default=10.0,
                        help="k: a minute lasts 60/k seconds (1 = real time, about 10 minutes)")
    parser.add_argument("--poll-interval", type=float, default=60.0,
                        help="the worker's poll interval in (scaled) seconds")
    args = parser.parse_args()
    minute = 60.0 / args.time_scale
    interval = args.poll_interval / args.time_scale

    with tempfile.TemporaryDirectory(prefix="relay-") as tmp, S.DovecotServer() as dovecot, \
            S.SmtpServer() as relay:
        relay.limit_rate(args.per_minute, minute, "451 4.7.0 Too many messages, slow down")
        S.append_signups(dovecot, 0, args.signups)
        settings = S.settings_from(S.settings_dict(dovecot, relay))
        store = db.Store(db.connect(Path(tmp) / "state.sqlite"))
        queue_others(store)
        pacer = outbox.Pacer(args.per_minute, window_seconds=minute)
        total = args.signups + 6
        start = time.monotonic()
        polls = 0
        while len(relay.messages) < total and time.monotonic() - start < 30 * minute:
            began = time.monotonic()
            pipeline.poll(store, settings, Clock(S.NOW), pacer=pacer,
                          send_budget_seconds=interval)
            polls += 1
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
        seconds = time.monotonic() - start
        accepted = relay.messages
        refused = [a for a in relay.attempts if not a.response.startswith("2")]

    subjects = [m.message["Subject"] or "" for m in accepted]
    replies = [m for m in accepted if m.message["Subject"] and
               not m.message["Subject"].startswith(("digest", "reminder"))]
    order = [int(m.rcpt_tos[0].split(".")[1].split("@")[0]) for m in replies]
    others_after = all(not s.startswith(("digest", "reminder")) for s in subjects[:len(replies)])
    print(f"{args.signups} signups, relay limit {args.per_minute} per {minute:g} s "
          f"(time scale {args.time_scale:g}), {polls} polls")
    print(f"answered: {len(replies)} replies + {len(accepted) - len(replies)} reminders/digest "
          f"in {seconds:.1f} s = {seconds / minute:.1f} (scaled) minutes")
    print(f"4xx answers from the relay: {len(refused)}")
    print(f"first come first answered: {order == sorted(order)}; "
          f"replies before reminders and digest: {others_after}; "
          f"last three sent: {subjects[-3:]}")
    ok = len(refused) == 0 and order == sorted(order) and others_after and \
        len(replies) == args.signups
    print("goal met" if ok else "GOAL NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
