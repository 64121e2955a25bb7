"""Python values as SQLite stores them: lists as JSON, an erased mail's identity as a hash."""

from __future__ import annotations

import hashlib
import json


def json_list(value) -> str:
    return json.dumps(list(value))


def forgotten_identity(identity: str) -> str:
    """What stays of a mail's identity after erasure: enough to recognise it, nothing to read."""
    return "forgotten:" + hashlib.sha256(identity.encode("utf-8", "replace")).hexdigest()
