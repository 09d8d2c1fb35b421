"""`event read` for people: the events a topic keeps."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def events_view(events: list[dict[str, Any]]) -> Table:
    table = Table("event id", "key", "payload", title=f"{len(events)} event(s)")
    for event in events:
        table.add_row(str(event.get("event_id")), str(event.get("key", "")), str(event.get("payload", {})))
    return table
