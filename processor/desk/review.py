"""The mails set aside for a person: who, why, an excerpt and the command that settles each."""

from __future__ import annotations

import json

from processor.store.db import Store
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


def review_items(store: Store) -> list[dict]:
    """The mails that need a person: who, why, a short excerpt, and the command that settles it."""
    items = []
    for row in store.messages_needing_a_person():
        reading = stored_reading(row["reading"])
        why = list(reading.reasons) if row["reading"] else []
        if row["error"]:
            why.append(f"fout bij verwerken: {row['error']}")
        for request in store.open_requests_for(row["id"]):
            # Issue 16: a withdrawal nobody vouched for waits for its participant, or for you.
            why.append(f"wacht op bevestiging door {request['email']} (die kreeg een link); "
                       "of beslis hier")
        if row["state"] == "quarantined":
            command = f"leernetwerk retry {row['id']}"
        elif store.message_was_answered(row["id"]):
            # Applied already and flagged for a look: settling it must not answer twice.
            command = f"leernetwerk resolve {row['id']} --as nothing"
        elif reading.kind == "cancellation":
            command = f"leernetwerk resolve {row['id']} --as cancellation"
        elif reading.kind == "registration":
            command = f"leernetwerk resolve {row['id']} --as registration"
        else:
            command = f"leernetwerk resolve {row['id']} --as nothing"
        items.append({
            "id": row["id"], "state": row["state"], "kind": reading.kind if row["reading"] else None,
            "arrived_at": row["arrived_at"], "sender": reading.sender, "subject": reading.subject,
            "reasons": why, "excerpt": reading.excerpt[:200], "command": command,
        })
    return items
