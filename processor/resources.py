"""Where the templates and the default config are found, in a checkout or an editable install."""

from __future__ import annotations

from pathlib import Path

# The package lives in <project>/processor; templates/ and config/ sit beside it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = Path("config/leernetwerk.toml")


def templates_dir() -> Path:
    return PROJECT_ROOT / "templates"


def default_config() -> Path:
    # The design's default is relative to where the command runs; fall back to the project's own
    # copy so that `leernetwerk parse` works from any folder.
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else PROJECT_ROOT / DEFAULT_CONFIG
