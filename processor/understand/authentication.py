"""Whether the receiving server vouched for the sender: Authentication-Results (RFC 8601)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RESULT = re.compile(r"\b(dmarc|spf|dkim|compauth)\s*=\s*([a-z]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    status: str      # "pass" | "fail" | "none"
    detail: str


def authserv_id(header: str) -> str:
    return header.split(";", 1)[0].strip().split()[0].lower() if header.strip() else ""


def verdict(headers: list[str], trusted: frozenset[str] = frozenset()) -> Verdict:
    """Read only the header our own server added. A sender can write any Authentication-Results
    header into a mail; the receiving server puts its own on top (and Exchange Online removes
    forged ones with its id), so we take the topmost, or the topmost from a trusted authserv-id."""
    candidates = [h for h in headers if not trusted or authserv_id(h) in trusted]
    if not candidates:
        return Verdict("none", "geen Authentication-Results van de eigen mailserver")
    header = candidates[0]
    results: dict[str, str] = {}
    for method, result in _RESULT.findall(header):
        results.setdefault(method.lower(), result.lower())
    if results.get("dmarc") == "fail" or results.get("compauth") == "fail":
        return Verdict("fail", f"DMARC faalt volgens {authserv_id(header) or 'de mailserver'}")
    if results.get("dmarc") == "pass":
        return Verdict("pass", "DMARC in orde")
    spf, dkim = results.get("spf"), results.get("dkim")
    if spf in ("fail", "softfail") and dkim != "pass":
        return Verdict("fail", f"SPF {spf} en DKIM {dkim or 'ontbreekt'}")
    if spf == "pass" or dkim == "pass":
        return Verdict("pass", "SPF of DKIM in orde")
    return Verdict("none", "geen uitsluitsel over de afzender")
