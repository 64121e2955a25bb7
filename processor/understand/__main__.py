"""`python -m processor.understand FILE.eml...`: print the contract JSON of each mail (JSON Lines for several)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import Options, load_domain_organisations, understand

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "config" / "organisations.toml"


def default_options() -> Options:
    table = {}
    try:
        if DEFAULT_TABLE.exists():
            table = load_domain_organisations(DEFAULT_TABLE)
    except Exception:  # noqa: BLE001 - a broken table only costs organisations
        table = {}
    return Options(own_addresses=frozenset({"duurzameontwikkeling@vlaanderen.be"}), domain_organisations=table)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m processor.understand FILE.eml [FILE.eml ...]", file=sys.stderr)
        return 2
    options = default_options()
    status = 0
    for path in args:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            print(json.dumps({"file": path, "error": str(exc)}), flush=True)
            status = 1
            continue
        out = understand(raw, options).contract()
        if len(args) > 1:
            out["file"] = path
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
