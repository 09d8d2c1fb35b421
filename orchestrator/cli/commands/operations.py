"""`orchestrator workflow terminate|pause|resume|retry|restart|rerun|skip`: the operations on a
workflow; the first four also on every workflow that search filters match (--all)."""

from __future__ import annotations

import argparse
from typing import Any

from ..command import add
from ..filters import BULK_STATUSES
from ..inputs import UsageError, json_arg
from ..output import Action
from ..views.search import operation_view
from ..views.workflow import workflow_view
from .bulk import Operation, on_every_match

OPERATION_NOTE = "; prints the workflow without its tasks (see `workflow get`)"


def add_operation_commands(workflow: Any) -> None:
    terminate = add(workflow, "terminate", "terminate a running workflow, or with --all every one that matches"
                    + OPERATION_NOTE, operation("terminate", "terminated", lambda c, a, wid: c.terminate_workflow(
                        wid, a.reason, compensate=a.compensate)), wid=True, bulk=True, view=operation_view)
    terminate.add_argument("--reason", default="terminated from the CLI", help="why, stored on the workflow")
    terminate.add_argument("--compensate", action="store_true", help="undo the completed steps first (saga)")
    add(workflow, "pause", "stop scheduling new tasks" + OPERATION_NOTE,
        operation("pause", "paused", lambda c, a, wid: c.pause_workflow(wid)), wid=True, bulk=True,
        view=operation_view)
    add(workflow, "resume", "resume a paused workflow" + OPERATION_NOTE,
        operation("resume", "resumed", lambda c, a, wid: c.resume_workflow(wid)), wid=True, bulk=True,
        view=operation_view)
    add(workflow, "retry", "retry a FAILED or TIMED_OUT workflow from its failed tasks, or with --all every one "
        "that matches" + OPERATION_NOTE,
        operation("retry", "retried", lambda c, a, wid: c.retry_workflow(wid)), wid=True, bulk=True,
        view=operation_view)
    restart = add(workflow, "restart", "run an ended workflow again from the start" + OPERATION_NOTE,
                  operation("restart", "restarted", lambda c, a, wid: c.restart_workflow(
                      wid, use_latest_definition=a.latest)), wid=True, view=workflow_view)
    restart.add_argument("--latest", action="store_true", help="with the latest version of its definition")
    rerun = add(workflow, "rerun", "run again from a task (with new input)" + OPERATION_NOTE,
                operation("rerun", "rerun", lambda c, a, wid: c.rerun_workflow(
                    wid, a.task, json_arg("--input", a.input) if a.input else None)), wid=True, view=workflow_view)
    rerun.add_argument("task", help="task reference (with __<n> inside loops)")
    rerun.add_argument("--input", default="", help="new task input as a JSON object, or @file.json")
    skip = add(workflow, "skip", "skip a task" + OPERATION_NOTE,
               operation("skip", "skipped", lambda c, a, wid: c.skip_task(wid, a.task)), wid=True,
               view=workflow_view)
    skip.add_argument("task", help="task reference")


def operation(verb: str, past: str, call: Operation) -> Action:
    """Pause, resume, terminate...: the server answers with the workflow but not its tasks, so
    the (empty) task list is left out rather than printed as if the tasks were gone. With --all
    (the operations of BULK_STATUSES), on every workflow that the filters match."""
    def run(client: Any, args: argparse.Namespace) -> Any:
        if getattr(args, "all", False):
            if args.id:
                raise UsageError(f"give a workflow id or --all, not both (--all {verb}s every workflow that "
                                 "--name, --status, --correlation-id, --since and --until match)")
            return on_every_match(client, args, verb, past, call, BULK_STATUSES[verb])
        if not args.id:
            raise UsageError(f"give the id of the workflow to {verb}, or --all with filters "
                             "(--name, --status, --correlation-id, --since, --until)")
        selecting = [flag for flag in ("name", "status", "correlation_id", "since", "until")
                     if getattr(args, flag, "")]
        if selecting or getattr(args, "dry_run", False):
            flag = f"--{selecting[0].replace('_', '-')}" if selecting else "--dry-run"
            raise UsageError(f"{flag} goes with --all (it selects workflows); with an id, leave it out")
        workflow = call(client, args, args.id)
        if not workflow.get("tasks"):
            workflow.pop("tasks", None)
        return workflow
    return run
