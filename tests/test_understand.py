"""Table-driven test of the understanding stage over tests/data/*.eml and their expected .json."""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from processor.understand import KINDS, Options, load_domain_organisations, understand

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FIXTURES = sorted(DATA.glob("*.eml"))
OPTIONS = Options(
    own_addresses=frozenset({"duurzameontwikkeling@vlaanderen.be"}),
    own_message_id_domain="leernetwerk.duurzameontwikkeling.vlaanderen.be",
    domain_organisations=load_domain_organisations(ROOT / "config" / "organisations.toml"),
)


def fold(text: str | None) -> str:
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(sorted(re.findall(r"[a-z0-9]+", text)))


CONNECTORS = set("en van de der den het voor ter ten of and the for et la le les du des d l bv nv vzw asbl".split())
GENERIC = set("stad gemeente provincie departement agentschap ocmw cpas fod spf vlaamse vlaams vlaanderen federale "
              "overheidsdienst overheid service public publique dienst afdeling team city ville commune province "
              "department agency".split())
LEVELS = {"stad": "local", "gemeente": "local", "city": "local", "ville": "local", "commune": "local",
          "ocmw": "ocmw", "cpas": "ocmw", "provincie": "province", "province": "province"}


def same_organisation(got: str | None, want: str | None) -> bool:
    """Organisation names are fuzzy: enough shared words, one of them telling, and the same level of government."""
    if not got or not want:
        return not got and not want
    a = set(fold(got).split()) - CONNECTORS
    b = set(fold(want).split()) - CONNECTORS
    if a == b:
        return True
    levels_a = {LEVELS[t] for t in a if t in LEVELS}
    levels_b = {LEVELS[t] for t in b if t in LEVELS}
    if levels_a and levels_b and levels_a != levels_b:
        return False
    shared = a & b
    return bool(shared - GENERIC) and 2 * len(shared) / (len(a) + len(b)) >= 0.5


def test_there_are_enough_fixtures():
    assert len(FIXTURES) >= 60


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(path: Path):
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    reading = understand(path.read_bytes(), OPTIONS)
    got = reading.contract()
    context = f"{path.name}: reasons={got['reasons']}"
    assert got["kind"] == expected["kind"], context
    assert got["sender"] == expected["sender"], context
    assert sorted(got["bounced_recipients"]) == sorted(expected["bounced_recipients"]), context
    want = expected["participants"]
    assert len(got["participants"]) == len(want), f"{context} got={got['participants']}"
    # Match participants by address, or by name for those without one.
    remaining = list(got["participants"])
    for person in want:
        if person["email"]:
            match = [p for p in remaining if p["email"] == person["email"]]
        else:
            match = [p for p in remaining if p["email"] is None and fold(p["name"]) == fold(person["name"])]
        assert match, f"{context}: missing {person} in {got['participants']}"
        found = match[0]
        remaining.remove(found)
        assert fold(found["name"]) == fold(person["name"]), f"{context}: name {found} vs {person}"
        assert same_organisation(found["organisation"], person["organisation"]), f"{context}: org {found} vs {person}"
    if expected["needs_review"] is not None:
        assert got["needs_review"] == expected["needs_review"], context


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_machine_mail_is_never_answered(path: Path):
    reading = understand(path.read_bytes(), OPTIONS)
    assert reading.kind in KINDS
    if reading.kind in ("bounce", "auto_reply"):
        assert not reading.replies_allowed
        assert reading.participants == ()
    assert "\x00" not in reading.excerpt and len(reading.excerpt) <= 300
    json.dumps(reading.contract())


def test_interface_fields():
    raw = (DATA / FIXTURES[0].name).read_bytes()
    r = understand(raw)
    assert r.message_id and r.message_id.startswith("<")
    assert isinstance(r.references, tuple) and isinstance(r.reasons, tuple)
    assert set(r.contract()) >= {"kind", "sender", "participants", "bounced_recipients", "needs_review", "reasons"}


@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02", b"not a mail at all", b"From: \r\n\r\n", "Subject: é\n\nx".encode("latin-1"),
                                 b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" * 50])
def test_garbage_never_raises(raw: bytes):
    r = understand(raw)
    assert r.kind in KINDS
