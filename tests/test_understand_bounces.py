"""Real bounce reports from flufl.bounce's source distribution, downloaded at run time, read as bounces."""
from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from processor.understand import understand

SDIST = "flufl.bounce==6.0.0"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("flufl")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        SDIST, "-d", str(where)], check=True, capture_output=True, timeout=180)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"could not download the {SDIST} sdist from the package registry (unreachable?): {exc}")
    archive = next(where.glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return next(p for p in where.iterdir() if p.is_dir())


def _cases(root: Path):
    tree = ast.parse((root / "tests" / "test_detectors.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DETECTORS":
            return ast.literal_eval(node.value)
    raise AssertionError("DETECTORS table not found in flufl.bounce's tests")


def test_flufl_bounce_corpus(corpus: Path):
    cases = _cases(corpus)
    ours = flufl_alone = 0
    ours_addressed = addressed = 0
    misses = []
    from email import message_from_bytes
    from flufl.bounce import scan_message
    for _module, filename, expected, temporary in cases:
        raw = (corpus / "tests" / "data" / filename).read_bytes()
        want = {e.decode().lower() for e in expected}
        reading = understand(raw)
        assert reading.kind in ("bounce", "auto_reply", "other", "registration", "cancellation")
        if temporary:
            good = not (reading.kind == "bounce" and set(reading.bounced_recipients) & want)
        elif not want:
            # flufl's negative cases (an auto reply, a human reply, an undecipherable report): no address.
            good = not reading.bounced_recipients
        else:
            good = reading.kind == "bounce" and set(reading.bounced_recipients) == want
        assert not (reading.kind in ("registration", "cancellation")), f"{filename} taken as a {reading.kind}"
        ours += good
        if want and not temporary:
            addressed += 1
            ours_addressed += good
        if not good:
            misses.append((filename, sorted(want), reading.kind, reading.bounced_recipients))
        try:
            found = {a.decode().lower() for a in scan_message(message_from_bytes(raw))}
        except Exception:  # noqa: BLE001 - flufl.bounce raising is part of what we measure
            found = set()
        if want and not temporary:
            flufl_alone += found == want
    rate = ours / len(cases)
    print(f"\nflufl.bounce corpus: understand() {ours}/{len(cases)} = {rate:.1%}; "
          f"on the {addressed} reports with known addresses: understand() {ours_addressed}, "
          f"flufl.bounce scan_message alone {flufl_alone}")
    for miss in misses:
        print("  miss:", miss)
    assert rate >= 0.95, misses
    assert ours_addressed >= flufl_alone
