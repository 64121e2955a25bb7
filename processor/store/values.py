"""Python values as SQLite stores them: lists as JSON, an erased mail's identity as a hash."""

from __future__ import annotations

import hashlib
import json


def json_list(value) -> str:
    return json.dumps(list(value))


def forgotten_identity(identity: str) -> str:
    """What stays of a mail's identity after erasure: enough to recognise it, nothing to read."""
    return "forgotten:" + hashlib.sha256(identity.encode("utf-8", "replace")).hexdigest()


def identity(message_id: str | None, raw: bytes) -> str:
    """A fetched mail's identity: its Message-ID (if any) and the SHA-256 of its bytes."""
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    return f"{message_id} {digest}" if message_id else digest


def legacy_forgotten_identity(message_id: str | None, raw: bytes) -> str:
    """How migration 10 renamed a mail erased while identity was the Message-ID alone (or the
    hash, without one): such a mail, fetched again, stays gone."""
    old = message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
    return "forgotten:mid:" + hashlib.sha256(old.encode("utf-8", "replace")).hexdigest()


def sha256_hex(data: bytes | None) -> str | None:
    """For SQL (migration 10): SQLite has no hash function of its own."""
    return None if data is None else hashlib.sha256(data).hexdigest()
