"""The registry as data (for `status --json`) and as a table for people."""

from __future__ import annotations

import csv
import datetime as dt
import io

from processor.config import Settings
from processor.display import csv_cell, printable
from processor.store.db import Store


def registry_status(store: Store, settings: Settings) -> dict:
    rows = []
    position = 0
    for r in store.registry():
        if r["status"] == "waitlisted":
            position += 1
        arrived = dt.datetime.fromisoformat(r["arrived_at"]).astimezone(settings.event.timezone)
        rows.append({
            "email": r["email"],
            # Written by a sender: shown without control or bidi characters (issue 16).
            "name": printable(r["name"]) or None,
            "organisation": printable(r["organisation"]) or None,
            "status": r["status"],
            "position": position if r["status"] == "waitlisted" else None,
            "arrived_at": arrived.isoformat(),
            "charter": bool(r["charter"]),
            "source": r["source"],
            "wait_reason": printable(r["wait_reason"]) or None,
        })
    return {"capacity": settings.event.capacity, "registrations": rows}


LABELS = {"confirmed": "bevestigd", "waitlisted": "wachtlijst", "cancelled": "geannuleerd"}


def _remarks(row: dict) -> str:
    remarks = []
    if row.get("charter"):
        remarks.append("SDG-charter")
    if row.get("source") == "organiser":
        remarks.append("door organisator")
    if row.get("wait_reason"):
        remarks.append(row["wait_reason"])
    return "; ".join(remarks)


def as_table(data: dict) -> str:
    regs = data["registrations"]
    counts = {s: sum(1 for r in regs if r["status"] == s)
              for s in ("confirmed", "waitlisted", "cancelled")}
    lines = [f"Bevestigd {counts['confirmed']}/{data['capacity']} · wachtlijst "
             f"{counts['waitlisted']} · geannuleerd {counts['cancelled']}", ""]
    header = ("status", "#", "aangekomen", "naam", "e-mail", "organisatie", "opmerking")
    table = [header] + [
        (LABELS[r["status"]], str(r["position"] or ""), r["arrived_at"][:19].replace("T", " "),
         r["name"] or "", printable(r["email"]), r["organisation"] or "", _remarks(r))
        for r in regs
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


CSV_FIELDS = ("status", "position", "arrived_at", "name", "email", "organisation", "charter",
              "source", "wait_reason")


def export_csv(store: Store, settings: Settings) -> str:
    """The registry for a spreadsheet: the same rows, in the same order, as `status --json`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in registry_status(store, settings)["registrations"]:
        cells = {k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS}
        cells |= {"email": printable(row["email"]), "charter": "ja" if row.get("charter") else "nee"}
        # A cell that starts like a formula is shown as text, never evaluated (issue 16).
        writer.writerow({k: csv_cell(v) for k, v in cells.items()})
    return buffer.getvalue()
