"""Issue 16: understanding is linear in the input. Generated pathological text (runs of blanks,
brackets, @-less addresses, thousands of names or Cc addresses, long display names) is placed
where a sender controls it; doubling it at most ~2.5x the time, and 100 KB under 1 s.

Timing on a shared machine is noisy: each size is timed three times and the fastest counts
(CPU time of this process, not wall time), and sizes are large enough to measure."""
from __future__ import annotations

import gc
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.understand import Options, understand

OPTIONS = Options(own_addresses=frozenset({"desk@example.net"}))
SIZE = 50_000  # characters of hostile text; doubled to 100 KB


def made_up(i: int) -> str:
    letters = ""
    for _ in range(4):
        letters += chr(97 + i % 26)
        i //= 26
    return letters


UNITS = {
    "blanks": lambda i: " " * 50,
    "blank_letters": lambda i: "a" + " " * 40 + "a",
    "brackets": lambda i: "( ",
    "square": lambda i: "[ (",
    "no_at": lambda i: "aaaa.bbbb",
    "at_run": lambda i: "a@",
    "dots": lambda i: "a.",
    "name": lambda i: f"Jo{made_up(i)} Mo{made_up(i * 7 + 3)}, ",
    "label": lambda i: f"Naam: Jo{made_up(i)} Mo{made_up(i * 3)}\n",
    "address": lambda i: f"p{made_up(i)}@example.org, ",
    "cc": lambda i: f"Jo{made_up(i)} <p{made_up(i)}@example.org>, ",
    "quote": lambda i: "> ",
    "tabs": lambda i: "\t \t",
}
PLACES = ["body", "from_name", "to", "cc", "subject", "attachment"]


def mail(place: str, hostile: str) -> bytes:
    head = {"from": "Ann Test <ann.test@example.org>", "to": "desk@example.net", "cc": "",
            "subject": "inschrijving"}
    body = "Ik schrijf me in, en mijn collega's in cc.\n"
    attachment = ""
    if place == "body":
        body += hostile
    elif place == "from_name":
        head["from"] = '"' + hostile.replace('"', "").replace("\n", " ") + '" <ann.test@example.org>'
    elif place in ("to", "cc", "subject"):
        head[place] = (head[place] + " " if head[place] else "") + hostile.replace("\n", " ")
    else:
        attachment = hostile
    lines = [f"From: {head['from']}", f"To: {head['to']}", f"Subject: {head['subject']}",
             "Message-ID: <linear@example.org>", "MIME-Version: 1.0"]
    if head["cc"]:
        lines.append(f"Cc: {head['cc']}")
    if attachment:
        lines.append("Content-Type: multipart/mixed; boundary=B")
        text = (f"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n--B\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment; filename=f.txt\r\n\r\n"
                f"{attachment}\r\n--B--\r\n")
    else:
        lines.append("Content-Type: text/plain; charset=utf-8")
        text = body
    return ("\r\n".join(lines) + "\r\n\r\n" + text).encode("utf-8")


def hostile_text(units: list[str], size: int) -> str:
    parts, length, i = [], 0, 0
    while length < size:
        piece = UNITS[units[i % len(units)]](i)
        parts.append(piece)
        length += len(piece)
        i += 1
    return "".join(parts)[:size]


def cpu_seconds(raw: bytes) -> float:
    # As timeit does: the collector off while timing, so that a heap left large by earlier
    # examples does not bill its collections to this mail's reading.
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            start = time.process_time()
            understand(raw, OPTIONS)
            best = min(best, time.process_time() - start)
    finally:
        gc.enable()
    return best


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(PLACES), st.lists(st.sampled_from(sorted(UNITS)), min_size=1, max_size=3))
def test_understanding_is_linear_in_hostile_text(place, units):
    small = cpu_seconds(mail(place, hostile_text(units, SIZE)))
    large = cpu_seconds(mail(place, hostile_text(units, 2 * SIZE)))
    assert large < 1.0, (place, units, small, large)
    # Below some 50 ms the ratio is noise on a loaded 2-core machine (32 ms against 89 ms was
    # seen once, 36 ms against 63 ms when measured again); the bound on 100 KB then says enough.
    if small > 0.05:
        assert large / small <= 2.5, (place, units, small, large)
