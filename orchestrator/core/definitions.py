"""Task and workflow definitions: parsing (JSON or YAML), validation and defaults.

Validation collects every problem, each naming the task reference and the field,
so that one registration attempt tells the author everything to fix. Expressions
(`${...}` templates and the safe expressions of SWITCH, DO_WHILE and INLINE) are
checked here, so a bad expression is a registration error, not a runtime surprise.
Normalised definitions carry all defaults explicitly: what is stored is what runs.

Nothing here recurses into a document before its depth and size have been checked without
recursion (`limits.MAX_DOCUMENT_DEPTH`, `MAX_DOCUMENT_NODES`), so a hostile document gets a
problem, never a RecursionError or minutes of work. The other limits are in `limits.py`.

Conductor's definitions are accepted as exported (`check_workflow_def` returns warnings
besides problems). Conductor's fields with behaviour here are checked and used (embedded
`taskDefinition`, `inputTemplate`, `pollTimeoutSeconds`, `failureWorkflowVersion`, parameters
written inside `inputParameters`, JavaScript evaluators, jq, expressions for sub-workflow and
failure-workflow names, inline sub-workflows); its other fields are kept and shown back
(ownerEmail, createTime, ...) or, when set to something without effect here, reported in a
warning with the reason; fields of other task types left at their defaults (exports write them
all) are dropped with one warning. A definition that declares `schemaVersion` (every Conductor
export does) is read as Conductor reads it: a `${...}` naming a task that has not run resolves
to null (a warning), and a DO_WHILE condition without `evaluatorType` is JavaScript. Conductor's
HTTP and HTTP_POLL tasks are run by the nodes (`cluster/http_tasks.py`); its other task types that
need I/O (Kafka, JDBC, model providers, ... `DELEGATED_KINDS`) run on workers of that task type; EVENT publishes
to the cluster's own event bus (`sink`: a topic), in the decision that completes it.
"""

from __future__ import annotations

import json
import re
from collections import deque
from itertools import accumulate, chain
from typing import Any, NamedTuple, cast
from collections.abc import Iterable, Iterator, Mapping

import yaml

from .errors import InvalidArgument
from .kinds import KINDS, OWN_TYPE, Kind, kind_for, kind_of, nested_task_fields, type_names
from .kinds.checks import JAVASCRIPT
from .kinds.delegated import DELEGATED_KINDS
from .kinds.http import HTTP_KINDS
from .kinds.refs import SURROGATE, literal, version_of
from .kinds.wait import wait_literal
from .limits import (MAX_BACKOFF_SCALE_FACTOR, MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_NODES, MAX_DURATION_SECONDS,
                     MAX_LOOP_ITERATIONS, MAX_NESTING_DEPTH)
from .schema import TaskDef, WorkflowDef, WorkflowTask
from .templates import TASK_ID, TemplateError, references_in
from .values import MAX_VERSION, finite_number, is_default, number_problem, show

__all__ = ["DELEGATED_KINDS", "HTTP_KINDS", "MAX_LOOP_ITERATIONS", "MAX_VERSION", "WorkflowCheck", "check_task_def",
           "check_workflow_def", "document_problems", "iter_nodes", "iter_tasks", "needs_every_task_def",
           "needs_every_workflow_def", "normalise_dynamic_task", "normalise_task_def", "normalise_workflow_def",
           "parse_document", "referenced_task_names", "referenced_workflow_names", "snapshot_workflow_refs",
           "task_def_warnings", "validate_workflow_def", "wait_literal", "waited_topics", "workflow_cycle",
           "workflows_to_fetch"]

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")   # \Z: `$` would also match before a final newline
RETRY_LOGICS = ("FIXED", "LINEAR_BACKOFF", "EXPONENTIAL_BACKOFF")
TASK_TIMEOUT_POLICIES = ("RETRY", "TIME_OUT_WF", "ALERT_ONLY")
WORKFLOW_TIMEOUT_POLICIES = ("TIME_OUT_WF", "ALERT_ONLY")

# Task kinds (one module each, kinds/): which run on workers, which the decider completes
# itself, which hold other tasks, and the fields of each.
TASK_KINDS = type_names()
WORKER_KINDS = type_names("worker")
SYSTEM_KINDS = type_names("system")
CONTAINER_KINDS = type_names("container")
WORKER_TASK_KINDS = frozenset(name for kind in KINDS if kind.runs_on_workers for name in kind.names)

COMMON_TASK_FIELDS = {"name", "taskReferenceName", "type", "inputParameters", "description", "optional",
                      "startDelay", "retryCount", "compensation", "taskDefinition"}
KIND_FIELDS: dict[str, set[str]] = {name: set(kind.fields) for kind in KINDS for name in kind.names}

# Fields of Conductor's WorkflowTask that a task of another type may carry (exports write all
# of them, at their defaults). Left at its default such a field means nothing and is dropped
# (one warning per definition lists them); set to something else it is reported with the
# reason it has no effect here.
CONDUCTOR_TASK_FIELDS: dict[str, str] = {
    "decisionCases": "", "defaultCase": "", "forkTasks": "", "joinOn": "", "loopOver": "",
    "defaultExclusiveJoinTask": "", "loopCondition": "", "evaluatorType": "", "expression": "",
    "caseValueParam": "", "caseExpression": "", "scriptExpression": "", "dynamicTaskNameParam": "",
    "dynamicForkTasksParam": "", "dynamicForkTasksInputParamName": "", "dynamicForkJoinTasksParam": "",
    "sink": "", "subWorkflowParam": "", "items": "", "maxIterations": "", "duration": "", "until": "",
    "terminationStatus": "", "terminationReason": "", "workflowOutput": "", "forkTaskName": "",
    "forkTaskInputs": "",
    "asyncComplete": "asyncComplete is not supported: a system task completes when its work is done, and a worker "
                     "task (HTTP and the other I/O types included) when its worker reports",
    "onStateChange": "task state-change events are not published by this version",
    "permissive": "a permissive task's failure fails the workflow at once here (Conductor lets the other "
                  "branches finish first)",
    "joinMode": "a JOIN is evaluated at once whenever its branches change",
    "joinStatus": "it has no effect here",
    "cacheConfig": "task results are not cached by this version",
    "rateLimited": "", "callbackFromWorker": "", "workflowTaskType": "",
}
_SILENT_TASK_FIELDS = {"rateLimited", "callbackFromWorker", "workflowTaskType"}

# Workflow definition fields Conductor has besides ours: kept and shown back as written. The
# ones in WORKFLOW_UNENFORCED have no effect here; a value other than the default is reported.
WORKFLOW_KEPT_FIELDS = {"ownerEmail", "createTime", "updateTime", "createdBy", "updatedBy", "metadata", "ownerApp",
                        "tags", "accessPolicy", "enforceSchema", "schemaVersion", "restartable", "inputTemplate",
                        "failureWorkflowVersion"}
WORKFLOW_UNENFORCED: dict[str, str] = {
    "workflowStatusListenerEnabled": "the workflow status listener is not supported (no callback is made)",
    "workflowStatusListenerSink": "the workflow status listener is not supported (no callback is made)",
    "rateLimitConfig": "workflow rate limits are not enforced (task definitions' concurrentExecLimit and "
                       "rateLimitPerFrequency are)",
    "inputSchema": "input schemas are not checked",
    "outputSchema": "output schemas are not checked",
    "maskedFields": "fields are not masked in what the API shows",
    "cacheConfig": "workflow results are not cached",
    "onStateChange": "state-change events are not published by this version",
}

TASK_DEF_DEFAULTS: dict[str, Any] = {
    "description": "",
    "retryCount": 3,
    "retryLogic": "FIXED",
    "retryDelaySeconds": 1.0,
    "backoffScaleFactor": 1.0,
    "maxRetryDelaySeconds": 300.0,
    "responseTimeoutSeconds": 60.0,
    "timeoutSeconds": 0.0,
    "timeoutPolicy": "RETRY",
    "rateLimitPerFrequency": 0,
    "rateLimitFrequencyInSeconds": 1.0,
    "concurrentExecLimit": 0,
}

WORKFLOW_DEF_DEFAULTS: dict[str, Any] = {
    "description": "",
    "version": 1,
    "inputParameters": [],
    "outputParameters": {},
    "timeoutSeconds": 0.0,
    "timeoutPolicy": "TIME_OUT_WF",
    "failureWorkflow": "",
    "variables": {},
}


def parse_document(text: str) -> dict[str, Any]:
    """Read a JSON or YAML document that must hold one object.

    Both parsers recurse once per level of nesting, so the depth is measured first without
    recursion (on the text for JSON, on the YAML event stream for YAML); what they build is
    then measured again, counting YAML aliases each time they are used.
    """
    too_deep = InvalidArgument(f"document: lists and objects nest deeper than the limit of {MAX_DOCUMENT_DEPTH} "
                               "levels")
    try:
        if text.lstrip().startswith(("{", "[")) and _json_depth(text) > MAX_DOCUMENT_DEPTH:
            raise too_deep
        value = json.loads(text)
    except ValueError:
        try:
            if _yaml_depth(text) > MAX_DOCUMENT_DEPTH:
                raise too_deep from None
            value = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as exc:   # ValueError: e.g. an integer of 5,000 digits
            raise InvalidArgument(f"document is neither valid JSON nor valid YAML: {exc}") from exc
        except RecursionError:   # the checks above should make this unreachable
            raise too_deep from None
    except RecursionError:
        raise too_deep from None
    if not isinstance(value, dict):
        raise InvalidArgument("a definition document must be a JSON/YAML object, "
                              f"got {type(value).__name__}")
    problems, verdict = document_problems(value, "document")
    if verdict in (TOO_DEEP, TOO_BIG):   # a text that is not Unicode is the validator's to report
        _raise_if(problems, "invalid document")
    return value


_ESCAPED_BACKSLASH = re.compile(r"\\\\")
_ESCAPED_QUOTE = re.compile(r'\\"')
_JSON_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _json_depth(text: str) -> int:
    """How deeply the brackets of a JSON text nest, outside strings, in linear time (no
    backtracking: escapes are removed before strings are)."""
    text = _ESCAPED_QUOTE.sub("", _ESCAPED_BACKSLASH.sub("", text))
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _yaml_depth(text: str) -> int:
    """How deeply a YAML document's collections nest, from its event stream (the parser is a
    state machine; only building the objects recurses). Raises the YAMLError of a syntax
    error found on the way, sooner than the pure-Python parser of safe_load would."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = deepest = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DOCUMENT_DEPTH:
                break
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return deepest


_SCALARS = (str, int, float, bool, type(None))


def _printable(text: str) -> str:
    """`text` as a message may quote it: a lone surrogate (which no UTF-8 answer can carry) escaped."""
    return SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _where(ref: Any, path: str) -> str:
    """How a problem names a task: by its reference when it has a sensible one, and its path."""
    return f"task '{_printable(ref)}' ({path})" if isinstance(ref, str) and len(ref) <= 200 else path


def _path_text(keys: Iterable[Any]) -> str:
    """tasks[0].inputParameters.x, from the keys on the way down."""
    text = ""
    for key in keys:
        key = _printable(key) if isinstance(key, str) else key
        text += f"[{key}]" if isinstance(key, int) and not isinstance(key, bool) else (
            f".{key}" if text else str(key))
    return text or "(the top)"


TOO_DEEP, TOO_BIG, NOT_JSON = "too deep", "too big", "not JSON"


def document_problems(document: Any, where: str) -> tuple[list[str], str]:
    """Depth, size and value types of a document, measured without recursion.

    Returns (problems, verdict): verdict is TOO_DEEP or TOO_BIG when nothing may walk the
    document recursively, NOT_JSON when it holds what JSON cannot (a YAML date, a key that is not
    text) or a text with a lone surrogate (JSON's `"\\ud800"` spells one; it is no Unicode text,
    so it can be neither stored nor answered): nothing should read on, else "".
    """
    problems: list[str] = []
    trail: list[tuple[int, Any]] = [(-1, None)]        # node -> (its parent node, its key there)
    stack: list[tuple[Any, int, int]] = [(document, 1, 0)]  # (value, depth, node)
    too_deep: int | None = None
    count = 0
    not_json = 0

    def path(node: int) -> str:
        keys = []
        while node > 0:
            node, key = trail[node]
            keys.append(key)
        return _path_text(reversed(keys))

    while stack:
        value, depth, node = stack.pop()
        count += 1
        if isinstance(value, (dict, list)):
            if depth > MAX_DOCUMENT_DEPTH:
                too_deep = node if too_deep is None else too_deep
                continue
            if count + len(stack) + len(value) > MAX_DOCUMENT_NODES:   # all of them will be counted
                return [f"{where}: holds more than the limit of {MAX_DOCUMENT_NODES} values (each use of a YAML "
                        "alias counts again)"], TOO_BIG
            items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
            for key, item in reversed(items):   # reversed: popped in document order
                trail.append((node, key))
                stack.append((item, depth + 1, len(trail) - 1))
                if not isinstance(value, dict):
                    continue
                if not isinstance(key, str):   # YAML's `1:`, `true:`, `~:`; JSON and the API have none
                    not_json += 1
                    if not_json <= 5:
                        problems.append(f"{where}: {path(node)}: the key {show(key)} is not text; quote it")
                elif SURROGATE.search(key):
                    not_json += 1
                    if not_json <= 5:
                        problems.append(f"{where}: {path(node)}: the key {show(key)} holds a lone surrogate "
                                        "(half of a UTF-16 pair), which is not Unicode text")
        elif isinstance(value, str) and SURROGATE.search(value):
            not_json += 1
            if not_json <= 5:
                problems.append(f"{where}: {path(node)}: {show(value)} holds a lone surrogate (half of a UTF-16 "
                                "pair), which is not Unicode text")
        elif not isinstance(value, _SCALARS):
            not_json += 1
            if not_json <= 5:
                problems.append(f"{where}: {path(node)}: {show(value)} ({type(value).__name__}) is not a JSON "
                                "value; quote it to make it text")
    if too_deep is not None:
        problems.insert(0, f"{where}: lists and objects nest deeper than the limit of {MAX_DOCUMENT_DEPTH} levels "
                           f"(at {path(too_deep)})")
        return problems, TOO_DEEP
    return problems, NOT_JSON if not_json else ""


def _non_finite(value: Any) -> str | None:
    """Where `value` holds NaN, an infinity or a number too big for a double, if it does
    (the value has passed `document_problems`, so it is shallow enough to walk)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, keys = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, (*keys, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*keys, i)) for i, v in enumerate(item))
        elif not finite_number(item):
            at = f"'{_path_text(keys)}' is " if keys else ""
            return f"{at}{show(item)}, not a finite number (NaN, Infinity and numbers beyond 1e308 cannot be stored)"
    return None


# Task definition fields Conductor has besides ours. The first group has behaviour here; the
# second is kept and shown back as written, with no behaviour (bookkeeping, documentation);
# the third is kept but has no effect here, and a value other than its default is reported in
# a warning.
TASK_DEF_BEHAVIOUR_FIELDS = {"inputTemplate", "pollTimeoutSeconds"}
TASK_DEF_KEPT_FIELDS = {"ownerEmail", "createTime", "updateTime", "createdBy", "updatedBy", "inputKeys",
                        "outputKeys", "ownerApp", "tags", "executionNameSpace", "isolationGroupId", "baseType",
                        "enforceSchema"}
TASK_DEF_UNENFORCED_FIELDS = {
    "totalTimeoutSeconds": "a bound on all attempts together is not enforced (each attempt's timeoutSeconds is)",
    "inputSchema": "input schemas are not checked",
    "outputSchema": "output schemas are not checked",
}
MAX_RETRY_COUNT = 100
_JAVA_INT = 2**31 - 1


def check_task_def(raw: Mapping[str, Any]) -> tuple[TaskDef, list[str], list[str]]:
    """Validate a task definition and fill in its defaults: (definition, problems, warnings).
    The definition has the TaskDef shape only when there are no problems."""
    problems, verdict = document_problems(raw, "task definition")
    if verdict:
        return cast(TaskDef, dict(raw)), problems, []
    warnings: list[str] = []
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("task definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out = {**TASK_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"task definition '{name}'"
    retries = out.get("retryCount")
    if isinstance(retries, int) and not isinstance(retries, bool) and MAX_RETRY_COUNT < retries <= _JAVA_INT:
        warnings.append(f"{where}: 'retryCount' {retries} is above the limit of {MAX_RETRY_COUNT}; "
                        f"{MAX_RETRY_COUNT} is used")
        out["retryCount"] = MAX_RETRY_COUNT
    _check_int(out, "retryCount", where, problems, low=0, high=MAX_RETRY_COUNT)
    _check_choice(out, "retryLogic", RETRY_LOGICS, where, problems)
    _check_choice(out, "timeoutPolicy", TASK_TIMEOUT_POLICIES, where, problems)
    for field in ("retryDelaySeconds", "maxRetryDelaySeconds", "timeoutSeconds"):
        _check_number(out, field, where, problems, low=0.0, high=MAX_DURATION_SECONDS)
    _check_number(out, "backoffScaleFactor", where, problems, low=0.0, high=MAX_BACKOFF_SCALE_FACTOR)
    _check_number(out, "responseTimeoutSeconds", where, problems, low=0.1, high=MAX_DURATION_SECONDS)
    _check_number(out, "rateLimitFrequencyInSeconds", where, problems, low=0.001, high=MAX_DURATION_SECONDS)
    _check_int(out, "rateLimitPerFrequency", where, problems, low=0, high=10**9)
    _check_int(out, "concurrentExecLimit", where, problems, low=0, high=10**9)
    if "pollTimeoutSeconds" in out:
        _check_number(out, "pollTimeoutSeconds", where, problems, low=0.0, high=MAX_DURATION_SECONDS)
    if "inputTemplate" in out:
        if not isinstance(out["inputTemplate"], dict):
            problems.append(f"{where}: 'inputTemplate' must be an object (default input values)")
        elif (bad := _non_finite(out["inputTemplate"])):
            problems.append(f"{where}: 'inputTemplate': {bad}")
        elif not out["inputTemplate"]:
            del out["inputTemplate"]
    if not isinstance(out["description"], str):
        problems.append(f"{where}: 'description' must be a string")
    for field, reason in TASK_DEF_UNENFORCED_FIELDS.items():
        if out.get(field) not in (None, 0, 0.0, {}, [], ""):
            warnings.append(f"{where}: '{field}' is kept but has no effect here: {reason}")
    known = set(TASK_DEF_DEFAULTS) | TASK_DEF_BEHAVIOUR_FIELDS | TASK_DEF_KEPT_FIELDS | set(TASK_DEF_UNENFORCED_FIELDS)
    unknown = sorted(set(out) - known - {"name"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    if not problems and (bad := _non_finite(out)):   # in a field kept as written (ownerEmail, tags, ...)
        problems.append(f"{where}: {bad}")
    return cast(TaskDef, out), problems, warnings


def normalise_task_def(raw: Mapping[str, Any]) -> TaskDef:
    """Validate a task definition and fill in its defaults."""
    out, problems, _ = check_task_def(raw)
    _raise_if(problems, "invalid task definition")
    return out   # every field checked


def task_def_warnings(raw: Mapping[str, Any]) -> list[str]:
    """What a (valid) task definition holds that has no effect here, one line each."""
    return check_task_def(raw)[2]


class WorkflowCheck(NamedTuple):
    """What checking a workflow definition found: the normalised definition (of the WorkflowDef
    shape only when `problems` is empty), the problems (each makes it invalid) and the
    warnings (fields kept or ignored without effect here, Conductor semantics that differ)."""

    definition: WorkflowDef
    problems: list[str]
    warnings: list[str]


class _Validator:
    """Walks a workflow definition once, collecting problems and normalising each task.

    `conductor` (the definition declares `schemaVersion`, as every Conductor export does) reads
    it as Conductor would: a `${...}` naming a task that has not run resolves to null (a
    warning, not a problem), and a DO_WHILE condition without `evaluatorType` is JavaScript."""

    def __init__(self, task_defs: Mapping[str, Any], workflow_defs: Mapping[str, Any], *,
                 conductor: bool = False) -> None:
        self.task_defs = task_defs
        self.workflow_defs = workflow_defs
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.refs: set[str] = set()
        self.all_refs: set[str] = set()
        self.counter = 0
        self.conductor = conductor
        self.defaulted: set[str] = set()      # Conductor fields left at their defaults, dropped

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def sequence(self, tasks: Any, where: str, known: set[str]) -> list[dict[str, Any]]:
        """Validate a list of tasks run in order; `known` grows with each reference."""
        if not isinstance(tasks, list) or not tasks:
            self.problems.append(f"{where}: must be a non-empty list of tasks")
            return []
        out: list[dict[str, Any]] = []
        for index, task in enumerate(tasks):
            previous = out[-1] if out else None
            out.append(self.task(task, f"{where}[{index}]", known, previous))
        return out

    def task(self, task: Any, path: str, known: set[str], previous: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(task, dict):
            self.problems.append(f"{path}: must be an object")
            return {}
        ref = task.get("taskReferenceName")
        where = _where(ref, path)
        self._check_ref(ref, where)
        kind = task.get("type", "SIMPLE")
        registered = kind_of(kind)
        custom = self._custom_type(task, kind)
        if custom:
            self.warn(f"{where}: type '{kind}' is not one of Conductor's; it runs on workers that serve task "
                      f"type '{kind}', under the task definition '{custom}'")
        elif registered is None:
            self.problems.append(f"{where}: 'type' {show(kind)} is not supported; use one of "
                                 f"{', '.join(TASK_KINDS)} (a type of your own runs on workers that serve it once "
                                 "a task definition named after the type is registered, or, in a Conductor "
                                 "definition, one named after the task, as Conductor requires)")
        out: dict[str, Any] = {"name": task.get("name") or ref, "taskReferenceName": ref,
                               "type": kind if isinstance(kind, str) else "?",
                               "inputParameters": task.get("inputParameters", {}),
                               "description": task.get("description", ""),
                               "optional": False if task.get("optional") is None else task["optional"],
                               "startDelay": task.get("startDelay") or 0}
        if out["inputParameters"] is None:
            out["inputParameters"] = {}
        if out["description"] is None:
            out["description"] = ""
        checked_as = registered or (OWN_TYPE if custom else None)
        self._common_fields(task, out, where, out["type"], known)
        self._other_fields(task, out, where, out["type"], checked_as.fields if checked_as else frozenset())
        if checked_as is not None:
            checked_as.validate(self, task, out, where, known, previous)
        if isinstance(ref, str):
            known.add(ref)
        return out

    def _custom_type(self, task: dict[str, Any], kind: Any) -> str:
        """The task definition a task of a type that is not Conductor's runs under ('' when
        none): one named after the type, or in a Conductor definition (as Conductor's
        user-defined tasks) one named after the task, or the task's embedded one."""
        if not isinstance(kind, str) or kind_of(kind) is not None or not NAME.match(kind):
            return ""
        if kind in self.task_defs:
            return kind
        name = task.get("name")
        if self.conductor and isinstance(name, str) and (name in self.task_defs
                                                         or isinstance(task.get("taskDefinition"), dict)):
            return name
        return ""

    def _other_fields(self, task: dict[str, Any], out: dict[str, Any], where: str, kind: str,
                      fields: frozenset[str]) -> None:
        """Fields that do not belong to this kind: Conductor's left at defaults are dropped,
        Conductor's with a value are dropped with a warning saying why, others are problems."""
        unknown = []
        for field in sorted(set(task) - COMMON_TASK_FIELDS - fields):
            value = task[field]
            if field not in CONDUCTOR_TASK_FIELDS:
                unknown.append(field)
            elif field in _SILENT_TASK_FIELDS or is_default(value):
                self.defaulted.add(field)
            else:
                reason = CONDUCTOR_TASK_FIELDS[field] or f"it has no meaning for a {kind} task"
                self.warn(f"{where}: '{field}' is ignored: {reason}")
        if unknown:
            self.problems.append(f"{where}: unknown field(s) {', '.join(unknown)} for type {kind}")

    def _check_ref(self, ref: Any, where: str) -> None:
        if not isinstance(ref, str) or not NAME.match(ref) or "__" in ref:
            self.problems.append(f"{where}: 'taskReferenceName' is required: letters, digits, '_', '.', '-' "
                                 "(and no '__', which marks loop iterations)")
        elif ref in self.refs:
            self.problems.append(f"{where}: 'taskReferenceName' '{ref}' is used twice")
        elif ref == "workflow":
            self.problems.append(f"{where}: 'workflow' is reserved and cannot be a taskReferenceName")
        else:
            self.refs.add(ref)

    def _common_fields(self, task: dict[str, Any], out: dict[str, Any], where: str, kind: str,
                       known: set[str]) -> None:
        if not isinstance(out["inputParameters"], dict):
            self.problems.append(f"{where}: 'inputParameters' must be an object")
            out["inputParameters"] = {}
        own = out["taskReferenceName"]
        # A loop's inputs are resolved again for each condition, when the loop itself exists.
        visible = known | {own} if kind_for(kind).loops and isinstance(own, str) else known
        self.template(out["inputParameters"], f"{where}: 'inputParameters'", visible)
        if not isinstance(out["optional"], bool):
            self.problems.append(f"{where}: 'optional' must be true or false")
        problem = number_problem(out["startDelay"], "startDelay", low=0, high=MAX_DURATION_SECONDS,
                                  unit=" of seconds")
        if problem:
            self.problems.append(f"{where}: {problem}")
        if not isinstance(out["description"], str):
            self.problems.append(f"{where}: 'description' must be a string")
        if "retryCount" in task and task["retryCount"] is not None:
            value = task["retryCount"]
            if isinstance(value, int) and not isinstance(value, bool) and MAX_RETRY_COUNT < value <= _JAVA_INT:
                self.warn(f"{where}: 'retryCount' {value} is above the limit of {MAX_RETRY_COUNT}; "
                          f"{MAX_RETRY_COUNT} is used")
                value = MAX_RETRY_COUNT
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RETRY_COUNT:
                self.problems.append(f"{where}: 'retryCount' must be an integer from 0 to {MAX_RETRY_COUNT}")
            out["retryCount"] = value
        if "compensation" in task:
            own_ref = {out["taskReferenceName"]} if isinstance(out["taskReferenceName"], str) else set()
            out["compensation"] = self._compensation(task["compensation"], where, known | own_ref)
        embedded = task.get("taskDefinition")
        if embedded is not None and kind_for(kind).role == "worker":
            self._embedded_task_def(embedded, out, where)
        elif not is_default(embedded):
            self.warn(f"{where}: 'taskDefinition' is ignored: retries and timeouts of a {kind} task are not "
                      "taken from a task definition here")

    def _embedded_task_def(self, embedded: Any, out: dict[str, Any], where: str) -> None:
        """A task definition inside the workflow task (Conductor's `taskDefinition`): it wins over
        a registered one of the same name, as in Conductor."""
        if not isinstance(embedded, dict):
            self.problems.append(f"{where}: 'taskDefinition' must be an object (a task definition)")
            return
        name = out["name"] if isinstance(out["name"], str) else "?"
        definition, problems, warnings = check_task_def({**embedded, "name": embedded.get("name") or name})
        self.problems.extend(f"{where}: 'taskDefinition': {p}" for p in problems)
        for warning in warnings:
            self.warn(f"{where}: 'taskDefinition': {warning}")
        if not problems:
            out["taskDefinition"] = definition

    def _compensation(self, spec: Any, where: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            self.problems.append(f"{where}: 'compensation' must be an object with 'name' (a task definition)")
            return {}
        self.task_def_exists(spec["name"], f"{where}: 'compensation'")
        inputs = spec.get("inputParameters", {})
        if not isinstance(inputs, dict):
            self.problems.append(f"{where}: 'compensation.inputParameters' must be an object")
            inputs = {}
        self.template(inputs, f"{where}: 'compensation.inputParameters'", known)
        unknown = sorted(set(spec) - {"name", "inputParameters"})
        if unknown:
            self.problems.append(f"{where}: 'compensation' has unknown field(s) {', '.join(unknown)}")
        return {"name": spec["name"], "inputParameters": inputs}

    # ---------------------------------------------------------------- what the kinds are offered (kinds.base.Checker)

    def task_def_exists(self, name: str, where: str) -> None:
        if name not in self.task_defs:
            self.problems.append(f"{where}: no task definition named '{name}' is registered; register it first")

    def check_definition(self, raw: Any) -> WorkflowCheck:
        """A workflow definition written inside a task, checked as one of its own."""
        return check_workflow_def(raw, self.task_defs, self.workflow_defs)

    def is_task_type(self, name: Any) -> bool:
        return kind_of(name) is not None

    def template(self, template: Any, where: str, known: set[str]) -> None:
        """Every `${...}` must parse and may only name tasks that run before this point (in a
        Conductor definition such a reference resolves to null, as in Conductor: a warning);
        every number must be finite."""
        bad = _non_finite(template)
        if bad:
            self.problems.append(f"{where}: {bad}")
        try:
            for reference in references_in(template):
                if reference.root in ("workflow", TASK_ID) or reference.root in known:
                    continue
                if self.conductor:
                    later = "runs later" if reference.root in self.all_refs else "is no task of this workflow"
                    self.warn(f"{where}: '${{{reference.root}...}}' {later}; it resolves to null here (as in "
                              "Conductor)")
                else:
                    self.problems.append(f"{where}: '${{{reference.root}...}}' names no earlier task reference")
        except TemplateError as exc:
            self.problems.append(f"{where}: {exc}")


def waited_topics(definition: Mapping[str, Any]) -> set[str]:
    """The topics this (normalised) definition's tasks wait on (`Kind.topics`: a WAIT's
    `inputParameters.event`)."""
    return {topic for task in iter_nodes(definition.get("tasks") or []) for topic in _kind(task).topics(task)}


def _all_refs(tasks: Any) -> set[str]:
    return {t["taskReferenceName"] for t in iter_tasks(tasks) if isinstance(t.get("taskReferenceName"), str)}


def check_workflow_def(raw: Mapping[str, Any], task_defs: Mapping[str, Mapping[str, Any]],
                       workflow_defs: Mapping[str, Any] | None = None) -> WorkflowCheck:
    """`validate_workflow_def` with the warnings too: fields kept without effect here, fields
    ignored and why, and Conductor semantics this version does not have."""
    problems, verdict = document_problems(raw, "workflow definition")
    if verdict != TOO_BIG:   # every task above the nesting limit lies within the depth measured
        problems[:0] = _nesting_problems(raw.get("tasks"))
    if verdict:
        return WorkflowCheck(cast(WorkflowDef, dict(raw)), problems, [])
    validator = _Validator(task_defs, workflow_defs or {}, conductor="schemaVersion" in raw)
    validator.problems = problems
    validator.all_refs = _all_refs(raw.get("tasks"))
    warnings = validator.warnings
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("workflow definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out: dict[str, Any] = {**WORKFLOW_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"workflow '{name}'"
    _check_int(out, "version", where, problems, low=1, high=MAX_VERSION)
    _check_number(out, "timeoutSeconds", where, problems, low=0.0, high=MAX_DURATION_SECONDS)
    _check_choice(out, "timeoutPolicy", WORKFLOW_TIMEOUT_POLICIES, where, problems)
    if out.get("timeoutSeconds") and "timeoutPolicy" not in raw:
        validator.warn(f"{where}: no 'timeoutPolicy' with 'timeoutSeconds': TIME_OUT_WF is used (Conductor's "
                       "default is ALERT_ONLY)")
    for field in ("outputParameters", "variables"):
        if not isinstance(out[field], dict):
            problems.append(f"{where}: '{field}' must be an object")
    bad = _non_finite(out["variables"])
    if bad:
        problems.append(f"{where}: 'variables': {bad}")
    if not isinstance(out["description"], str):
        problems.append(f"{where}: 'description' must be a string")
    _conductor_workflow_fields(raw, out, where, validator)
    failure = out["failureWorkflow"]
    if failure and (not isinstance(failure, str) or (not _failure_expression(failure)
                                                     and validator.workflow_defs.get(failure) is None)):
        problems.append(f"{where}: 'failureWorkflow' names no registered workflow definition ({show(failure)})")
    known: set[str] = set()
    out["tasks"] = validator.sequence(out.get("tasks"), "tasks", known)
    validator.template(out["outputParameters"], f"{where}: 'outputParameters'", known)
    if isinstance(failure, str) and failure.startswith("${"):
        validator.template(failure, f"{where}: 'failureWorkflow'", set())
    unknown = sorted(set(out) - set(WORKFLOW_DEF_DEFAULTS) - WORKFLOW_KEPT_FIELDS - set(WORKFLOW_UNENFORCED)
                     - {"name", "tasks"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    cycle = workflow_cycle(name, out, validator.workflow_defs) if name != "?" else None
    if cycle:
        problems.append(f"{where}: workflow '{name}' would run itself: {' -> '.join(cycle)} (through sub-workflows "
                        "and failureWorkflow); a workflow must not start itself, directly or through others")
    if validator.defaulted:
        warnings.append(f"{where}: fields of other task types left at their defaults were dropped: "
                        f"{', '.join(sorted(validator.defaulted))}")
    if not problems and (bad := _non_finite(out)):   # in a field kept as written (metadata, sink, ...)
        problems.append(f"{where}: {bad}")
    return WorkflowCheck(cast(WorkflowDef, out), problems, warnings)


def _failure_expression(failure: str) -> bool:
    """`$workflow.input.name` (Conductor's form) or `${workflow.input.name}`: the failure
    workflow's name is read from the workflow's input when it fails."""
    return failure.startswith("$workflow.input.") or failure.startswith("${")


def _conductor_workflow_fields(raw: Mapping[str, Any], out: dict[str, Any], where: str,
                               validator: _Validator) -> None:
    """Conductor's workflow fields: checked when they have behaviour here, kept either way,
    reported when they are set but have no effect here."""
    problems = validator.problems
    if "schemaVersion" in raw and raw["schemaVersion"] != 2:
        problems.append(f"{where}: 'schemaVersion' must be 2 (schemaVersion 1, with paths written without "
                        f"${{...}}, is not supported; Conductor refuses it too), got {show(raw['schemaVersion'])}")
    template = out.get("inputTemplate")
    if template is not None:
        if not isinstance(template, dict):
            problems.append(f"{where}: 'inputTemplate' must be an object (default input values)")
        elif (bad := _non_finite(template)):
            problems.append(f"{where}: 'inputTemplate': {bad}")
        elif not template:
            del out["inputTemplate"]
    if "restartable" in out and not isinstance(out["restartable"], bool):
        problems.append(f"{where}: 'restartable' must be true or false")
    elif out.get("restartable") is False:
        validator.warn(f"{where}: 'restartable: false' is kept but not enforced: a restart is still accepted")
    version = out.get("failureWorkflowVersion")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or not 0 <= version <= MAX_VERSION):
        problems.append(f"{where}: 'failureWorkflowVersion' must be 0 (latest) or a version number")
    for field, reason in WORKFLOW_UNENFORCED.items():
        if field in out and not is_default(out[field]):
            validator.warn(f"{where}: '{field}' is kept but has no effect here: {reason}")


def validate_workflow_def(raw: Mapping[str, Any], task_defs: Mapping[str, Mapping[str, Any]],
                          workflow_defs: Mapping[str, Any] | None = None) -> tuple[WorkflowDef, list[str]]:
    """Check a workflow definition against the registered task and workflow definitions.

    `workflow_defs` maps names to registered workflow definitions (None: not registered):
    at least those `raw` names (sub-workflows, failureWorkflow). Pass every definition
    reachable from them as well (`workflows_to_fetch` says which are still missing) and a
    chain through them that leads back to `raw` is refused too; a direct self-reference is
    refused either way.

    Returns the normalised definition (of the WorkflowDef shape only when there are no
    problems) and the list of problems (empty when valid). `check_workflow_def` also returns
    the warnings.
    """
    check = check_workflow_def(raw, task_defs, workflow_defs)
    return check.definition, check.problems


def normalise_workflow_def(raw: Mapping[str, Any], task_defs: Mapping[str, Mapping[str, Any]],
                           workflow_defs: Mapping[str, Any] | None = None) -> WorkflowDef:
    out, problems = validate_workflow_def(raw, task_defs, workflow_defs)
    _raise_if(problems, "invalid workflow definition")
    return out


def normalise_dynamic_task(raw: Any, task_defs: Mapping[str, Any], workflow_names: set[str],
                           known: set[str]) -> tuple[dict[str, Any], list[str]]:
    """A task that only exists at run time (a branch of a dynamic fork, given as data), checked
    and normalised as a task of a Conductor definition: (task, problems)."""
    validator = _Validator(task_defs, {name: True for name in workflow_names}, conductor=True)
    node = validator.task(raw, "dynamic task", set(known), None)
    return node, validator.problems


def _nesting_problems(tasks: Any) -> list[str]:
    """A task nested in more than MAX_NESTING_DEPTH container tasks, found without recursion
    (and without going below the first level too deep)."""
    stack: list[tuple[Any, int, str]] = [(tasks, 0, "tasks")]   # (a task list, its level, its path)
    while stack:
        tasks, level, path = stack.pop()
        if not isinstance(tasks, list):
            continue
        for index, task in enumerate(tasks):
            if not isinstance(task, dict):
                continue
            where = _where(task.get("taskReferenceName"), f"{path}[{index}]")
            if level > MAX_NESTING_DEPTH:
                return [f"{where}: nested inside {level} container tasks (FORK_JOIN, FORK_JOIN_DYNAMIC, SWITCH, "
                        f"DO_WHILE), more than the limit of {MAX_NESTING_DEPTH}; move the inner part into a "
                        "SUB_WORKFLOW"]
            stack.extend((inner, level + 1, f"{path}[{index}]{suffix}") for suffix, inner in _inner_lists(task))
    return []


_NESTED_TASKS = nested_task_fields()


def _inner_lists(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The task lists held by a (possibly invalid) task, each with its path suffix, in order."""
    return [(nested.path(position), inner) for nested in _NESTED_TASKS for position, inner in nested.lists(task)]


def _inner_task_lists(task: Mapping[str, Any]) -> Iterator[list[Any]]:
    """`_inner_lists` without the paths."""
    for nested in _NESTED_TASKS:
        for _, inner in nested.lists(task):
            yield inner


_END = object()


def _depth_first(tasks: Any) -> Iterator[dict[str, Any]]:
    """Every task (object) in the task lists, nested ones right after their container; no recursion."""
    if not isinstance(tasks, list):
        return
    stack: list[Iterator[Any]] = [iter(tasks)]
    while stack:
        task = next(stack[-1], _END)
        if task is _END:
            stack.pop()
        elif isinstance(task, dict):
            yield task
            stack.append(chain.from_iterable(_inner_task_lists(task)))


def iter_nodes(tasks: list[WorkflowTask]) -> Iterator[WorkflowTask]:
    """Every task of a normalised definition, nested ones included, depth first."""
    return cast(Iterator[WorkflowTask], _depth_first(tasks))


def iter_tasks(tasks: Any) -> Iterator[dict[str, Any]]:
    """Every task of a (possibly invalid) definition, nested ones included, depth first."""
    return _depth_first(tasks)


def _kind(task: Mapping[str, Any]) -> Kind:
    """The kind whose parts answer for a (possibly invalid) task: a task without a type is SIMPLE."""
    return kind_for(task.get("type", "SIMPLE"))


def _definitions(raw: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """`raw` and every workflow definition written inside its tasks (`Kind.inline_workflows`:
    sub-workflows defined inline), however deep, without recursion."""
    stack: list[Mapping[str, Any]] = [raw]
    while stack:
        current = stack.pop()
        yield current
        for task in iter_tasks(current.get("tasks")):
            stack.extend(_kind(task).inline_workflows(task))


def _every_task(raw: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every task of `raw` and of the definitions written inside it."""
    for definition in _definitions(raw):
        yield from iter_tasks(definition.get("tasks"))


def _chooses_script(task: Mapping[str, Any]) -> bool:
    """Whether a task, whatever its type, carries a JavaScript condition (`caseExpression`) or an
    `evaluatorType` (on it or in its inputs) that is JavaScript or chosen at run time."""
    if task.get("caseExpression"):
        return True
    params = task.get("inputParameters")
    for evaluator in (task.get("evaluatorType"), params.get("evaluatorType") if isinstance(params, dict) else None):
        if isinstance(evaluator, str) and (evaluator in JAVASCRIPT or evaluator.startswith("$")):
            return True
    return False


def runs_user_code(definition: Mapping[str, Any]) -> bool:
    """Whether deciding a workflow of `definition` may run JavaScript or jq (in the sandbox
    processes, core/sandbox.py): such workflows are decided off the node's event loop
    (cluster/deciding.py), the others in it, where a decision costs no thread hop. Errs towards
    True: a task of a kind that runs user code or may be given such tasks at run time
    (`Kind.runs_user_code`), or any task that chooses a script evaluator."""
    return any(_kind(task).runs_user_code or _chooses_script(task) for task in _every_task(definition))


def referenced_task_names(raw: Mapping[str, Any]) -> set[str]:
    """Names of the task definitions a (possibly invalid) workflow definition uses: those its
    tasks name (`Kind.task_defs_named`: of SIMPLE tasks without an embedded `taskDefinition`, of
    literal dynamic fork task names, and, in a definition not yet validated, the names that may
    hold the task definition of a type that is not Conductor's) and those of compensations, in
    sub-workflows defined inline too."""
    names: set[str] = set()
    for task in _every_task(raw):
        names.update(_kind(task).task_defs_named(task))
        compensation = task.get("compensation")
        if isinstance(compensation, dict) and isinstance(compensation.get("name"), str):
            names.add(compensation["name"])
    return {name for name in names if not SURROGATE.search(name)}   # looked up before the definition is checked


def needs_every_task_def(raw: Mapping[str, Any]) -> bool:
    """Whether a run must be able to see every registered task definition: a task names its task
    definition only at run time (a dynamic fork of task specs, a DYNAMIC task), or its task
    definition is optional or found by another name (HTTP and the other I/O types, types that are
    not Conductor's): `Kind.needs_every_task_def`."""
    return any(_kind(task).needs_every_task_def(task) for task in _every_task(raw))


def snapshot_workflow_refs(definition: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(name, version) of every registered workflow definition a run of `definition` may start
    by a name written in it (`Kind.workflows_named`: sub-workflows, START_WORKFLOW, dynamic forks
    of sub-workflows; and the failure workflow; version 0 = the latest), in sub-workflows defined
    inline too. Names given as `${...}` expressions are not known before the run: see
    `needs_every_workflow_def`."""
    refs: list[tuple[str, int]] = []
    for current in _definitions(definition):
        for task in iter_tasks(current.get("tasks")):
            refs.extend(_kind(task).workflows_named(task))
        failure = current.get("failureWorkflow")
        if literal(failure):
            refs.append((failure, version_of(current.get("failureWorkflowVersion"))))
    return list(dict.fromkeys(refs))


def needs_every_workflow_def(definition: Mapping[str, Any]) -> bool:
    """Whether a run of `definition` may start a workflow whose name (or version) is only known
    at run time (a failure workflow named by the input, or a task that may: `${...}` sub-workflow
    name, START_WORKFLOW of one, a dynamic fork of task specs that may hold SUB_WORKFLOW tasks:
    `Kind.needs_every_workflow_def`), so the run must see every registered workflow definition."""
    for current in _definitions(definition):
        failure = current.get("failureWorkflow")
        if isinstance(failure, str) and failure.startswith("$"):
            return True
        if any(_kind(task).needs_every_workflow_def(task) for task in iter_tasks(current.get("tasks"))):
            return True
    return False


def referenced_workflow_names(raw: Mapping[str, Any]) -> set[str]:
    """Registered workflow definitions a (possibly invalid) definition starts by name:
    sub-workflows, START_WORKFLOW, dynamic forks of sub-workflows, the failure workflow."""
    return {name for name, _ in snapshot_workflow_refs(raw)}


def workflow_cycle(name: str, raw: Mapping[str, Any], workflow_defs: Mapping[str, Any]) -> list[str] | None:
    """The shortest chain of workflow names by which `raw` (to be registered as `name`) would
    start itself again through sub-workflows and failure workflows, e.g. [A, B, A]; None if
    there is none among `workflow_defs` (name -> definition). Linear in their size."""
    parent: dict[str, str] = {}
    queue: deque[str] = deque()

    def reach(names: set[str], via: str) -> list[str] | None:
        for other in sorted(names):
            if other == name:
                chain_back = [via]
                while chain_back[-1] != name:
                    chain_back.append(parent[chain_back[-1]])
                return [name, *reversed(chain_back[:-1]), name] if via != name else [name, name]
            if other not in parent:
                parent[other] = via
                queue.append(other)
        return None

    found = reach(referenced_workflow_names(raw), name)
    while found is None and queue:
        current = queue.popleft()
        definition = workflow_defs.get(current)
        if isinstance(definition, Mapping):
            found = reach(referenced_workflow_names(definition), current)
    return found


def workflows_to_fetch(raw: Mapping[str, Any], fetched: Mapping[str, Any]) -> set[str]:
    """Names of the workflow definitions reachable from `raw` that are not yet in `fetched`
    (name -> definition, or None when not registered). Fetch them, add them, ask again until
    this is empty, then validate with `fetched` as `workflow_defs`, so that a cycle through
    registered definitions is found. `raw`'s own name is never asked for."""
    seen: set[str] = {raw["name"]} if isinstance(raw.get("name"), str) else set()
    queue = deque(sorted(referenced_workflow_names(raw) - seen))
    while queue:
        current = queue.popleft()
        if current in seen:
            continue
        seen.add(current)
        definition = fetched.get(current)
        if isinstance(definition, Mapping):
            queue.extend(sorted(referenced_workflow_names(definition) - seen))
    return {n for n in seen if n not in fetched and n != raw.get("name")}


def _check_choice(out: dict[str, Any], field: str, choices: tuple[str, ...], where: str,
                  problems: list[str]) -> None:
    if out[field] not in choices:
        problems.append(f"{where}: '{field}' must be one of {', '.join(choices)}, got {out[field]!r}")


def _check_int(out: dict[str, Any], field: str, where: str, problems: list[str],
               *, low: int, high: int) -> None:
    value = out.get(field)
    if isinstance(value, float) and value.is_integer():
        value = out[field] = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        problems.append(f"{where}: '{field}' must be an integer from {low} to {high}, got {show(value)}")


def _check_number(out: dict[str, Any], field: str, where: str, problems: list[str], *, low: float,
                  high: float) -> None:
    problem = number_problem(out.get(field), field, low=low, high=high)
    if problem:
        problems.append(f"{where}: {problem}")
    else:
        out[field] = float(out[field])


def _raise_if(problems: list[str], summary: str) -> None:
    if problems:
        raise InvalidArgument(f"{summary}: " + "; ".join(problems), problems)
