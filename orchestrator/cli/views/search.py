"""Workflows as a table that fits the terminal (`workflow search`, the matches of --all), and
what an operation on every match did."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ...core.statuses import ACTIVE_WORKFLOW
from .format import ago, current_ms, duration, status_text
from .workflow import workflow_view


def search_view(view: dict[str, Any]) -> RenderableType:
    workflows = view.get("workflows") or []
    if not workflows:
        return Text("no workflow matches", style="dim")
    return WorkflowTable(workflows, view.get("next_page_token") or "", bool(view.get("wide")))


class WorkflowTable:
    """Workflows as a table that fits the terminal: every column but the id keeps what it needs
    (the name, the whole status, when, how long), and the id gets what is left, cut with "…"
    when that is less than all of it (--wide shows ids in full; --json always does). When even
    the shortest id leaves too little, the correlation id and then the name wrap, and then the
    correlation column goes."""

    COLUMNS = ("WORKFLOW ID", "NAME", "STATUS", "CORRELATION", "CREATED", "DURATION")
    ID, NAME, CORRELATION = 0, 1, 3
    SHORTEST_ID = 9        # 8 characters and "…": as many as it takes to tell a page of ids apart
    NARROWEST: ClassVar[dict[int, int]] = {NAME: 10, CORRELATION: len("CORRELATION")}   # they wrap down to this
    GAP = 2                # spaces between columns

    def __init__(self, workflows: list[dict[str, Any]], next_page_token: str, wide: bool) -> None:
        now = current_ms()
        self.rows = [self._row(workflow, now) for workflow in workflows]
        self.next_page_token = next_page_token
        self.wide = wide
        self.widths = [max([len(column) if i else 0, *(len(row[i]) for row in self.rows)])
                       for i, column in enumerate(self.COLUMNS)]   # a cut id is headed "ID"
        self.shown = [i for i in range(len(self.COLUMNS))
                      if i != self.CORRELATION or any(row[self.CORRELATION] for row in self.rows)]

    @staticmethod
    def _row(workflow: dict[str, Any], now: int) -> tuple[str, str, str, str, str, str]:
        created, ended = int(workflow.get("created_at_ms") or 0), int(workflow.get("ended_at_ms") or 0)
        status = workflow.get("status", "")
        took = duration(ended - created) if ended and created else (
            f"running {duration(now - created)}" if created and status in ACTIVE_WORKFLOW else "-")
        name = workflow.get("name", "") + (f" v{workflow['version']}" if workflow.get("version") else "")
        return (workflow.get("workflow_id", ""), name, status, workflow.get("correlation_id") or "",
                ago(created, now), took)

    @property
    def wanted_width(self) -> int:
        """With --wide, the width the table takes with everything in full (0: it fits what it gets)."""
        return sum(self.widths[i] for i in self.shown) + self.GAP * (len(self.shown) - 1) if self.wide else 0

    def _fit(self, max_width: int) -> tuple[list[int], dict[int, int]]:
        """The columns shown and their widths within `max_width`."""
        shown, widths = list(self.shown), dict(enumerate(self.widths))

        def over() -> int:
            return sum(widths[i] for i in shown) + self.GAP * (len(shown) - 1) - max_width

        if not self.wide:
            widths[self.ID] = max(min(self.SHORTEST_ID, widths[self.ID]), widths[self.ID] - max(0, over()))
        for column in (self.CORRELATION, self.NAME):
            if column in shown and over() > 0:
                widths[column] -= min(over(), max(0, widths[column] - self.NARROWEST[column]))
        if self.CORRELATION in shown and over() > 0:
            shown.remove(self.CORRELATION)
        return shown, widths

    def __rich_console__(self, console: Console, options: Any) -> Iterable[RenderableType]:
        shown, widths = self._fit(options.max_width)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 0, 0, self.GAP - 1))
        for i in shown:
            header = "ID" if i == self.ID and widths[i] < len(self.COLUMNS[i]) else self.COLUMNS[i]
            table.add_column(header, width=widths[i], no_wrap=i not in (self.NAME, self.CORRELATION),
                             overflow="fold")
        cut = False
        for row in self.rows:
            workflow_id = row[self.ID]
            if len(workflow_id) > widths[self.ID]:
                workflow_id, cut = workflow_id[:widths[self.ID] - 1] + "…", True
            cells: list[RenderableType] = [workflow_id, row[1], status_text(row[2]), row[3], row[4], row[5]]
            table.add_row(*(cells[i] for i in shown))
        captions = ["ids cut to fit: --wide shows them in full"] if cut else []
        if self.CORRELATION in self.shown and self.CORRELATION not in shown:
            captions.append("no room for correlation ids")
        if self.next_page_token:
            captions.append(f"more: --page-token {self.next_page_token}")
        table.caption = "; ".join(captions) or None
        yield table


def bulk_view(view: dict[str, Any]) -> RenderableType:
    """An operation with --all: the matches (--dry-run), or how many it changed and what failed."""
    if "done" not in view:
        return search_view(view)
    done, failed = view["done"], view["failed"]
    summary = Text(f"{view['verb']} {len(done)} of {view['matched']} workflows", style="bold" if not failed else "")
    if not failed:
        return summary
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("WORKFLOW ID", no_wrap=True)
    table.add_column("ERROR", style="red")
    for workflow_id, error in failed.items():
        table.add_row(workflow_id, error)
    return Group(summary, table)


def operation_view(data: dict[str, Any]) -> RenderableType:
    """Pause, resume, terminate...: the workflow, or with --all what was done on every match."""
    return bulk_view(data) if "matched" in data else workflow_view(data)
