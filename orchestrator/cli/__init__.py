"""The `orchestrator` command: run a node, manage definitions and workflows, watch the cluster.

Output is for people on a terminal (tables, a tree of tasks, coloured statuses, "3 s ago") and
JSON when stdout is not a terminal, so that scripts and pipes get what they always got; --json
and --table choose, before or after the command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich import box
from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .. import __version__
from .client import call, connect
from .inputs import STATUS_CHOICES, UsageError, read_all_documents, read_documents, json_arg, status_arg, when_arg
from .inputs import when_ms as when_ms
from .output import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_STILL_RUNNING, EXIT_USAGE, Action, Reply, View
from .output import console, for_people
from .events import add_event_commands
from ..core.statuses import ACTIVE_WORKFLOW, TERMINAL_WORKFLOW

DEFAULT_ENDPOINTS = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053"
ENDPOINTS_HELP = ("comma-separated node addresses, tried in turn (default: env ORCHESTRATOR_ENDPOINTS, "
                  f"else {DEFAULT_ENDPOINTS}); accepted before or after the command")
JSON_HELP = "print JSON, for scripts (the default when stdout is not a terminal)"
TABLE_HELP = "print tables and trees, for people (the default on a terminal)"

EXIT_CODES = """output:
  tables on a terminal, JSON otherwise (pipes, scripts); --json or --table choose, before or after the command

exit codes:
  0    done
  1    the cluster refused the call or could not be reached, (workflowdef validate) a definition is invalid,
       (--all) an operation failed on some workflow or was not confirmed (without a terminal: no --yes)
  2    bad usage: an unknown flag, unreadable file, or invalid JSON/YAML in a flag or file
  3    workflow start --wait: the wait ran out before the workflow ended (it is printed as it is)
  130  interrupted (Ctrl-C)"""
OPERATION_NOTE = "; prints the workflow without its tasks (see `workflow get`)"
SHELLS = ("bash", "zsh")
PAGE = 1000   # workflows per search call when an operation runs on every match (--all)
# The operations that take --all, and the statuses they consider when --status is not given.
BULK_STATUSES = {"terminate": ("RUNNING", "PAUSED"), "pause": ("RUNNING",), "resume": ("PAUSED",),
                 "retry": ("FAILED", "TIMED_OUT")}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# How a node reaches etcd and Redis securely: setting -> help (flags --etcd-tls-ca, --redis-username, ...).
INFRASTRUCTURE_SECURITY = {
    "etcd_tls_ca_file": "PEM CA of etcd's certificate (TLS to etcd)",
    "etcd_tls_cert_file": "this node's client certificate for etcd (etcd --client-cert-auth)",
    "etcd_tls_key_file": "its private key",
    "redis_username": "the Redis ACL user this node connects as",
    "redis_password_file": "a file holding that user's password",
    "redis_tls_ca_file": "PEM CA of Redis's certificate (with a rediss:// URL)",
    "redis_tls_cert_file": "this node's client certificate for Redis (tls-auth-clients yes)",
    "redis_tls_key_file": "its private key",
}
# A node's links to Redis and its namespaces' quotas: setting -> (flag, type, help).
STORE_LIMIT_FLAGS: dict[str, tuple[str, type, str]] = {
    "redis_socket_timeout_s": ("--redis-timeout", float, "seconds a Redis command may go unanswered before the "
                               "caller gets UNAVAILABLE (default 5; a blocking read: its own wait on top)"),
    "redis_connect_timeout_s": ("--redis-connect-timeout", float, "seconds a connection to Redis may take to "
                                "open (default 2)"),
    "redis_blocking_connections": ("--redis-blocking-connections", int, "connections blocking reads "
                                   "(ReceiveEvents, event handlers, WAIT topics, WatchWorkflow) may hold at once "
                                   "(default 64); past them a wait holds none"),
    "quota_workflows_in_flight": ("--quota-workflows-in-flight", int, "workflows each namespace may have running, "
                                  "paused or compensating; starts past it are refused (default 1000000; 0: no limit)"),
    "quota_event_handlers": ("--quota-event-handlers", int, "event handlers each namespace may register "
                             "(default 1000; 0: no limit)"),
    "quota_topics": ("--quota-topics", int, "event topics each namespace may use (default 10000; 0: no limit)"),
    "quota_consumer_groups": ("--quota-consumer-groups", int, "subscription groups each namespace may use "
                              "(default 10000; 0: no limit)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    parser.add_argument("--endpoints", default=os.environ.get("ORCHESTRATOR_ENDPOINTS", DEFAULT_ENDPOINTS),
                        help=ENDPOINTS_HELP)
    parser.add_argument("--token", default=None,
                        help="the bearer token a cluster with a tokens file asks for (default: $ORCHESTRATOR_TOKEN)")
    parser.add_argument("--namespace", default=None,
                        help="the namespace whose definitions, workflows and topics to address (default: "
                             "$ORCHESTRATOR_NAMESPACE, else the token's, else the default one)")
    parser.add_argument("--tls-ca", default=None, help="CA of the nodes' TLS certificates (default: "
                                                       "$ORCHESTRATOR_TLS_CA; none: plaintext)")
    parser.add_argument("--tls-cert", default=None, help="this client's certificate, for mutual TLS "
                                                         "(default: $ORCHESTRATOR_TLS_CERT)")
    parser.add_argument("--tls-key", default=None, help="its private key (default: $ORCHESTRATOR_TLS_KEY)")
    _output_flags(parser, default="auto")
    commands = parser.add_subparsers(metavar="COMMAND", help="what to do")
    _add_node(commands)
    _add_definitions(commands)
    _add_workflows(commands)
    cluster = _group(commands, "cluster", "the cluster")
    _add(cluster, "status", "who leads, since when, with which epoch; the members", _cluster_status,
         view=_cluster_view)
    _add(cluster, "step-down", "ask the leader to resign; another member takes over", _step_down,
         view=lambda out: Text(out["detail"]))
    add_event_commands(commands, _group, _add, json_arg, read_all_documents)
    _add_completion(commands)
    return parser


def _output_flags(parser: argparse.ArgumentParser, default: str) -> None:
    """--json / --table; after the command they default to SUPPRESS, so that the value given
    before it (or the default) stands."""
    parser.add_argument("--json", dest="output", action="store_const", const="json", default=default,
                        help=JSON_HELP)
    parser.add_argument("--table", dest="output", action="store_const", const="table", default=default,
                        help=TABLE_HELP)


def _group(commands: Any, name: str, help_text: str) -> Any:
    return commands.add_parser(name, help=help_text).add_subparsers(metavar="ACTION", help=f"{help_text}: actions")


def _add_node(commands: Any) -> None:
    node = commands.add_parser("node", help="run one orchestrator node in the foreground")
    node.add_argument("--config", help="YAML file with node settings (see deploy/)")
    node.add_argument("--node-id", help="this node's name in the cluster (default: the host name)")
    node.add_argument("--listen", help="host:port to serve gRPC on")
    node.add_argument("--advertise", help="host:port other nodes and clients reach this node at")
    node.add_argument("--http-listen", help="host:port of the web console and /metrics (default: the gRPC "
                                            "port + 1000 on the same host; \"\" serves none)")
    node.add_argument("--redis-url", help="the Redis to keep state in, as redis://host:port/db")
    node.add_argument("--redis-sentinels", help="comma-separated Sentinel host:port list (instead of --redis-url)")
    node.add_argument("--redis-master", help="the master name the Sentinels monitor")
    node.add_argument("--redis-min-replicas", dest="redis_min_replicas", type=int,
                      help="acknowledge nothing until this many Redis replicas hold it (default 0: the master "
                           "alone; what it acknowledged but had not yet replicated is lost if it dies)")
    node.add_argument("--redis-replica-timeout-ms", dest="redis_replica_timeout_ms", type=int,
                      help="how long a write waits for those replicas before the caller gets UNAVAILABLE "
                           "(default 1000)")
    node.add_argument("--etcd", dest="etcd_endpoints", help="comma-separated etcd endpoints host:port")
    node.add_argument("--cluster", help="cluster name (election prefix and Redis key prefix)")
    node.add_argument("--lease-ttl", dest="lease_ttl_s", type=float,
                      help="seconds the leader's etcd lease lives without renewal (failover detection time)")
    for name, (flag, kind, text) in STORE_LIMIT_FLAGS.items():
        node.add_argument(flag, dest=name, type=kind, help=text)
    node.add_argument("--leader-redis-timeout", dest="leader_redis_timeout_s", type=float,
                      help="seconds a leader's clocks may go without completing a pass against Redis before it "
                           "resigns so that another node leads; it stands again once Redis answers (default 2)")
    node.add_argument("--retention", dest="retention_s", type=float,
                      help="seconds a finished workflow stays in Redis before it is archived (default 7 days)")
    node.add_argument("--archive-dir", help="where archived workflows go; every node must see the same directory")
    node.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    node.add_argument("--log-format", choices=("text", "json"),
                      help="text (default) or json: one JSON object per line with time, level, logger, message, "
                           "node and, when known, workflow_id, task_id, epoch")
    node.add_argument("--tokens-file", help="YAML/JSON file of tokens and their roles (admin, operator, worker, "
                                            "reader); every call then needs one (default: none, open)")
    node.add_argument("--tls-cert", dest="tls_cert_file", help="PEM certificate of the gRPC and HTTP ports (TLS)")
    node.add_argument("--tls-key", dest="tls_key_file", help="its PEM private key")
    node.add_argument("--tls-ca", dest="tls_ca_file",
                      help="PEM CA whose certificates clients must present (mutual TLS; nodes present theirs too)")
    node.add_argument("--allow-plaintext", action="store_true", default=None,
                      help="serve plaintext beyond loopback (refused otherwise): only behind something that encrypts")
    for name, text in INFRASTRUCTURE_SECURITY.items():
        flag = name if name == "redis_password_file" else name.removesuffix("_file")
        node.add_argument("--" + flag.replace("_", "-"), dest=name, help=text)
    node.add_argument("--http-tasks", dest="http_task_concurrency", type=int,
                      help="HTTP and HTTP_POLL tasks this node calls at once (default 32); 0: the node runs none "
                           "and workers that serve task type HTTP do")
    node.add_argument("--http-task-allow-cidrs", dest="http_task_allow_cidrs",
                      help="comma-separated address ranges HTTP tasks may call although they are loopback, "
                           "link-local, private or reserved, e.g. 10.0.0.0/8 (default: public addresses only; the "
                           "cluster's etcd and Redis never)")
    node.add_argument("--trace-file", help="also write this node's trace spans to this file, one JSON object per "
                                           "line (OTLP export is set with the OTEL_EXPORTER_OTLP_* variables)")
    node.set_defaults(handler=run_node)


def _add_definitions(commands: Any) -> None:
    taskdef = _group(commands, "taskdef", "task definitions")
    _add(taskdef, "register", "register task definitions from JSON/YAML files (one object or a list)",
         lambda c, a: [c.register_task_def(d) for d in read_all_documents(a.files)], files=True, view=_taskdefs_view)
    _add(taskdef, "get", "show one task definition", lambda c, a: c.get_task_def(a.name), with_name=True,
         view=_definition_view)
    _add(taskdef, "list", "list task definitions", lambda c, a: c.list_task_defs(), view=_taskdefs_view)

    wfdef = _group(commands, "workflowdef", "workflow definitions")
    _add(wfdef, "register", "register workflow definitions from JSON/YAML files",
         lambda c, a: [c.register_workflow_def(d) for d in _dependencies_first(read_all_documents(a.files))],
         files=True, view=_workflowdefs_view)
    _add(wfdef, "validate", "check workflow definitions without registering them; exits 1 if any is invalid",
         _validate, files=True, view=_validation_view)
    _add(wfdef, "get", "show a workflow definition (latest version unless --version)",
         lambda c, a: c.get_workflow_def(a.name, a.version), with_name=True, version=True, view=_definition_view)
    _add(wfdef, "list", "list workflow definitions", lambda c, a: c.list_workflow_defs(), view=_workflowdefs_view)


def _add_workflows(commands: Any) -> None:
    workflow = _group(commands, "workflow", "workflows")
    _add_start(workflow)
    _add(workflow, "get", "show a workflow with its tasks (a tree of tasks and their attempts)",
         lambda c, a: c.get_workflow(a.id), wid=True, view=_workflow_view)
    _add_search(workflow)
    terminate = _add(workflow, "terminate", "terminate a running workflow, or with --all every one that matches"
                     + OPERATION_NOTE, _operation("terminate", "terminated", lambda c, a, wid: c.terminate_workflow(
                         wid, a.reason, compensate=a.compensate)), wid=True, bulk=True, view=_operation_view)
    terminate.add_argument("--reason", default="terminated from the CLI", help="why, stored on the workflow")
    terminate.add_argument("--compensate", action="store_true", help="undo the completed steps first (saga)")
    _add_operations(workflow)
    signal = _add(workflow, "signal", "complete a waiting WAIT or HUMAN task; prints the workflow with its tasks",
                  lambda c, a: c.signal_task(a.id, a.task, output=json_arg("--output", a.output), failed=a.failed,
                                             reason=a.reason), wid=True, view=_workflow_view)
    signal.add_argument("task", help="task reference")
    signal.add_argument("--output", default="{}", help="task output as a JSON object, or @file.json")
    signal.add_argument("--failed", action="store_true", help="complete it as FAILED")
    signal.add_argument("--reason", default="", help="why (with --failed: the task's failure reason)")
    _add(workflow, "watch", "follow a workflow until it ends: on a terminal a live view redrawn in place; "
         "otherwise a line each time the workflow's or a task's status changes (with --json: the workflow, one "
         "JSON object per line, at each change); follows the cluster's endpoints when a node goes away",
         _watch, wid=True)


def _add_start(workflow: Any) -> None:
    start = _add(workflow, "start", "start a workflow and print its id (with --wait: the workflow)", _start,
                 with_name=True, version=True, view=_started_view)
    start.add_argument("--input", default="{}", help="workflow input as a JSON object, or @file.json")
    start.add_argument("--correlation-id", default="", help="your own id for the workflow, to search by")
    start.add_argument("--idempotency-key", default="",
                       help="a start with a key seen before returns the first workflow (default: a fresh key)")
    start.add_argument("--wait", type=float, default=0.0,
                       help="wait up to N seconds for the end and print the workflow (start-and-wait); "
                            "exit code 3 if it is still running then")


def _add_search(workflow: Any) -> None:
    search = _add(workflow, "search", "search workflows, newest first", _search, view=_search_view)
    _filter_flags(search, status_help="workflow status, in any case: " + ", ".join(STATUS_CHOICES))
    search.add_argument("--limit", type=int, default=50, help="at most this many (1 to 1000)")
    search.add_argument("--page-token", default="", help="the next_page_token of the previous page")
    search.add_argument("--from-ms", type=int, default=0, help="created at or after (epoch ms); see also --since")
    search.add_argument("--to-ms", type=int, default=0, help="created at or before (epoch ms); see also --until")
    search.add_argument("--text", default="", help="free text: words found (any case) in the id, correlation id, "
                                                   "input, output, variables or reason")
    search.add_argument("--wide", action="store_true",
                        help="ids in full in the table, however wide it gets (cut to fit the terminal otherwise)")


def _filter_flags(parser: argparse.ArgumentParser, status_help: str) -> None:
    parser.add_argument("--name", default="", help="workflow definition name")
    parser.add_argument("--status", default="", type=status_arg, metavar="STATUS", help=status_help)
    parser.add_argument("--correlation-id", default="", help="the correlation id given at start")
    parser.add_argument("--since", default="", type=when_arg("--since"), metavar="WHEN",
                        help="created at or after: a time ago (30s, 10m, 1h, 2h30m, 7d) or a date "
                             "(2024-05-01, 2024-05-01T10:00, local time unless it names an offset)")
    parser.add_argument("--until", default="", type=when_arg("--until"), metavar="WHEN",
                        help="created at or before: a time ago or a date, as --since")


def _add_operations(workflow: Any) -> None:
    _add(workflow, "pause", "stop scheduling new tasks" + OPERATION_NOTE,
         _operation("pause", "paused", lambda c, a, wid: c.pause_workflow(wid)), wid=True, bulk=True,
         view=_operation_view)
    _add(workflow, "resume", "resume a paused workflow" + OPERATION_NOTE,
         _operation("resume", "resumed", lambda c, a, wid: c.resume_workflow(wid)), wid=True, bulk=True,
         view=_operation_view)
    _add(workflow, "retry", "retry a FAILED or TIMED_OUT workflow from its failed tasks, or with --all every one "
         "that matches" + OPERATION_NOTE,
         _operation("retry", "retried", lambda c, a, wid: c.retry_workflow(wid)), wid=True, bulk=True,
         view=_operation_view)
    restart = _add(workflow, "restart", "run an ended workflow again from the start" + OPERATION_NOTE,
                   _operation("restart", "restarted", lambda c, a, wid: c.restart_workflow(
                       wid, use_latest_definition=a.latest)), wid=True, view=_workflow_view)
    restart.add_argument("--latest", action="store_true", help="with the latest version of its definition")
    rerun = _add(workflow, "rerun", "run again from a task (with new input)" + OPERATION_NOTE,
                 _operation("rerun", "rerun", lambda c, a, wid: c.rerun_workflow(
                     wid, a.task, json_arg("--input", a.input) if a.input else None)), wid=True, view=_workflow_view)
    rerun.add_argument("task", help="task reference (with __<n> inside loops)")
    rerun.add_argument("--input", default="", help="new task input as a JSON object, or @file.json")
    skip = _add(workflow, "skip", "skip a task" + OPERATION_NOTE,
                _operation("skip", "skipped", lambda c, a, wid: c.skip_task(wid, a.task)), wid=True,
                view=_workflow_view)
    skip.add_argument("task", help="task reference")


def _add_completion(commands: Any) -> None:
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description="Print a completion script for the shell. bash: `source <(orchestrator completion bash)` "
                    "(in ~/.bashrc), or save it as ~/.local/share/bash-completion/completions/orchestrator. "
                    "zsh: save it as _orchestrator in a directory of $fpath (before compinit), or "
                    "`source <(orchestrator completion zsh)` after compinit.")
    completion.add_argument("shell", choices=SHELLS, help="the shell: bash or zsh")
    completion.set_defaults(handler=lambda args: _print_completion(args.shell))


def _add(group: Any, name: str, help_text: str, action: Action, *, files: bool = False, with_name: bool = False,
         version: bool = False, wid: bool = False, bulk: bool = False,
         view: View | None = None) -> argparse.ArgumentParser:
    """A command run through the API. `bulk`: the id may be replaced by --all and search filters."""
    sub = group.add_parser(name, help=help_text, description=help_text)
    if files:
        sub.add_argument("files", nargs="+", type=Path, help="JSON or YAML files: one definition or a list")
    if with_name:
        sub.add_argument("name", help="definition name")
    if version:
        sub.add_argument("--version", type=int, default=0, help="definition version (default: the latest)")
    if wid and bulk:
        sub.add_argument("id", nargs="?", default="", help="workflow id (or --all with filters)")
        _bulk_flags(sub, BULK_STATUSES[name])
    elif wid:
        sub.add_argument("id", help="workflow id")
    # SUPPRESS: absent after the command, the value given before it (or the default) stands
    sub.add_argument("--endpoints", default=argparse.SUPPRESS, help=ENDPOINTS_HELP)
    _output_flags(sub, default=argparse.SUPPRESS)
    sub.set_defaults(handler=lambda args: call(args, action, view))
    return sub  # type: ignore[no-any-return]


def _bulk_flags(parser: argparse.ArgumentParser, statuses: tuple[str, ...]) -> None:
    parser.add_argument("--all", action="store_true",
                        help="every workflow the filters below match (at least one filter); asks first")
    default = " and ".join(status.lower() for status in statuses)
    _filter_flags(parser, status_help=f"with --all: only this status (default: {default})")
    parser.add_argument("--yes", "-y", action="store_true", help="with --all: do not ask for confirmation")
    parser.add_argument("--dry-run", action="store_true", help="with --all: list the matches, change nothing")


def _operation(verb: str, past: str, call: Callable[[Any, argparse.Namespace, str], dict[str, Any]]) -> Action:
    """Pause, resume, terminate...: the server answers with the workflow but not its tasks, so
    the (empty) task list is left out rather than printed as if the tasks were gone. With --all
    (the operations of BULK_STATUSES), on every workflow that the filters match."""
    def run(client: Any, args: argparse.Namespace) -> Any:
        if getattr(args, "all", False):
            if args.id:
                raise UsageError(f"give a workflow id or --all, not both (--all {verb}s every workflow that "
                                 "--name, --status, --correlation-id, --since and --until match)")
            return _bulk(client, args, verb, past, call, BULK_STATUSES[verb])
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


# ------------------------------------------------------------ reading flags and files


def _dependencies_first(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order workflow definitions so that each comes after the sub-workflows and failure
    workflows it names from the same batch (`register examples/*.yaml` in any file order).
    Names outside the batch must be registered already; a cycle keeps the given order
    (the server then says what is missing)."""
    from ..core.definitions import referenced_workflow_names

    by_name = {d.get("name"): d for d in documents}
    ordered: list[dict[str, Any]] = []
    placed: set[int] = set()
    visiting: set[int] = set()

    def place(document: dict[str, Any]) -> None:
        if id(document) in placed or id(document) in visiting:
            return
        visiting.add(id(document))
        for name in sorted(referenced_workflow_names(document)):
            dependency = by_name.get(name)
            if dependency is not None and dependency is not document:
                place(dependency)
        visiting.discard(id(document))
        placed.add(id(document))
        ordered.append(document)

    for document in documents:
        place(document)
    return ordered


# ------------------------------------------------------------ actions


def _validate(client: Any, args: argparse.Namespace) -> Reply:
    documents = [(path, document) for path in args.files for document in read_documents(path)]
    report: dict[str, Any] = {}
    invalid = 0
    for path, document in documents:
        valid, errors = client.validate_workflow_def(document)
        report[f"{path}:{document.get('name')}"] = "valid" if valid else errors
        invalid += not valid
    if not invalid:
        return Reply(report)
    return Reply(report, EXIT_REFUSED, f"error: {invalid} of {len(documents)} workflow definitions are invalid "
                                       "(the problems are listed above)")


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


def _watch(client: Any, args: argparse.Namespace) -> None:
    states = client.watch_workflow(args.id, include_tasks=True)
    if getattr(args, "output", "auto") == "json":
        for workflow in states:   # JSON lines: every change, in full
            print(json.dumps(workflow, separators=(",", ":")), flush=True)
        return
    out = console()
    if for_people(args) and out.is_terminal:
        _watch_live(out, states)
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
        return Text("waiting for the workflow...", style="dim") if self.state is None else _workflow_view(self.state)


def _watch_live(console: Console, states: Iterable[dict[str, Any]]) -> None:
    from rich.live import Live

    shown = _LiveWorkflow()
    with Live(shown, console=console, refresh_per_second=2, redirect_stdout=False):
        for workflow in states:
            shown.state = workflow


def _created(args: argparse.Namespace) -> tuple[int, int]:
    """The creation times searched, in epoch ms (0: unbounded), from --since/--until or --from-ms/--to-ms."""
    if (args.since and getattr(args, "from_ms", 0)) or (args.until and getattr(args, "to_ms", 0)):
        raise UsageError("give --since or --from-ms (and --until or --to-ms), not both")
    since, until = args.since or getattr(args, "from_ms", 0), args.until or getattr(args, "to_ms", 0)
    if since and until and since > until:
        raise UsageError("--since is after --until: nothing was created in between (--since 1h --until 10m "
                         "means from an hour ago to ten minutes ago)")
    return since, until


def _search(client: Any, args: argparse.Namespace) -> Reply:
    since, until = _created(args)
    found, token = client.search_workflows(name=args.name, status=args.status,
                                           correlation_id=args.correlation_id, limit=args.limit,
                                           page_token=args.page_token, created_from_ms=since, created_to_ms=until,
                                           text=args.text)
    output = {"workflows": [{k: w.get(k) for k in ("workflow_id", "name", "status", "correlation_id")}
                            for w in found], "next_page_token": token}
    return Reply(output, view={"workflows": found, "next_page_token": token, "wide": args.wide})


def _cluster_status(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    status = client.cluster_status()
    elected = int(status.get("elected_at_ms", 0))
    if elected:
        status["elected_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(elected / 1000))
        status["leading_for_s"] = round(time.time() - elected / 1000, 1)
    return dict(status)


def _step_down(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    leader = client.cluster_status().get("leader_address")
    if not leader:
        return {"detail": "no leader right now"}

    with_leader = connect([leader], args)
    try:
        return {"detail": with_leader.step_down()}
    finally:
        with_leader.close()


# ------------------------------------------------------------ operations on every match (--all)

def _bulk(client: Any, args: argparse.Namespace, verb: str, past: str,
          call: Callable[[Any, argparse.Namespace, str], dict[str, Any]], statuses: tuple[str, ...]) -> Reply:
    """Find every workflow the filters match (all pages, before changing any), ask, then run the
    operation on each with a progress bar; one failure does not stop the others."""
    from worker import ClientError

    if not (args.name or args.status or args.correlation_id or args.since or args.until):
        raise UsageError(f"--all needs a filter to choose what to {verb}: --name, --status, --correlation-id, "
                         "--since or --until")
    matches = _every_match(client, args, [args.status] if args.status else list(statuses))
    if args.dry_run or not matches:
        note = "" if matches else f"no workflow matches: nothing to {verb}"
        return Reply({"matched": len(matches), "workflows": [w["workflow_id"] for w in matches]}, note=note,
                     view={"matched": len(matches), "workflows": matches})
    if not args.yes and not sys.stdin.isatty():   # no terminal to ask on: --yes is how a script says yes
        return Reply(None, EXIT_REFUSED, f"error: {len(matches)} workflows match; add --yes to {verb} them without "
                                         "being asked (or --dry-run to list them); nothing was done")
    if not args.yes and not _confirmed(verb, matches):
        return Reply(None, EXIT_REFUSED, f"nothing was done: {verb} of {len(matches)} workflows not confirmed")
    done: list[str] = []
    failed: dict[str, str] = {}
    for workflow_id in _progress(f"{verb} {len(matches)} workflows", [w["workflow_id"] for w in matches]):
        try:
            call(client, args, workflow_id)
            done.append(workflow_id)
        except ClientError as exc:
            failed[workflow_id] = str(exc)
    note = f"error: {len(failed)} of {len(matches)} workflows could not be {past}" if failed else ""
    output = {"matched": len(matches), "done": done, "failed": failed}
    return Reply(output, EXIT_REFUSED if failed else EXIT_OK, note, view={**output, "verb": past})


def _every_match(client: Any, args: argparse.Namespace, statuses: list[str]) -> list[dict[str, Any]]:
    since, until = _created(args)
    found: dict[str, dict[str, Any]] = {}
    for status in statuses:
        token = ""
        while True:
            page, token = client.search_workflows(name=args.name, status=status, correlation_id=args.correlation_id,
                                                  limit=PAGE, page_token=token, created_from_ms=since,
                                                  created_to_ms=until)
            found.update((w["workflow_id"], w) for w in page)
            if not token:   # a page may be short, even empty, with a token that goes on (a bounded scan)
                break
    return sorted(found.values(), key=lambda w: -int(w.get("created_at_ms") or 0))


def _confirmed(verb: str, matches: list[dict[str, Any]]) -> bool:
    """Ask on the terminal (stderr, stdin)."""
    from rich.prompt import Confirm

    err = console(stderr=True)
    err.print(_search_view({"workflows": matches[:10], "next_page_token": ""}))
    if len(matches) > 10:
        err.print(Text(f"... and {len(matches) - 10} more", style="dim"))
    return Confirm.ask(f"{verb.capitalize()} these {len(matches)} workflows?", console=err, default=False)


def _progress(label: str, items: list[str]) -> Iterable[str]:
    """`items`, with a progress bar on stderr when it is a terminal."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        for item in items:
            yield item
            progress.advance(task)


# ------------------------------------------------------------ views (what people see; --json prints the data)

STATUS_STYLES = {
    "RUNNING": "bold blue", "IN_PROGRESS": "blue", "SCHEDULED": "cyan", "PAUSED": "yellow",
    "COMPENSATING": "yellow", "COMPLETED": "green", "COMPLETED_WITH_ERRORS": "yellow", "COMPENSATED": "yellow",
    "SKIPPED": "dim", "CANCELED": "dim", "FAILED": "bold red", "FAILED_WITH_TERMINAL_ERROR": "bold red",
    "TIMED_OUT": "red", "TERMINATED": "magenta", "COMPENSATION_FAILED": "bold red",
    "LEADER": "bold green", "FOLLOWER": "dim"}
STATUS_ICONS = {"COMPLETED": "✓", "COMPLETED_WITH_ERRORS": "✓", "SKIPPED": "↷", "CANCELED": "-", "FAILED": "✗",
                "FAILED_WITH_TERMINAL_ERROR": "✗", "TIMED_OUT": "✗", "IN_PROGRESS": "▶", "SCHEDULED": "○"}
PAYLOAD_CHARS = 300   # inputs and outputs in a view: compact JSON cut to this


def _now_ms() -> int:
    return int(time.time() * 1000)


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def ago(ms: int, now_ms: int | None = None) -> str:
    """"3 s ago", "5 min ago", "2 h ago", "4 d ago" ("-" for no time)."""
    if not ms:
        return "-"
    seconds = ((now_ms if now_ms is not None else _now_ms()) - ms) / 1000
    if seconds < 0:
        return f"in {_coarse(-seconds)}"
    return "just now" if seconds < 1 else f"{_coarse(seconds)} ago"


def _coarse(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def duration(ms: float) -> str:
    """"850 ms", "1.2 s", "42 s", "3 min 5 s", "2 h 3 min", "1 d 2 h"."""
    ms = max(ms, 0)
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    for big, big_size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                             ("min", 60, "s", 1)):
        if seconds >= big_size:
            rest = int(seconds % big_size // small_size)
            return f"{int(seconds // big_size)} {big}" + (f" {rest} {small}" if rest else "")
    return f"{int(seconds)} s"   # pragma: no cover (60 s and more is caught above)


def _clock(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _compact(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return text if len(text) <= PAYLOAD_CHARS else text[:PAYLOAD_CHARS - 1] + "…"


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


def _workflow_view(workflow: dict[str, Any]) -> RenderableType:
    """The workflow: what it is, where it stands, when; and, when given, its tasks as a tree."""
    now = _now_ms()
    status = workflow.get("status", "")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim", no_wrap=True)
    head.add_column()
    head.add_row("workflow", Text.assemble((workflow.get("name", ""), "bold"), f" v{workflow.get('version', 0)}  ",
                                           _status(status), "  ", workflow.get("workflow_id", "")))
    for label, key in (("correlation", "correlation_id"), ("parent", "parent_workflow_id")):
        if workflow.get(key):
            head.add_row(label, workflow[key])
    created, ended = int(workflow.get("created_at_ms") or 0), int(workflow.get("ended_at_ms") or 0)
    if created:
        head.add_row("created", f"{_clock(created)} ({ago(created, now)})")
        if ended and status in TERMINAL_WORKFLOW:
            head.add_row("took", f"{duration(ended - created)} (ended {ago(ended, now)})")
        elif status in ACTIVE_WORKFLOW:
            head.add_row("running for", duration(now - created))
    if workflow.get("reason"):
        head.add_row("reason", Text(reason_for_people(workflow), style="red" if status != "COMPLETED" else ""))
    for label, key in (("input", "input"), ("output", "output")):
        if workflow.get(key):
            head.add_row(label, Text(_compact(workflow[key]), style="cyan"))
    tasks = workflow.get("tasks") or []
    return Group(head, Text(""), _task_tree(tasks, now)) if tasks else head


def _task_tree(tasks: list[dict[str, Any]], now: int) -> Tree:
    """One branch per task (by key, in the order they were first scheduled), its attempts below
    it when it ran more than once."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_key.setdefault(task.get("key") or task.get("reference_name", "?"), []).append(task)
    counted = f"  {_many(len(by_key), 'task')}, {_many(len(tasks), 'attempt')}"
    tree = Tree(Text.assemble(("tasks", "bold"), (counted, "dim")), guide_style="dim")
    for key, attempts in by_key.items():
        attempts.sort(key=lambda t: (int(t.get("attempt") or 0), int(t.get("scheduled_at_ms") or 0)))
        latest = attempts[-1]
        kind = latest.get("task_type") if latest.get("kind") == "SIMPLE" else latest.get("kind")
        label = Text.assemble(STATUS_ICONS.get(latest.get("status", ""), "·"), " ", (key, "bold"),
                              (f"  {kind}" if kind and kind != key else "", "dim"), "  ",
                              _status(latest.get("status", "")))
        if len(attempts) == 1:
            label.append_text(_attempt_facts(latest, now))
        else:
            label.append(f"  {len(attempts)} attempts", style="dim")
        branch = tree.add(label)
        if len(attempts) > 1:
            for attempt in attempts:
                branch.add(Text.assemble((f"#{attempt.get('attempt', 0)} ", "dim"), _status(attempt.get("status", "")),
                                         _attempt_facts(attempt, now)))
    return tree


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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


def _started_view(out: dict[str, Any]) -> RenderableType:
    if "status" in out:   # start --wait: the workflow
        return _workflow_view(out)
    return Text.assemble("started ", (out.get("name", "workflow"), "bold"), "  ", (out["workflow_id"], "cyan"))


def _search_view(view: dict[str, Any]) -> RenderableType:
    workflows = view.get("workflows") or []
    if not workflows:
        return Text("no workflow matches", style="dim")
    return _WorkflowTable(workflows, view.get("next_page_token") or "", bool(view.get("wide")))


class _WorkflowTable:
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
        now = _now_ms()
        self.rows: list[tuple[str, str, str, str, str, str]] = []
        for workflow in workflows:
            created, ended = int(workflow.get("created_at_ms") or 0), int(workflow.get("ended_at_ms") or 0)
            status = workflow.get("status", "")
            took = duration(ended - created) if ended and created else (
                f"running {duration(now - created)}" if created and status in ACTIVE_WORKFLOW else "-")
            name = workflow.get("name", "") + (f" v{workflow['version']}" if workflow.get("version") else "")
            self.rows.append((workflow.get("workflow_id", ""), name, status, workflow.get("correlation_id") or "",
                              ago(created, now), took))
        self.next_page_token = next_page_token
        self.wide = wide
        self.widths = [max([len(column) if i else 0, *(len(row[i]) for row in self.rows)])
                       for i, column in enumerate(self.COLUMNS)]   # a cut id is headed "ID"
        self.shown = [i for i in range(len(self.COLUMNS))
                      if i != self.CORRELATION or any(row[self.CORRELATION] for row in self.rows)]

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
            cells: list[RenderableType] = [workflow_id, row[1], _status(row[2]), row[3], row[4], row[5]]
            table.add_row(*(cells[i] for i in shown))
        captions = ["ids cut to fit: --wide shows them in full"] if cut else []
        if self.CORRELATION in self.shown and self.CORRELATION not in shown:
            captions.append("no room for correlation ids")
        if self.next_page_token:
            captions.append(f"more: --page-token {self.next_page_token}")
        table.caption = "; ".join(captions) or None
        yield table


def _cluster_view(status: dict[str, Any]) -> RenderableType:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim", no_wrap=True)
    head.add_column()
    leader = status.get("leader_id")
    if leader:
        head.add_row("leader", Text.assemble((leader, "bold green"), f" at {status.get('leader_address', '')}"))
        head.add_row("epoch", str(status.get("epoch", 0)))
        elected = int(status.get("elected_at_ms") or 0)
        if elected:
            head.add_row("elected", f"{_clock(elected)} ({ago(elected)}), leading for {duration(_now_ms() - elected)}")
    else:
        head.add_row("leader", Text("none right now", style="bold red"))
    head.add_row("answered by", Text.assemble(status.get("node_id", ""), " (", _status(status.get("role", "")), ")"))
    members = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("NODE", "ADDRESS", "ROLE", "STATE", "SINCE"):
        members.add_column(column)
    for member in status.get("members") or []:   # registered now; then the ones seen and gone
        since = int(member.get("since_ms") or 0)
        members.add_row(Text(member.get("node_id", ""), style="bold" if member.get("node_id") == leader else ""),
                        member.get("address", ""), _status(member.get("role", "")), Text("UP", style="green"),
                        f"{_clock(since)} ({ago(since)})" if since else "-")
    for member in status.get("gone") or []:
        since = int(member.get("since_ms") or 0)
        members.add_row(Text(member.get("node_id", ""), style="dim"), member.get("address", ""), "",
                        Text("DOWN", style="bold red"),
                        Text.assemble(f"{_clock(since)} ({ago(since)})" if since else "not noted yet",
                                      (f": {member['detail']}" if member.get("detail") else "", "dim")))
    return Group(head, Text(""), members)


def _definition_view(found: dict[str, Any]) -> RenderableType:
    title = found.get("name", "") + (f" v{found['version']}" if found.get("version") else "")
    return Group(Text(title, style="bold"), JSON.from_data(found.get("definition") or {}))


def _seconds(value: Any) -> str:
    return "-" if not value else duration(float(value) * 1000)


def _taskdefs_view(found: list[dict[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("NAME", "RETRIES", "LEASE", "TIMEOUT", "LIMITS", "DESCRIPTION"):
        table.add_column(column, no_wrap=column == "NAME")
    for item in found:
        d = item.get("definition") or {}
        retries = f"{d.get('retryCount', 0)} × {str(d.get('retryLogic', '')).lower().replace('_', ' ')} " \
                  f"{_seconds(d.get('retryDelaySeconds'))}" if d.get("retryCount") else "none"
        limits = ", ".join(part for part in (
            f"{d['concurrentExecLimit']} at once" if d.get("concurrentExecLimit") else "",
            f"{d['rateLimitPerFrequency']} per {_seconds(d.get('rateLimitFrequencyInSeconds'))}"
            if d.get("rateLimitPerFrequency") else "") if part)
        table.add_row(item.get("name", ""), retries, _seconds(d.get("responseTimeoutSeconds")),
                      _seconds(d.get("timeoutSeconds")), limits or "-", d.get("description") or "")
    return table


def _workflowdefs_view(found: list[dict[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("NAME", "VERSION", "TASKS", "DESCRIPTION"):
        table.add_column(column, no_wrap=column == "NAME")
    for item in found:
        d = item.get("definition") or {}
        table.add_row(item.get("name", ""), str(item.get("version", "")), str(len(d.get("tasks") or [])),
                      d.get("description") or "")
    return table


def _validation_view(report: dict[str, Any]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("DEFINITION")
    table.add_column("RESULT")
    for where, result in report.items():
        if result == "valid":
            table.add_row(where, Text("✓ valid", style="green"))
        else:
            table.add_row(where, Text("\n".join(f"✗ {error}" for error in result), style="red"))
    return table


def _bulk_view(view: dict[str, Any]) -> RenderableType:
    if "done" not in view:   # --dry-run: the matches
        return _search_view(view)
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


def _operation_view(data: dict[str, Any]) -> RenderableType:
    return _bulk_view(data) if "matched" in data else _workflow_view(data)


# ------------------------------------------------------------ shell completion
#
# Generated from the argparse tree itself, so it cannot drift from the commands: a static script
# (no Python started on TAB, no new dependency), completing commands, options, the choices of
# options that have them (--status, --log-format, the shells) and file names where files go.
# Workflow ids and definition names are not completed: that would mean calling the cluster.

FILE_DESTS = {"files", "config", "trace_file", "archive_dir"}


@dataclass
class _Spec:
    """What may follow one command path: sub-commands, options, and the values some options take."""

    commands: list[tuple[str, str]]
    options: list[tuple[str, str]]
    valued: list[str]                   # options that take a value
    file_options: list[str]             # ... which is a file name
    choices: dict[str, list[str]]       # ... from a fixed list
    files: bool                         # positional file names


def command_specs(parser: argparse.ArgumentParser) -> dict[str, _Spec]:
    """Every command path ("", "workflow", "workflow start", ...) and what may follow it."""
    specs: dict[str, _Spec] = {}

    def walk(current: argparse.ArgumentParser, path: str) -> None:
        spec = specs[path] = _Spec([], [], [], [], {}, False)
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    spec.commands.append((name, helps.get(name, "")))
                    walk(sub, f"{path} {name}".strip())
            elif action.option_strings:
                takes_value = action.nargs != 0
                for flag in action.option_strings:
                    spec.options.append((flag, action.help or ""))
                    if takes_value:
                        spec.valued.append(flag)
                        if action.dest in FILE_DESTS:
                            spec.file_options.append(flag)
                        if action.choices:
                            spec.choices[flag] = [str(c) for c in action.choices]
                        elif action.dest == "status":
                            spec.choices[flag] = list(STATUS_CHOICES)
            elif action.dest in FILE_DESTS:
                spec.files = True
            elif action.choices:
                spec.commands.extend((str(choice), "") for choice in action.choices)   # `completion bash|zsh`

    walk(parser, "")
    return specs


def _words(items: Iterable[str]) -> str:
    return " ".join(items)


def bash_completion(parser: argparse.ArgumentParser) -> str:
    specs = command_specs(parser)
    cases, choices = [], []
    for path, spec in specs.items():
        cases.append(f'    "{path}") cmds="{_words(n for n, _ in spec.commands)}"; '
                     f'opts="{_words(f for f, _ in spec.options)}"; valued=" {_words(spec.valued)} "; '
                     f'fileopts=" {_words(spec.file_options)} "; files={int(spec.files)} ;;')
        choices += [f'    "{path}|{flag}") echo "{_words(values)}" ;;' for flag, values in spec.choices.items()]
    return BASH_TEMPLATE.replace("@CASES@", "\n".join(cases)).replace("@CHOICES@", "\n".join(choices))


def _zsh_item(name: str, help_text: str) -> str:
    description = " ".join(help_text.split()).replace("\\", "\\\\").replace(":", "\\:").replace("'", "'\\''")
    return f"'{name}:{description[:100]}'"


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    specs = command_specs(parser)
    cases, choices = [], []
    for path, spec in specs.items():
        cases.append(f'    "{path}") cmds=({" ".join(_zsh_item(n, h) for n, h in spec.commands)}); '
                     f'opts=({" ".join(_zsh_item(f, h) for f, h in spec.options)}); '
                     f'valued=({_words(spec.valued)}); fileopts=({_words(spec.file_options)}); '
                     f'files={int(spec.files)} ;;')
        choices += [f'    "{path}|{flag}") echo "{_words(values)}" ;;' for flag, values in spec.choices.items()]
    return ZSH_TEMPLATE.replace("@CASES@", "\n".join(cases)).replace("@CHOICES@", "\n".join(choices))


def _print_completion(shell: str) -> int:
    parser = build_parser()
    print(bash_completion(parser) if shell == "bash" else zsh_completion(parser), end="")
    return EXIT_OK


BASH_TEMPLATE = r"""# bash completion for orchestrator (generated by `orchestrator completion bash`)
_orchestrator_spec() {
  case "$1" in
@CASES@
    *) cmds=""; opts=""; valued=" "; fileopts=" "; files=0 ;;
  esac
}

_orchestrator_choices() {
  case "$1|$2" in
@CHOICES@
  esac
}

_orchestrator() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
  local cmdpath="" word i cmds opts valued fileopts files
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="${COMP_WORDS[i]}"
    _orchestrator_spec "$cmdpath"
    if [[ "$valued" == *" $word "* ]]; then
      ((i++))
    elif [[ "$word" != -* && " $cmds " == *" $word "* ]]; then
      cmdpath="${cmdpath:+$cmdpath }$word"
    fi
  done
  _orchestrator_spec "$cmdpath"
  COMPREPLY=()
  if [[ "$valued" == *" $prev "* ]]; then
    local values
    values="$(_orchestrator_choices "$cmdpath" "$prev")"
    if [[ -n "$values" ]]; then
      COMPREPLY=($(compgen -W "$values" -- "$cur"))
    elif [[ "$fileopts" == *" $prev "* ]]; then
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -f -- "$cur"))
    fi
  elif [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -n "$cmds" ]]; then
    COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
  elif ((files)); then
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}

complete -F _orchestrator orchestrator
"""

ZSH_TEMPLATE = r"""#compdef orchestrator
# zsh completion for orchestrator (generated by `orchestrator completion zsh`)
_orchestrator_spec() {
  case "$1" in
@CASES@
    *) cmds=(); opts=(); valued=(); fileopts=(); files=0 ;;
  esac
}

_orchestrator_choices() {
  case "$1|$2" in
@CHOICES@
  esac
}

_orchestrator() {
  local cmdpath="" word i files=0
  local -a cmds opts valued fileopts names values
  for ((i = 2; i < CURRENT; i++)); do
    word="${words[i]}"
    _orchestrator_spec "$cmdpath"
    names=(${cmds%%:*})
    if (( ${valued[(Ie)$word]} )); then
      ((i++))
    elif [[ "$word" != -* ]] && (( ${names[(Ie)$word]} )); then
      cmdpath="${cmdpath:+$cmdpath }$word"
    fi
  done
  _orchestrator_spec "$cmdpath"
  local prev="${words[CURRENT-1]}"
  if (( ${valued[(Ie)$prev]} )); then
    values=(${=$(_orchestrator_choices "$cmdpath" "$prev")})
    if (( ${#values} )); then
      compadd -a values
    elif (( ${fileopts[(Ie)$prev]} )); then
      _files
    fi
  elif [[ "$PREFIX" == -* ]]; then
    _describe -t options 'option' opts
  elif (( ${#cmds} )); then
    _describe -t commands 'command' cmds
  elif (( files )); then
    _files
  fi
}

if [[ "$funcstack[1]" == "_orchestrator" ]]; then
  _orchestrator "$@"
else
  compdef _orchestrator orchestrator
fi
"""


def run_node(args: argparse.Namespace) -> int:
    from ..config import NodeConfig
    from ..cluster.event_loop import loop_factory
    from ..cluster.logs import setup_logging
    from ..handlers import serving_as
    from ..node import Node

    try:
        config = NodeConfig.load(args.config, node_id=args.node_id, listen=args.listen, advertise=args.advertise,
                                 http_listen=args.http_listen,
                                 redis_url=args.redis_url, redis_sentinels=args.redis_sentinels,
                                 redis_master=args.redis_master, etcd_endpoints=args.etcd_endpoints,
                                 redis_min_replicas=args.redis_min_replicas,
                                 redis_replica_timeout_ms=args.redis_replica_timeout_ms,
                                 cluster=args.cluster, lease_ttl_s=args.lease_ttl_s, log_level=args.log_level,
                                 leader_redis_timeout_s=args.leader_redis_timeout_s,
                                 retention_s=args.retention_s, archive_dir=args.archive_dir,
                                 log_format=args.log_format, trace_file=args.trace_file,
                                 http_task_concurrency=args.http_task_concurrency, tokens_file=args.tokens_file,
                                 http_task_allow_cidrs=args.http_task_allow_cidrs,
                                 tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_key_file,
                                 tls_ca_file=args.tls_ca_file, allow_plaintext=args.allow_plaintext,
                                 **{name: getattr(args, name) for name in INFRASTRUCTURE_SECURITY},
                                 **{name: getattr(args, name) for name in STORE_LIMIT_FLAGS})
        setup_logging(config.node_id, config.log_level, config.log_format)
        serving_as(config.node_id)
        node = Node(config)
    except (ValueError, OSError) as exc:   # a setting, or a file it names, that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(node.run_until_signalled())
    return 0

