"""`orchestrator workflow ...`: start, get, search, signal and watch workflows (the operations
on them are in operations.py, in the order `workflow --help` lists them)."""

from __future__ import annotations

import argparse
from typing import Any

from ...core.statuses import TERMINAL_WORKFLOW
from ..command import add, group
from ..filters import created, filter_flags
from ..inputs import STATUS_CHOICES, json_arg
from ..output import EXIT_STILL_RUNNING, Reply
from ..views.search import search_view
from ..views.watch import show_changes
from ..views.workflow import started_view, workflow_view
from .operations import add_operation_commands


def add_workflow_commands(commands: Any) -> None:
    workflow = group(commands, "workflow", "workflows")
    _add_start(workflow)
    add(workflow, "get", "show a workflow with its tasks (a tree of tasks and their attempts)",
        lambda c, a: c.get_workflow(a.id), wid=True, view=workflow_view)
    _add_search(workflow)
    add_operation_commands(workflow)
    signal = add(workflow, "signal", "complete a waiting WAIT or HUMAN task; prints the workflow with its tasks",
                 lambda c, a: c.signal_task(a.id, a.task, output=json_arg("--output", a.output), failed=a.failed,
                                            reason=a.reason), wid=True, view=workflow_view)
    signal.add_argument("task", help="task reference")
    signal.add_argument("--output", default="{}", help="task output as a JSON object, or @file.json")
    signal.add_argument("--failed", action="store_true", help="complete it as FAILED")
    signal.add_argument("--reason", default="", help="why (with --failed: the task's failure reason)")
    add(workflow, "watch", "follow a workflow until it ends: on a terminal a live view redrawn in place; "
        "otherwise a line each time the workflow's or a task's status changes (with --json: the workflow, one "
        "JSON object per line, at each change); follows the cluster's endpoints when a node goes away",
        lambda c, a: show_changes(c.watch_workflow(a.id, include_tasks=True), a), wid=True)


def _add_start(workflow: Any) -> None:
    start = add(workflow, "start", "start a workflow and print its id (with --wait: the workflow)", _start,
                with_name=True, version=True, view=started_view)
    start.add_argument("--input", default="{}", help="workflow input as a JSON object, or @file.json")
    start.add_argument("--correlation-id", default="", help="your own id for the workflow, to search by")
    start.add_argument("--idempotency-key", default="",
                       help="a start with a key seen before returns the first workflow (default: a fresh key)")
    start.add_argument("--wait", type=float, default=0.0,
                       help="wait up to N seconds for the end and print the workflow (start-and-wait); "
                            "exit code 3 if it is still running then")


def _add_search(workflow: Any) -> None:
    search = add(workflow, "search", "search workflows, newest first", _search, view=search_view)
    filter_flags(search, status_help="workflow status, in any case: " + ", ".join(STATUS_CHOICES))
    search.add_argument("--limit", type=int, default=50, help="at most this many (1 to 1000)")
    search.add_argument("--page-token", default="", help="the next_page_token of the previous page")
    search.add_argument("--from-ms", type=int, default=0, help="created at or after (epoch ms); see also --since")
    search.add_argument("--to-ms", type=int, default=0, help="created at or before (epoch ms); see also --until")
    search.add_argument("--text", default="", help="free text: words found (any case) in the id, correlation id, "
                                                   "input, output, variables or reason")
    search.add_argument("--wide", action="store_true",
                        help="ids in full in the table, however wide it gets (cut to fit the terminal otherwise)")


def _start(client: Any, args: argparse.Namespace) -> Any:
    options = {"version": args.version, "correlation_id": args.correlation_id,
               "idempotency_key": args.idempotency_key}
    workflow_input = json_arg("--input", args.input)
    if not args.wait:
        workflow_id = client.start_workflow(args.name, workflow_input, **options)
        return Reply({"workflow_id": workflow_id}, view={"workflow_id": workflow_id, "name": args.name})
    workflow = client.execute_workflow(args.name, workflow_input, wait_s=args.wait, **options)
    if workflow["status"] in TERMINAL_WORKFLOW:
        return workflow
    workflow_id = workflow["workflow_id"]
    return Reply(workflow, EXIT_STILL_RUNNING,
                 f"workflow {workflow_id} is still {workflow['status']} after {args.wait:g} s; "
                 f"follow it with `orchestrator workflow watch {workflow_id}`")


def _search(client: Any, args: argparse.Namespace) -> Reply:
    since, until = created(args)
    found, token = client.search_workflows(name=args.name, status=args.status,
                                           correlation_id=args.correlation_id, limit=args.limit,
                                           page_token=args.page_token, created_from_ms=since, created_to_ms=until,
                                           text=args.text)
    output = {"workflows": [{k: w.get(k) for k in ("workflow_id", "name", "status", "correlation_id")}
                            for w in found], "next_page_token": token}
    return Reply(output, view={"workflows": found, "next_page_token": token, "wide": args.wide})
