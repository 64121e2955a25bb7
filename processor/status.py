"""The registry as data (for `status --json`) and as a table for people."""

from __future__ import annotations

import datetime as dt

from processor.config import Settings
from processor.db import Store


def registry_status(store: Store, settings: Settings) -> dict:
    rows = []
    position = 0
    for r in store.registry():
        if r["status"] == "waitlisted":
            position += 1
        arrived = dt.datetime.fromisoformat(r["arrived_at"]).astimezone(settings.event.timezone)
        rows.append({
            "email": r["email"],
            "name": r["name"],
            "organisation": r["organisation"],
            "status": r["status"],
            "position": position if r["status"] == "waitlisted" else None,
            "arrived_at": arrived.isoformat(),
        })
    return {"capacity": settings.event.capacity, "registrations": rows}


LABELS = {"confirmed": "bevestigd", "waitlisted": "wachtlijst", "cancelled": "geannuleerd"}


def as_table(data: dict) -> str:
    regs = data["registrations"]
    counts = {s: sum(1 for r in regs if r["status"] == s)
              for s in ("confirmed", "waitlisted", "cancelled")}
    lines = [f"Bevestigd {counts['confirmed']}/{data['capacity']} · wachtlijst "
             f"{counts['waitlisted']} · geannuleerd {counts['cancelled']}", ""]
    header = ("status", "#", "aangekomen", "naam", "e-mail", "organisatie")
    table = [header] + [
        (LABELS[r["status"]], str(r["position"] or ""), r["arrived_at"][:19].replace("T", " "),
         r["name"] or "", r["email"], r["organisation"] or "")
        for r in regs
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return "\n".join(lines)
