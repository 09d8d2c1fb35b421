"""The `orchestrator` command: run a node, manage definitions and workflows, watch the cluster.

Output is for people on a terminal (tables, a tree of tasks, coloured statuses, "3 s ago") and
JSON when stdout is not a terminal, so that scripts and pipes get what they always got; --json
and --table choose, before or after the command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text

from .. import __version__
from .views.cluster import cluster_view
from .views.definitions import definition_view, taskdefs_view, validation_view, workflowdefs_view
from .views.search import operation_view, search_view
from .views.watch import show_changes
from .views.workflow import started_view, workflow_view
from .client import call, connect
from .inputs import STATUS_CHOICES, UsageError, read_all_documents, read_documents, json_arg, status_arg, when_arg
from .output import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_STILL_RUNNING, EXIT_USAGE, Action, Reply, View
from .output import console
from .completion import add_completion
from .events import add_event_commands
from ..core.statuses import TERMINAL_WORKFLOW

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
         view=cluster_view)
    _add(cluster, "step-down", "ask the leader to resign; another member takes over", _step_down,
         view=lambda out: Text(out["detail"]))
    add_event_commands(commands, _group, _add, json_arg, read_all_documents)
    add_completion(commands, parser)
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
         lambda c, a: [c.register_task_def(d) for d in read_all_documents(a.files)], files=True, view=taskdefs_view)
    _add(taskdef, "get", "show one task definition", lambda c, a: c.get_task_def(a.name), with_name=True,
         view=definition_view)
    _add(taskdef, "list", "list task definitions", lambda c, a: c.list_task_defs(), view=taskdefs_view)

    wfdef = _group(commands, "workflowdef", "workflow definitions")
    _add(wfdef, "register", "register workflow definitions from JSON/YAML files",
         lambda c, a: [c.register_workflow_def(d) for d in _dependencies_first(read_all_documents(a.files))],
         files=True, view=workflowdefs_view)
    _add(wfdef, "validate", "check workflow definitions without registering them; exits 1 if any is invalid",
         _validate, files=True, view=validation_view)
    _add(wfdef, "get", "show a workflow definition (latest version unless --version)",
         lambda c, a: c.get_workflow_def(a.name, a.version), with_name=True, version=True, view=definition_view)
    _add(wfdef, "list", "list workflow definitions", lambda c, a: c.list_workflow_defs(), view=workflowdefs_view)


def _add_workflows(commands: Any) -> None:
    workflow = _group(commands, "workflow", "workflows")
    _add_start(workflow)
    _add(workflow, "get", "show a workflow with its tasks (a tree of tasks and their attempts)",
         lambda c, a: c.get_workflow(a.id), wid=True, view=workflow_view)
    _add_search(workflow)
    terminate = _add(workflow, "terminate", "terminate a running workflow, or with --all every one that matches"
                     + OPERATION_NOTE, _operation("terminate", "terminated", lambda c, a, wid: c.terminate_workflow(
                         wid, a.reason, compensate=a.compensate)), wid=True, bulk=True, view=operation_view)
    terminate.add_argument("--reason", default="terminated from the CLI", help="why, stored on the workflow")
    terminate.add_argument("--compensate", action="store_true", help="undo the completed steps first (saga)")
    _add_operations(workflow)
    signal = _add(workflow, "signal", "complete a waiting WAIT or HUMAN task; prints the workflow with its tasks",
                  lambda c, a: c.signal_task(a.id, a.task, output=json_arg("--output", a.output), failed=a.failed,
                                             reason=a.reason), wid=True, view=workflow_view)
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
                 with_name=True, version=True, view=started_view)
    start.add_argument("--input", default="{}", help="workflow input as a JSON object, or @file.json")
    start.add_argument("--correlation-id", default="", help="your own id for the workflow, to search by")
    start.add_argument("--idempotency-key", default="",
                       help="a start with a key seen before returns the first workflow (default: a fresh key)")
    start.add_argument("--wait", type=float, default=0.0,
                       help="wait up to N seconds for the end and print the workflow (start-and-wait); "
                            "exit code 3 if it is still running then")


def _add_search(workflow: Any) -> None:
    search = _add(workflow, "search", "search workflows, newest first", _search, view=search_view)
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
         view=operation_view)
    _add(workflow, "resume", "resume a paused workflow" + OPERATION_NOTE,
         _operation("resume", "resumed", lambda c, a, wid: c.resume_workflow(wid)), wid=True, bulk=True,
         view=operation_view)
    _add(workflow, "retry", "retry a FAILED or TIMED_OUT workflow from its failed tasks, or with --all every one "
         "that matches" + OPERATION_NOTE,
         _operation("retry", "retried", lambda c, a, wid: c.retry_workflow(wid)), wid=True, bulk=True,
         view=operation_view)
    restart = _add(workflow, "restart", "run an ended workflow again from the start" + OPERATION_NOTE,
                   _operation("restart", "restarted", lambda c, a, wid: c.restart_workflow(
                       wid, use_latest_definition=a.latest)), wid=True, view=workflow_view)
    restart.add_argument("--latest", action="store_true", help="with the latest version of its definition")
    rerun = _add(workflow, "rerun", "run again from a task (with new input)" + OPERATION_NOTE,
                 _operation("rerun", "rerun", lambda c, a, wid: c.rerun_workflow(
                     wid, a.task, json_arg("--input", a.input) if a.input else None)), wid=True, view=workflow_view)
    rerun.add_argument("task", help="task reference (with __<n> inside loops)")
    rerun.add_argument("--input", default="", help="new task input as a JSON object, or @file.json")
    skip = _add(workflow, "skip", "skip a task" + OPERATION_NOTE,
                _operation("skip", "skipped", lambda c, a, wid: c.skip_task(wid, a.task)), wid=True,
                view=workflow_view)
    skip.add_argument("task", help="task reference")


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
    show_changes(client.watch_workflow(args.id, include_tasks=True), args)


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
    err.print(search_view({"workflows": matches[:10], "next_page_token": ""}))
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

