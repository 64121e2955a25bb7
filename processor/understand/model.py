"""The data the understanding stage hands to the rest of the program."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

KINDS = ("registration", "cancellation", "auto_reply", "bounce", "other")


@dataclass(frozen=True)
class Participant:
    name: str | None
    email: str | None  # lowercased
    organisation: str | None

    def as_dict(self) -> dict:
        return {"name": self.name, "email": self.email, "organisation": self.organisation}


@dataclass(frozen=True)
class Options:
    # Mail from these addresses is never a signup.
    own_addresses: frozenset[str] = frozenset()
    # Our outgoing Message-IDs end with "@<this>>"; a reply to one is read in that light.
    own_message_id_domain: str | None = None
    domain_organisations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    max_participants: int = 10
    # authserv-ids of our own receiving servers. Only their Authentication-Results can vouch for a
    # sender (a pass, for the From's own domain); empty: nothing vouches, and the topmost header
    # is read for a fail only (which sends the mail to an organiser).
    trusted_authserv_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Reading:
    kind: str  # one of KINDS
    sender: str | None
    sender_name: str | None
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    participants: tuple[Participant, ...]
    bounced_recipients: tuple[str, ...]
    needs_review: bool
    reasons: tuple[str, ...]
    excerpt: str
    replies_allowed: bool
    # Extra fields for organisers and the integrator; not part of the JSON contract.
    is_reply_to_us: bool = False
    language: str | None = None
    # In a cancellation: the colleagues named to take the withdrawn people's places.
    substitutes: tuple[Participant, ...] = ()
    # What the receiving server said of the sender (Authentication-Results): pass, fail or none.
    authentication: str = "none"

    def contract(self) -> dict:
        return {
            "kind": self.kind,
            "sender": self.sender,
            "participants": [p.as_dict() for p in self.participants],
            "bounced_recipients": list(self.bounced_recipients),
            "needs_review": self.needs_review,
            "reasons": list(self.reasons),
        }
