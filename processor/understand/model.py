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
    # The last words of every mail the desk sends (whitespace folded): a participant who answers
    # below an Outlook quote of our mail, which marks no line with '>', wrote what follows them.
    own_closing: str = ""
    # What names this event in a mail (lowercased phrases: its name, acronym, session themes) and its
    # session dates (ISO yyyy-mm-dd); from config, see evidence.event_terms. Empty: the event is not
    # known, and a reading does not need the event to be named to act.
    event_terms: tuple[str, ...] = ()
    session_dates: tuple[str, ...] = ()


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
    # The evidence behind the reading and the bar it had to clear to be acted on without a person.
    evidence: tuple = ()
    confidence: int = 0
    bar: int = 0

    @property
    def names_the_event(self) -> bool:
        """The writer named the event, answers in its thread, or answers one of the desk's mails."""
        return any(_signal(s)["signal"] in ("event_named", "event_in_thread", "reply_to_desk", "event_not_configured")
                   for s in self.evidence)

    def evidence_json(self) -> dict:
        acts = self.kind in ("registration", "cancellation") and self.replies_allowed
        return {"evidence": [_signal(s) for s in self.evidence], "confidence": self.confidence,
                "bar": self.bar, "acts_automatically": acts}

    def contract(self) -> dict:
        return {
            "kind": self.kind,
            "sender": self.sender,
            "participants": [p.as_dict() for p in self.participants],
            "bounced_recipients": list(self.bounced_recipients),
            "needs_review": self.needs_review,
            "reasons": list(self.reasons),
            # Added keys: what the reading rests on and whether the desk acts on it without a person.
            **self.evidence_json(),
        }


def _signal(s) -> dict:
    """A Signal, or the dict a stored reading (dataclasses.asdict, then JSON) brings back."""
    if isinstance(s, dict):
        return {"signal": s.get("signal", s.get("name")), "weight": s.get("weight"), "reason": s.get("reason")}
    return s.as_dict()
