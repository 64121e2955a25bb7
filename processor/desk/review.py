"""The mails set aside for a person: who, why, an excerpt and the command that settles each."""

from __future__ import annotations

import json

from processor.store.db import Store
from processor.display import printable, shell_command
from processor.understand.model import Participant, Reading


def stored_reading(text: str | None) -> Reading:
    if not text:
        return Reading("other", None, None, "", None, None, (), (), (), True, (), "", True)
    data = json.loads(text)
    data["participants"] = tuple(Participant(**p) for p in data.get("participants", ()))
    data["substitutes"] = tuple(Participant(**p) for p in data.get("substitutes", ()))
    for key in ("references", "bounced_recipients", "reasons"):
        data[key] = tuple(data.get(key, ()))
    known = Reading.__dataclass_fields__
    return Reading(**{k: v for k, v in data.items() if k in known})


# Set-aside steps whose reason is the desk's own finding, not in the reading: shown with it.
DESK_FINDINGS = ("bounce_unrelated", "address_check")


def review_items(store: Store) -> list[dict]:
    """The mails that need a person: who, why, a short excerpt, and the command that settles it."""
    items = []
    for row in store.messages_needing_a_person():
        reading = stored_reading(row["reading"])
        why = list(reading.reasons) if row["reading"] else []
        why += store.desk_reasons(row["id"], DESK_FINDINGS)
        if row["error"]:
            why.append(f"fout bij verwerken: {row['error']}")
        for request in store.open_requests_for(row["id"]):
            # Issue 16: a withdrawal nobody vouched for waits for its participant, or for you.
            why.append(f"wacht op bevestiging door {request['email']} (die kreeg een link); "
                       "of beslis hier")
        if row["state"] == "quarantined":
            command = shell_command("retry", row["id"])
        elif store.message_was_answered(row["id"]):
            # Applied already and flagged for a look: settling it must not answer twice.
            command = shell_command("resolve", row["id"], "--as", "nothing")
        elif reading.kind == "cancellation":
            command = shell_command("resolve", row["id"], "--as", "cancellation")
        elif reading.kind == "registration":
            command = shell_command("resolve", row["id"], "--as", "registration")
        else:
            command = shell_command("resolve", row["id"], "--as", "nothing")
        items.append({
            "id": row["id"], "state": row["state"], "kind": reading.kind if row["reading"] else None,
            # Shown on a terminal and in the digest: no control or bidi characters from the mail.
            "arrived_at": row["arrived_at"], "sender": printable(reading.sender) or None,
            "subject": printable(reading.subject) or None,
            "reasons": [printable(r) for r in why], "excerpt": printable(reading.excerpt[:200]),
            "command": command,
        })
    return items
