"""Latency with IMAP IDLE: p50/p95 from APPEND to the reply arriving at the SMTP server, at a steady rate.

    .venv/bin/python benchmarks/latency.py                       # 200 mails, 2 a second, IDLE on
    .venv/bin/python benchmarks/latency.py --no-idle             # the same with 60 s polling
    .venv/bin/python benchmarks/latency.py --rate 0.4 --max-per-minute 30   # under Exchange's limit

The worker (`leernetwerk run`) runs as a child process against a real Dovecot and aiosmtpd;
this process appends the signups over one IMAP connection on a fixed schedule and matches each
reply to its signup by recipient. Goal (issue 8): p95 ≤ 2 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers as S  # noqa: E402

from tests.desk import WorkerProcess  # noqa: E402
from tests.test_desk import write_config  # noqa: E402


def config_file(tmp: Path, dovecot, smtp, idle: bool, per_minute: int) -> Path:
    cfg = write_config(tmp, dovecot, smtp)
    text = cfg.read_text(encoding="utf-8")
    text = text.replace("idle = false", f"idle = {'true' if idle else 'false'}")
    text = text.replace("max_per_minute = 30", f"max_per_minute = {per_minute}")
    # The worker runs on today's clock: keep registration open so every reply is a real signup's.
    text = re.sub(r'(?m)^closes = ""', 'closes = "2100-01-01T00:00:00"', text)
    cfg.write_text(text, encoding="utf-8")
    return cfg


def _answered(smtp, appended: dict) -> set[str]:
    return {r for m in smtp.messages for r in m.rcpt_tos if r in appended}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2.0, help="signups per second")
    parser.add_argument("--max-per-minute", type=int, default=0,
                        help="[smtp] max_per_minute of the worker (0: no pacing, a local relay)")
    parser.add_argument("--no-idle", action="store_true", help="poll every 60 s instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="latency-") as tmp, S.DovecotServer() as dovecot, \
            S.SmtpServer() as smtp:
        cfg = config_file(Path(tmp), dovecot, smtp, not args.no_idle, args.max_per_minute)
        env = dict(os.environ, LEERNETWERK_IMAP_PASSWORD=dovecot.password)
        # Its log goes to a file (WorkerProcess): a pipe read only at the end fills up and
        # then blocks the worker mid-poll.
        worker = WorkerProcess(["--config", str(cfg), "--db", str(Path(tmp) / "state.sqlite")],
                               env=env, log=Path(tmp) / "worker.log")
        try:
            time.sleep(3)  # the worker's first poll and its IDLE session
            client = dovecot.client(timeout=60)
            appended: dict[str, dt.datetime] = {}
            start = time.monotonic()
            for i in range(args.count):
                time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
                raw = S.signup_mail(i)
                appended[S.person(i)[1]] = dt.datetime.now(dt.timezone.utc)
                client.append("INBOX", raw, msg_time=S.START + dt.timedelta(seconds=i))
            client.logout()
            deadline = time.monotonic() + (120 if args.no_idle else 60)
            # Replies to these signups, not any mail: the worker also sends the day's digest
            # when it starts after its send time, which counted as a reply once.
            while (len(_answered(smtp, appended)) < args.count
                   and time.monotonic() < deadline):
                time.sleep(0.1)
        finally:
            err = worker.stop(timeout=60)
        latencies = []
        for m in smtp.messages:
            for rcpt in m.rcpt_tos:
                if rcpt in appended:
                    latencies.append((m.received_at - appended.pop(rcpt)).total_seconds())
    if len(latencies) < 2:
        print(f"only {len(latencies)} replies arrived; worker log:\n{err[-3000:]}")
        return 1
    q = statistics.quantiles(latencies, n=100)
    print(f"{args.count} signups at {args.rate:g}/s, IDLE {'off' if args.no_idle else 'on'}, "
          f"max_per_minute {args.max_per_minute}: {len(latencies)} answered")
    print(f"APPEND → reply at the SMTP server: p50 {q[49]:.2f} s, p95 {q[94]:.2f} s, "
          f"max {max(latencies):.2f} s (goal p95 ≤ 2 s)")
    if len(latencies) < args.count:
        print(f"{args.count - len(latencies)} signups got no reply in time; the worker's log ends:"
              f"\n{err[-3000:]}")
    return 0 if q[94] <= 2.0 and len(latencies) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
