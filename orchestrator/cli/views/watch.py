"""`workflow watch`: a workflow followed as it changes. On a terminal a live view redrawn in
place; otherwise a line each time the workflow's or a task's status changes; with --json the
workflow, one JSON object per line, at each change."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from ..output import console, for_people
from .workflow import workflow_view


def show_changes(states: Iterable[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print each state of the workflow as the arguments ask, until the stream ends."""
    if getattr(args, "output", "auto") == "json":
        for workflow in states:   # JSON lines: every change, in full
            print(json.dumps(workflow, separators=(",", ":")), flush=True)
        return
    out = console()
    if for_people(args) and out.is_terminal:
        _live(out, states)
        return
    shown = ""
    for workflow in states:
        tasks = ", ".join(f"{t['key']}={t['status']}" for t in workflow.get("tasks", []))
        line = f"{workflow['status']}: {tasks}"
        if line != shown:   # the stream also reports changes a line does not show (outputs, timestamps)
            shown = line
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


class _LiveWorkflow:
    """The live view's renderable: drawn again at each refresh, so that "running 3 s" ticks on."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def __rich__(self) -> RenderableType:
        return Text("waiting for the workflow...", style="dim") if self.state is None else workflow_view(self.state)


def _live(out: Console, states: Iterable[dict[str, Any]]) -> None:
    from rich.live import Live

    shown = _LiveWorkflow()
    with Live(shown, console=out, refresh_per_second=2, redirect_stdout=False):
        for workflow in states:
            shown.state = workflow
