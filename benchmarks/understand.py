"""Throughput of understand() over tests/data/*.eml, next to mail-parser's bare parse rate (one core)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mailparser  # noqa: E402 - the baseline we compare against

from processor.understand import Options, load_domain_organisations, understand  # noqa: E402

GOAL = 200.0


def rate(func, mails: list[bytes], seconds: float = 3.0) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for raw in mails:
            func(raw)
        done += len(mails)
    return done / (time.perf_counter() - start)


def main() -> int:
    mails = [p.read_bytes() for p in sorted((ROOT / "tests" / "data").glob("*.eml"))]
    if not mails:
        print("no fixtures in tests/data")
        return 1
    options = Options(own_addresses=frozenset({"duurzameontwikkeling@vlaanderen.be"}),
                      domain_organisations=load_domain_organisations(ROOT / "config" / "organisations.toml"))
    for raw in mails:  # warm up imports and regex caches
        understand(raw, options)
    bare = rate(mailparser.parse_from_bytes, mails)
    ours = rate(lambda raw: understand(raw, options), mails)
    print(f"{len(mails)} fixtures, {sum(map(len, mails)) / len(mails) / 1024:.1f} KiB on average")
    print(f"mail-parser parse_from_bytes: {bare:8.1f} mails/s")
    print(f"understand():                 {ours:8.1f} mails/s  ({ours / bare:.0%} of the bare parse rate)")
    print(f"goal >= {GOAL:.0f} mails/s: {'met' if ours >= GOAL else 'NOT met'}")
    return 0 if ours >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
