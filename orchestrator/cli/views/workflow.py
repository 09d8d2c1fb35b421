"""One workflow for people: what it is, where it stands, when, and its tasks as a tree of
their attempts."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ...core.statuses import ACTIVE_WORKFLOW, TERMINAL_WORKFLOW
from .format import STATUS_ICONS, ago, clock_and_ago, compact, current_ms, duration, many, status_text

# How the engine records a workflow it failed because it could not decide it (an exception in the
# decider: a bug, not the workflow's fault); the stored reason went on to send the user to fix the
# definition or input (cluster/deciding.py), which is wrong for a fault of ours.
ENGINE_FAULT = "the engine could not decide it"
STOPPED = ". This workflow was stopped"


def reason_for_people(workflow: dict[str, Any]) -> str:
    """A workflow's reason as a person reads it: when the engine could not decide it, said to be
    the orchestrator's fault, with what to do about it (scripts get the stored reason: --json)."""
    reason = str(workflow.get("reason") or "")
    if not reason.startswith(ENGINE_FAULT) or "fault in the orchestrator" in reason:
        return reason
    cause = reason.split(STOPPED, 1)[0].rstrip(". ")
    workflow_id = workflow.get("workflow_id") or "<id>"
    return (f"{cause}. This is a fault in the orchestrator, not in the workflow's definition or input: the "
            "workflow was stopped so that it cannot hold up the others. Report it with the workflow id (the trace "
            "is in the log of the node that decided it, under that id); once the fault is fixed, "
            f"`orchestrator workflow retry {workflow_id}` runs it on.")


def workflow_view(workflow: dict[str, Any]) -> RenderableType:
    """The workflow: what it is, where it stands, when; and, when given, its tasks as a tree."""
    now = current_ms()
    status = workflow.get("status", "")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim", no_wrap=True)
    head.add_column()
    head.add_row("workflow", Text.assemble((workflow.get("name", ""), "bold"), f" v{workflow.get('version', 0)}  ",
                                           status_text(status), "  ", workflow.get("workflow_id", "")))
    for label, key in (("correlation", "correlation_id"), ("parent", "parent_workflow_id")):
        if workflow.get(key):
            head.add_row(label, workflow[key])
    created, ended = int(workflow.get("created_at_ms") or 0), int(workflow.get("ended_at_ms") or 0)
    if created:
        head.add_row("created", clock_and_ago(created, now))
        if ended and status in TERMINAL_WORKFLOW:
            head.add_row("took", f"{duration(ended - created)} (ended {ago(ended, now)})")
        elif status in ACTIVE_WORKFLOW:
            head.add_row("running for", duration(now - created))
    if workflow.get("reason"):
        head.add_row("reason", Text(reason_for_people(workflow), style="red" if status != "COMPLETED" else ""))
    for label, key in (("input", "input"), ("output", "output")):
        if workflow.get(key):
            head.add_row(label, Text(compact(workflow[key]), style="cyan"))
    tasks = workflow.get("tasks") or []
    return Group(head, Text(""), _task_tree(tasks, now)) if tasks else head


def _task_tree(tasks: list[dict[str, Any]], now: int) -> Tree:
    """One branch per task (by key, in the order they were first scheduled), its attempts below
    it when it ran more than once."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_key.setdefault(task.get("key") or task.get("reference_name", "?"), []).append(task)
    counted = f"  {many(len(by_key), 'task')}, {many(len(tasks), 'attempt')}"
    tree = Tree(Text.assemble(("tasks", "bold"), (counted, "dim")), guide_style="dim")
    for key, attempts in by_key.items():
        attempts.sort(key=lambda t: (int(t.get("attempt") or 0), int(t.get("scheduled_at_ms") or 0)))
        latest = attempts[-1]
        kind = latest.get("task_type") if latest.get("kind") == "SIMPLE" else latest.get("kind")
        label = Text.assemble(STATUS_ICONS.get(latest.get("status", ""), "·"), " ", (key, "bold"),
                              (f"  {kind}" if kind and kind != key else "", "dim"), "  ",
                              status_text(latest.get("status", "")))
        if len(attempts) == 1:
            label.append_text(_attempt_facts(latest, now))
        else:
            label.append(f"  {len(attempts)} attempts", style="dim")
        branch = tree.add(label)
        if len(attempts) > 1:
            for attempt in attempts:
                branch.add(Text.assemble((f"#{attempt.get('attempt', 0)} ", "dim"),
                                         status_text(attempt.get("status", "")), _attempt_facts(attempt, now)))
    return tree


def _attempt_facts(task: dict[str, Any], now: int) -> Text:
    scheduled, started, ended = (int(task.get(k) or 0) for k in ("scheduled_at_ms", "started_at_ms", "ended_at_ms"))
    facts = Text()
    if started and ended:
        facts.append(f"  {duration(ended - started)}")
    elif started:
        facts.append(f"  running {duration(now - started)}")
    elif ended and scheduled:
        facts.append(f"  {duration(ended - scheduled)}")
    elif scheduled:
        facts.append(f"  waiting {duration(now - scheduled)}", style="dim")
    if task.get("worker_id"):
        facts.append(f"  on {task['worker_id']}", style="dim")
    if task.get("sub_workflow_id"):
        facts.append(f"  → {task['sub_workflow_id']}", style="cyan")
    if task.get("reason"):
        reason = " ".join(str(task["reason"]).split())
        facts.append(f"  {reason[:200]}", style="red" if task.get("status") != "COMPLETED" else "dim")
    return facts


def started_view(out: dict[str, Any]) -> RenderableType:
    """`workflow start`: the new workflow's id (with --wait: the workflow)."""
    if "status" in out:
        return workflow_view(out)
    return Text.assemble("started ", (out.get("name", "workflow"), "bold"), "  ", (out["workflow_id"], "cyan"))
