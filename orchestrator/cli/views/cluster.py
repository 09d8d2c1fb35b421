"""`cluster status` for people: who leads, since when, and the members up and gone."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .format import clock_and_ago, current_ms, duration, status_text


def cluster_view(status: dict[str, Any]) -> RenderableType:
    return Group(_leadership(status), Text(""), _members(status))


def _leadership(status: dict[str, Any]) -> Table:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim", no_wrap=True)
    head.add_column()
    leader = status.get("leader_id")
    if leader:
        head.add_row("leader", Text.assemble((leader, "bold green"), f" at {status.get('leader_address', '')}"))
        head.add_row("epoch", str(status.get("epoch", 0)))
        elected = int(status.get("elected_at_ms") or 0)
        if elected:
            head.add_row("elected", f"{clock_and_ago(elected)}, leading for {duration(current_ms() - elected)}")
    else:
        head.add_row("leader", Text("none right now", style="bold red"))
    head.add_row("answered by", Text.assemble(status.get("node_id", ""), " (", status_text(status.get("role", "")),
                                              ")"))
    return head


def _members(status: dict[str, Any]) -> Table:
    """The members registered now, then the ones seen and gone."""
    leader = status.get("leader_id")
    members = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("NODE", "ADDRESS", "ROLE", "STATE", "SINCE"):
        members.add_column(column)
    for member in status.get("members") or []:
        since = int(member.get("since_ms") or 0)
        members.add_row(Text(member.get("node_id", ""), style="bold" if member.get("node_id") == leader else ""),
                        member.get("address", ""), status_text(member.get("role", "")), Text("UP", style="green"),
                        clock_and_ago(since) if since else "-")
    for member in status.get("gone") or []:
        since = int(member.get("since_ms") or 0)
        members.add_row(Text(member.get("node_id", ""), style="dim"), member.get("address", ""), "",
                        Text("DOWN", style="bold red"),
                        Text.assemble(clock_and_ago(since) if since else "not noted yet",
                                      (f": {member['detail']}" if member.get("detail") else "", "dim")))
    return members
