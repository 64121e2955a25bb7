"""Whether the receiving server vouched for the sender: Authentication-Results (RFC 8601)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CLAUSE = re.compile(r"\s*(dmarc|spf|dkim|compauth)\s*=\s*([a-z]+)\b(.*)", re.IGNORECASE | re.DOTALL)
_PROPERTY = re.compile(r"\b((?:header|smtp)\.[a-z]+)\s*=\s*\"?([^\s;\"()]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    status: str      # "pass" | "fail" | "none"
    detail: str


def authserv_id(header: str) -> str:
    return header.split(";", 1)[0].strip().split()[0].lower() if header.strip() else ""


def _domain(value: str) -> str:
    return value.rsplit("@", 1)[-1].strip().strip(".").lower()


def _results(header: str) -> list[tuple[str, str, dict[str, str]]]:
    """(method, result, properties) per result clause; the part before the first ';' is the writer."""
    out = []
    for part in header.split(";")[1:]:
        m = _CLAUSE.match(part)
        if m:
            props = {k.lower(): v for k, v in _PROPERTY.findall(m.group(3))}
            out.append((m.group(1).lower(), m.group(2).lower(), props))
    return out


def verdict(headers: list[str], trusted: frozenset[str] = frozenset(),
            from_domain: str | None = None) -> Verdict:
    """Read only the header our own server added. Anyone can write an Authentication-Results
    header into a mail, so a pass counts only from a writer (authserv-id) named in `trusted`, and
    only for the From's own domain (header.from, smtp.mailfrom, header.d equal to it): a forger's
    "dmarc=pass", or a real pass for the forger's own domain, proves nothing about From.
    A fail only sends a mail to an organiser, so with no trusted writer configured the topmost
    header (the receiving server puts its own on top) is still read for a fail."""
    candidates = [h for h in headers if authserv_id(h) in trusted] if trusted else headers[:1]
    if not candidates:
        return Verdict("none", "geen Authentication-Results van de eigen mailserver")
    header = candidates[0]
    writer = authserv_id(header) or "de mailserver"
    results = _results(header)
    first: dict[str, str] = {}
    for method, result, _ in results:
        first.setdefault(method, result)
    if first.get("dmarc") == "fail" or first.get("compauth") == "fail":
        return Verdict("fail", f"DMARC faalt volgens {writer}")
    spf, dkim = first.get("spf"), first.get("dkim")
    if spf in ("fail", "softfail") and dkim != "pass":
        return Verdict("fail", f"SPF {spf} en DKIM {dkim or 'ontbreekt'}")
    if not trusted or writer not in trusted:
        return Verdict("none", f"Authentication-Results van {writer}, een server die niet als "
                               "vertrouwd is ingesteld (trusted_authserv_ids): telt niet als bevestiging")
    own = (from_domain or "").lower()
    aligned_key = {"dmarc": ("header.from",), "spf": ("smtp.mailfrom",), "dkim": ("header.d", "header.i")}
    for method, result, props in results:
        if result != "pass" or method not in aligned_key:
            continue
        domains = {_domain(props[key]) for key in aligned_key[method] if props.get(key)}
        if own and own in domains:
            return Verdict("pass", "DMARC in orde" if method == "dmarc" else "SPF of DKIM in orde")
    if any(result == "pass" for _, result, _ in results):
        return Verdict("none", f"bevestiging door {writer} geldt een ander domein dan dat van de afzender "
                               f"({own or 'onbekend'})")
    return Verdict("none", "geen uitsluitsel over de afzender")
