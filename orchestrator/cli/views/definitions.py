"""Task and workflow definitions for people: one definition, the lists, and what validation found."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from .format import seconds


def definition_view(found: dict[str, Any]) -> RenderableType:
    title = found.get("name", "") + (f" v{found['version']}" if found.get("version") else "")
    return Group(Text(title, style="bold"), JSON.from_data(found.get("definition") or {}))


def _table(*columns: str) -> Table:
    """A table of definitions, their name kept on one line."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column == "NAME")
    return table


def taskdefs_view(found: list[dict[str, Any]]) -> RenderableType:
    table = _table("NAME", "RETRIES", "LEASE", "TIMEOUT", "LIMITS", "DESCRIPTION")
    for item in found:
        d = item.get("definition") or {}
        retries = f"{d.get('retryCount', 0)} × {str(d.get('retryLogic', '')).lower().replace('_', ' ')} " \
                  f"{seconds(d.get('retryDelaySeconds'))}" if d.get("retryCount") else "none"
        limits = ", ".join(part for part in (
            f"{d['concurrentExecLimit']} at once" if d.get("concurrentExecLimit") else "",
            f"{d['rateLimitPerFrequency']} per {seconds(d.get('rateLimitFrequencyInSeconds'))}"
            if d.get("rateLimitPerFrequency") else "") if part)
        table.add_row(item.get("name", ""), retries, seconds(d.get("responseTimeoutSeconds")),
                      seconds(d.get("timeoutSeconds")), limits or "-", d.get("description") or "")
    return table


def workflowdefs_view(found: list[dict[str, Any]]) -> RenderableType:
    table = _table("NAME", "VERSION", "TASKS", "DESCRIPTION")
    for item in found:
        d = item.get("definition") or {}
        table.add_row(item.get("name", ""), str(item.get("version", "")), str(len(d.get("tasks") or [])),
                      d.get("description") or "")
    return table


def validation_view(report: dict[str, Any]) -> RenderableType:
    table = _table("DEFINITION", "RESULT")
    for where, result in report.items():
        if result == "valid":
            table.add_row(where, Text("✓ valid", style="green"))
        else:
            table.add_row(where, Text("\n".join(f"✗ {error}" for error in result), style="red"))
    return table
