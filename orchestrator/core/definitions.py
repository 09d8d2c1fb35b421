"""Task and workflow definitions: parsing (JSON or YAML), validation and defaults.

Validation collects every problem, each naming the task reference and the field,
so that one registration attempt tells the author everything to fix. Expressions
(`${...}` templates and the safe expressions of SWITCH, DO_WHILE and INLINE) are
checked here, so a bad expression is a registration error, not a runtime surprise.
Normalised definitions carry all defaults explicitly: what is stored is what runs.

Nothing here recurses into a document before its depth and size have been checked without
recursion (`limits.MAX_DOCUMENT_DEPTH`, `MAX_DOCUMENT_NODES`), so a hostile document gets a
problem, never a RecursionError or minutes of work. The other limits are in `limits.py`.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from itertools import accumulate, chain
from typing import Any, cast
from collections.abc import Iterable, Iterator, Mapping

import yaml

from .errors import InvalidArgument
from .limits import (MAX_BACKOFF_SCALE_FACTOR, MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_NODES, MAX_DURATION_SECONDS,
                     MAX_EPOCH_MS, MAX_FORK_BRANCHES, MAX_LOOP_ITERATIONS, MAX_NESTING_DEPTH)
from .schema import TaskDef, WorkflowDef, WorkflowTask
from .safe_expr import SafeExpressionError, compile_expression
from .templates import TemplateError, references_in

__all__ = ["MAX_LOOP_ITERATIONS", "document_problems", "iter_nodes", "iter_tasks", "needs_every_task_def",
           "normalise_task_def", "normalise_workflow_def", "parse_document", "referenced_task_names",
           "referenced_workflow_names", "validate_workflow_def", "workflow_cycle", "workflows_to_fetch"]

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
RETRY_LOGICS = ("FIXED", "LINEAR_BACKOFF", "EXPONENTIAL_BACKOFF")
TASK_TIMEOUT_POLICIES = ("RETRY", "TIME_OUT_WF", "ALERT_ONLY")
WORKFLOW_TIMEOUT_POLICIES = ("TIME_OUT_WF", "ALERT_ONLY")
TERMINATION_STATUSES = ("COMPLETED", "FAILED", "TERMINATED")
TEN_YEARS = f"{MAX_DURATION_SECONDS} (10 years)"
MAX_VERSION = 2**31 - 1

# Task kinds: which run on workers, which the decider completes itself, which hold other tasks.
WORKER_KINDS = ("SIMPLE",)
SYSTEM_KINDS = ("NOOP", "SET_VARIABLE", "INLINE", "TERMINATE", "WAIT", "HUMAN", "SUB_WORKFLOW", "JOIN")
CONTAINER_KINDS = ("FORK_JOIN", "FORK_JOIN_DYNAMIC", "SWITCH", "DO_WHILE")
TASK_KINDS = WORKER_KINDS + SYSTEM_KINDS + CONTAINER_KINDS

COMMON_TASK_FIELDS = {"name", "taskReferenceName", "type", "inputParameters", "description", "optional",
                      "startDelay", "retryCount", "compensation"}
KIND_FIELDS: dict[str, set[str]] = {
    "SIMPLE": set(), "NOOP": set(), "SET_VARIABLE": set(), "HUMAN": set(), "JOIN": {"joinOn"},
    "INLINE": {"expression"},
    "TERMINATE": {"terminationStatus", "terminationReason", "workflowOutput"},
    "WAIT": {"duration", "until"},
    "SUB_WORKFLOW": {"subWorkflowParam"},
    "FORK_JOIN": {"forkTasks"},
    "FORK_JOIN_DYNAMIC": {"dynamicForkTasksParam", "dynamicForkTasksInputParamName", "forkTaskName",
                          "forkTaskInputs"},
    "SWITCH": {"evaluatorType", "expression", "decisionCases", "defaultCase"},
    "DO_WHILE": {"loopCondition", "loopOver", "items", "maxIterations"},
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
    if verdict:
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
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _where(ref: Any, path: str) -> str:
    """How a problem names a task: by its reference when it has a sensible one, and its path."""
    return f"task '{ref}' ({path})" if isinstance(ref, str) and len(ref) <= 200 else path


def _path_text(keys: Iterable[Any]) -> str:
    """tasks[0].inputParameters.x, from the keys on the way down."""
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) and not isinstance(key, bool) else (
            f".{key}" if text else str(key))
    return text or "(the top)"


def _show(value: Any) -> str:
    """A value in a message, cut short: a problem must not quote a megabyte."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


TOO_DEEP, TOO_BIG = "too deep", "too big"


def document_problems(document: Any, where: str) -> tuple[list[str], str]:
    """Depth, size and value types of a document, measured without recursion.

    Returns (problems, verdict): verdict is TOO_DEEP or TOO_BIG when nothing may walk the
    document recursively, else "". Values that are not JSON (a YAML date, say) are problems
    but not fatal.
    """
    problems: list[str] = []
    trail: list[tuple[int, Any]] = [(-1, None)]        # node -> (its parent node, its key there)
    stack: list[tuple[Any, int, int]] = [(document, 1, 0)]  # (value, depth, node)
    too_deep: int | None = None
    odd = 0
    count = 0

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
                if isinstance(value, dict) and not isinstance(key, _SCALARS) and odd < 5:
                    odd += 1
                    problems.append(f"{where}: {path(node)}: the key {_show(key)} is not text; quote it")
        elif not isinstance(value, _SCALARS) and odd < 5:
            odd += 1
            problems.append(f"{where}: {path(node)}: {_show(value)} ({type(value).__name__}) is not a JSON value; "
                            "quote it to make it text")
    if too_deep is not None:
        problems.insert(0, f"{where}: lists and objects nest deeper than the limit of {MAX_DOCUMENT_DEPTH} levels "
                           f"(at {path(too_deep)})")
        return problems, TOO_DEEP
    return problems, ""


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
        elif not _finite_number(item):
            at = f"'{_path_text(keys)}' is " if keys else ""
            return f"{at}{_show(item)}, not a finite number (NaN, Infinity and numbers beyond 1e308 cannot be stored)"
    return None


def _finite_number(value: Any) -> bool:
    """False only for a number that is not finite or does not fit a double."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return False
    return True


def normalise_task_def(raw: Mapping[str, Any]) -> TaskDef:
    """Validate a task definition and fill in its defaults."""
    problems, verdict = document_problems(raw, "task definition")
    _raise_if(problems if verdict else [], "invalid task definition")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("task definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out = {**TASK_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"task definition '{name}'"
    _check_int(out, "retryCount", where, problems, low=0, high=100)
    _check_choice(out, "retryLogic", RETRY_LOGICS, where, problems)
    _check_choice(out, "timeoutPolicy", TASK_TIMEOUT_POLICIES, where, problems)
    for field in ("retryDelaySeconds", "maxRetryDelaySeconds", "timeoutSeconds"):
        _check_number(out, field, where, problems, low=0.0, high=MAX_DURATION_SECONDS)
    _check_number(out, "backoffScaleFactor", where, problems, low=0.0, high=MAX_BACKOFF_SCALE_FACTOR)
    _check_number(out, "responseTimeoutSeconds", where, problems, low=0.1, high=MAX_DURATION_SECONDS)
    _check_number(out, "rateLimitFrequencyInSeconds", where, problems, low=0.001, high=MAX_DURATION_SECONDS)
    _check_int(out, "rateLimitPerFrequency", where, problems, low=0, high=10**9)
    _check_int(out, "concurrentExecLimit", where, problems, low=0, high=10**9)
    if not isinstance(out["description"], str):
        problems.append(f"{where}: 'description' must be a string")
    unknown = sorted(set(out) - set(TASK_DEF_DEFAULTS) - {"name"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    _raise_if(problems, "invalid task definition")
    return cast(TaskDef, out)   # every field checked above


class _Validator:
    """Walks a workflow definition once, collecting problems and normalising each task."""

    def __init__(self, task_defs: Mapping[str, Any], workflow_defs: Mapping[str, Any]) -> None:
        self.task_defs = task_defs
        self.workflow_defs = workflow_defs
        self.problems: list[str] = []
        self.refs: set[str] = set()
        self.counter = 0

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
        if kind not in TASK_KINDS:
            self.problems.append(f"{where}: 'type' {kind!r} is not supported; use one of {', '.join(TASK_KINDS)}")
            kind = "NOOP"
        out: dict[str, Any] = {"name": task.get("name") or ref, "taskReferenceName": ref, "type": kind,
                               "inputParameters": task.get("inputParameters", {}),
                               "description": task.get("description", ""),
                               "optional": task.get("optional", False),
                               "startDelay": task.get("startDelay", 0)}
        self._common_fields(task, out, where, kind, known)
        unknown = sorted(set(task) - COMMON_TASK_FIELDS - KIND_FIELDS[kind])
        if unknown:
            self.problems.append(f"{where}: unknown field(s) {', '.join(unknown)} for type {kind}")
        getattr(self, f"_kind_{kind.lower()}")(task, out, where, known, previous)
        if isinstance(ref, str):
            known.add(ref)
        return out

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
        self.template(out["inputParameters"], f"{where}: 'inputParameters'", known)
        if not isinstance(out["optional"], bool):
            self.problems.append(f"{where}: 'optional' must be true or false")
        problem = _number_problem(out["startDelay"], "startDelay", low=0, high=MAX_DURATION_SECONDS,
                                  unit=" of seconds")
        if problem:
            self.problems.append(f"{where}: {problem}")
        if not isinstance(out["description"], str):
            self.problems.append(f"{where}: 'description' must be a string")
        if "retryCount" in task:
            value = task["retryCount"]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                self.problems.append(f"{where}: 'retryCount' must be an integer from 0 to 100")
            out["retryCount"] = value
        if "compensation" in task:
            out["compensation"] = self._compensation(task["compensation"], where, known | {out["taskReferenceName"]})

    def _compensation(self, spec: Any, where: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            self.problems.append(f"{where}: 'compensation' must be an object with 'name' (a task definition)")
            return {}
        self._task_def_exists(spec["name"], f"{where}: 'compensation'")
        inputs = spec.get("inputParameters", {})
        if not isinstance(inputs, dict):
            self.problems.append(f"{where}: 'compensation.inputParameters' must be an object")
            inputs = {}
        self.template(inputs, f"{where}: 'compensation.inputParameters'", known)
        unknown = sorted(set(spec) - {"name", "inputParameters"})
        if unknown:
            self.problems.append(f"{where}: 'compensation' has unknown field(s) {', '.join(unknown)}")
        return {"name": spec["name"], "inputParameters": inputs}

    # ---------------------------------------------------------------- one method per kind

    def _kind_simple(self, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
        name = task.get("name")
        if not isinstance(name, str) or not name:
            self.problems.append(f"{where}: 'name' (the task definition to run) is required")
        else:
            self._task_def_exists(name, where)

    def _kind_noop(self, *_: Any) -> None:
        pass

    _kind_set_variable = _kind_noop
    _kind_human = _kind_noop

    def _kind_inline(self, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
        out["expression"] = self._safe_expression(task.get("expression"), f"{where}: 'expression'")

    def _kind_terminate(self, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
                        _: Any) -> None:
        status = task.get("terminationStatus", "COMPLETED")
        if status not in TERMINATION_STATUSES:
            self.problems.append(f"{where}: 'terminationStatus' must be one of {', '.join(TERMINATION_STATUSES)}")
        out["terminationStatus"] = status
        out["terminationReason"] = task.get("terminationReason", "")
        out["workflowOutput"] = task.get("workflowOutput", {})
        if not isinstance(out["workflowOutput"], dict):
            self.problems.append(f"{where}: 'workflowOutput' must be an object (it becomes the workflow's output)")
        self.template(out["workflowOutput"], f"{where}: 'workflowOutput'", known)
        self.template(out["terminationReason"], f"{where}: 'terminationReason'", known)

    def _kind_wait(self, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str], _: Any) -> None:
        duration, until = task.get("duration"), task.get("until")
        if duration is not None and until is not None:
            self.problems.append(f"{where}: give 'duration' or 'until', not both (neither = wait for a signal)")
        if duration is not None:
            problem = _number_problem(duration, "duration", low=0, high=MAX_DURATION_SECONDS, unit=" of seconds")
            if problem:
                self.problems.append(f"{where}: {problem}")
        if isinstance(until, str) and "${" in until.replace("$${", ""):
            self.template(until, f"{where}: 'until'", known)
        elif until is not None:
            literal = float(until) if isinstance(until, str) and _NUMBER.fullmatch(until.strip()) else until
            if _number_problem(literal, "until", low=0, high=MAX_EPOCH_MS):
                self.problems.append(f"{where}: 'until' must be epoch milliseconds from 0 to {MAX_EPOCH_MS} "
                                     f"(year 9999) or a ${{...}} expression, got {_show(until)}")
        out["duration"], out["until"] = duration, until

    def _kind_sub_workflow(self, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
        param = task.get("subWorkflowParam")
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            self.problems.append(f"{where}: 'subWorkflowParam' must be an object with 'name' (and 'version')")
            return
        version = param.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION:
            self.problems.append(f"{where}: 'subWorkflowParam.version' must be 0 (latest) or a version number")
        elif self.workflow_defs.get(param["name"]) is None:
            self.problems.append(f"{where}: no workflow definition named '{param['name']}' is registered")
        out["subWorkflowParam"] = {"name": param["name"], "version": version}

    def _kind_join(self, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
                   previous: dict[str, Any] | None) -> None:
        if previous is None or previous.get("type") not in ("FORK_JOIN", "FORK_JOIN_DYNAMIC"):
            self.problems.append(f"{where}: a JOIN must directly follow a FORK_JOIN or FORK_JOIN_DYNAMIC")
            out["joinOn"] = []
            return
        join_on = task.get("joinOn", [])
        if not isinstance(join_on, list) or not all(isinstance(r, str) for r in join_on):
            self.problems.append(f"{where}: 'joinOn' must be a list of task references")
            join_on = []
        missing = [r for r in join_on if r not in known]
        if missing:
            self.problems.append(f"{where}: 'joinOn' names unknown reference(s) {', '.join(missing)}")
        out["joinOn"] = join_on

    def _kind_fork_join(self, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
                        _: Any) -> None:
        branches = task.get("forkTasks")
        if not isinstance(branches, list) or not branches:
            self.problems.append(f"{where}: 'forkTasks' must be a non-empty list of task lists")
            out["forkTasks"] = []
            return
        if len(branches) > MAX_FORK_BRANCHES:
            self.problems.append(f"{where}: 'forkTasks' has {len(branches)} branches, more than the limit of "
                                 f"{MAX_FORK_BRANCHES}; fork fewer branches or use a SUB_WORKFLOW per group")
            out["forkTasks"] = []
            return
        before = set(known)
        out["forkTasks"] = []
        for index, branch in enumerate(branches):
            branch_known = set(before)
            out["forkTasks"].append(self.sequence(branch, f"{where}.forkTasks[{index}]", branch_known))
            known |= branch_known

    def _kind_fork_join_dynamic(self, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
        by_param = task.get("dynamicForkTasksParam")
        by_name = task.get("forkTaskName")
        if bool(by_param) == bool(by_name):
            self.problems.append(f"{where}: give either 'dynamicForkTasksParam' (+ 'dynamicForkTasksInputParamName')"
                                 " or 'forkTaskName' + 'forkTaskInputs'")
        if by_param:
            for field in ("dynamicForkTasksParam", "dynamicForkTasksInputParamName"):
                if task.get(field) not in out["inputParameters"]:
                    self.problems.append(f"{where}: '{field}' must name a key of 'inputParameters'")
            out["dynamicForkTasksParam"] = by_param
            out["dynamicForkTasksInputParamName"] = task.get("dynamicForkTasksInputParamName")
        if by_name:
            if isinstance(by_name, str):
                self._task_def_exists(by_name, f"{where}: 'forkTaskName'")
            if "forkTaskInputs" not in task:
                self.problems.append(f"{where}: 'forkTaskInputs' (a list, one input per branch) is required")
            self.template(task.get("forkTaskInputs"), f"{where}: 'forkTaskInputs'", set(self.refs))
            if isinstance(task.get("forkTaskInputs"), list) and len(task["forkTaskInputs"]) > MAX_FORK_BRANCHES:
                self.problems.append(f"{where}: 'forkTaskInputs' has {len(task['forkTaskInputs'])} items, more than "
                                     f"the limit of {MAX_FORK_BRANCHES} branches")
            out["forkTaskName"] = by_name
            out["forkTaskInputs"] = task.get("forkTaskInputs")

    def _kind_switch(self, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
                     _: Any) -> None:
        evaluator = task.get("evaluatorType", "value-param")
        expression = task.get("expression")
        if evaluator == "value-param":
            if expression not in out["inputParameters"]:
                self.problems.append(f"{where}: with evaluatorType 'value-param', 'expression' must name a key "
                                     "of 'inputParameters'")
        elif evaluator in ("expression", "javascript"):
            evaluator = "expression"
            self._safe_expression(expression, f"{where}: 'expression'")
        else:
            self.problems.append(f"{where}: 'evaluatorType' must be 'value-param' or 'expression'")
        cases = task.get("decisionCases", {})
        if not isinstance(cases, dict):
            self.problems.append(f"{where}: 'decisionCases' must be an object of case -> task list")
            cases = {}
        before = set(known)
        out["decisionCases"] = {}
        for case, tasks in cases.items():
            branch_known = set(before)
            out["decisionCases"][str(case)] = self.sequence(tasks, f"{where}.decisionCases[{case!r}]", branch_known)
            known |= branch_known
        default = task.get("defaultCase", [])
        branch_known = set(before)
        out["defaultCase"] = self.sequence(default, f"{where}.defaultCase", branch_known) if default else []
        known |= branch_known
        out["evaluatorType"], out["expression"] = evaluator, expression

    def _kind_do_while(self, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
                       _: Any) -> None:
        condition, items = task.get("loopCondition"), task.get("items")
        if (condition is None) == (items is None):
            self.problems.append(f"{where}: give 'loopCondition' (loop while true) or 'items' (loop over a list)")
        if condition is not None:
            self._safe_expression(condition, f"{where}: 'loopCondition'")
        if items is not None:
            self.template(items, f"{where}: 'items'", known)
        cap = task.get("maxIterations", 100)
        if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_LOOP_ITERATIONS:
            self.problems.append(f"{where}: 'maxIterations' must be an integer from 1 to {MAX_LOOP_ITERATIONS}")
        elif isinstance(items, list) and len(items) > cap:
            self.problems.append(f"{where}: 'items' has {len(items)} elements, more than 'maxIterations' ({cap})")
        ref = out["taskReferenceName"]
        inner_known = known | ({ref} if isinstance(ref, str) else set())
        out["loopOver"] = self.sequence(task.get("loopOver"), f"{where}.loopOver", inner_known)
        known |= inner_known
        out["loopCondition"], out["items"], out["maxIterations"] = condition, items, cap

    # ---------------------------------------------------------------- helpers

    def _task_def_exists(self, name: str, where: str) -> None:
        if name not in self.task_defs:
            self.problems.append(f"{where}: no task definition named '{name}' is registered; register it first")

    def _safe_expression(self, source: Any, where: str) -> str:
        if not isinstance(source, str) or not source.strip():
            self.problems.append(f"{where}: an expression (text) is required")
            return ""
        try:
            compile_expression(source)
        except SafeExpressionError as exc:
            self.problems.append(f"{where}: {exc}")
        return source

    def template(self, template: Any, where: str, known: set[str]) -> None:
        """Every `${...}` must parse and may only name tasks that run before this point;
        every number must be finite."""
        bad = _non_finite(template)
        if bad:
            self.problems.append(f"{where}: {bad}")
        try:
            for reference in references_in(template):
                if reference.root != "workflow" and reference.root not in known:
                    self.problems.append(f"{where}: '${{{reference.root}...}}' names no earlier task reference")
        except TemplateError as exc:
            self.problems.append(f"{where}: {exc}")


def validate_workflow_def(raw: Mapping[str, Any], task_defs: Mapping[str, Mapping[str, Any]],
                          workflow_defs: Mapping[str, Any] | None = None) -> tuple[WorkflowDef, list[str]]:
    """Check a workflow definition against the registered task and workflow definitions.

    `workflow_defs` maps names to registered workflow definitions (None: not registered):
    at least those `raw` names (sub-workflows, failureWorkflow). Pass every definition
    reachable from them as well (`workflows_to_fetch` says which are still missing) and a
    chain through them that leads back to `raw` is refused too; a direct self-reference is
    refused either way.

    Returns the normalised definition (of the WorkflowDef shape only when there are no
    problems) and the list of problems (empty when valid).
    """
    problems, verdict = document_problems(raw, "workflow definition")
    if verdict != TOO_BIG:   # every task above the nesting limit lies within the depth measured
        problems[:0] = _nesting_problems(raw.get("tasks"))
    if verdict:
        return cast(WorkflowDef, dict(raw)), problems
    validator = _Validator(task_defs, workflow_defs or {})
    validator.problems = problems
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("workflow definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out: dict[str, Any] = {**WORKFLOW_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"workflow '{name}'"
    _check_int(out, "version", where, problems, low=1, high=MAX_VERSION)
    _check_number(out, "timeoutSeconds", where, problems, low=0.0, high=MAX_DURATION_SECONDS)
    _check_choice(out, "timeoutPolicy", WORKFLOW_TIMEOUT_POLICIES, where, problems)
    for field in ("outputParameters", "variables"):
        if not isinstance(out[field], dict):
            problems.append(f"{where}: '{field}' must be an object")
    bad = _non_finite(out["variables"])
    if bad:
        problems.append(f"{where}: 'variables': {bad}")
    if not isinstance(out["description"], str):
        problems.append(f"{where}: 'description' must be a string")
    failure = out["failureWorkflow"]
    if failure and (not isinstance(failure, str) or validator.workflow_defs.get(failure) is None):
        problems.append(f"{where}: 'failureWorkflow' names no registered workflow definition ({_show(failure)})")
    known: set[str] = set()
    out["tasks"] = validator.sequence(out.get("tasks"), "tasks", known)
    validator.template(out["outputParameters"], f"{where}: 'outputParameters'", known)
    unknown = sorted(set(out) - set(WORKFLOW_DEF_DEFAULTS) - {"name", "tasks"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    cycle = workflow_cycle(name, out, validator.workflow_defs) if name != "?" else None
    if cycle:
        problems.append(f"{where}: workflow '{name}' would run itself: {' -> '.join(cycle)} (through sub-workflows "
                        "and failureWorkflow); a workflow must not start itself, directly or through others")
    return cast(WorkflowDef, out), problems


def normalise_workflow_def(raw: Mapping[str, Any], task_defs: Mapping[str, Mapping[str, Any]],
                           workflow_defs: Mapping[str, Any] | None = None) -> WorkflowDef:
    out, problems = validate_workflow_def(raw, task_defs, workflow_defs)
    _raise_if(problems, "invalid workflow definition")
    return out


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


def _inner_lists(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The task lists held by a (possibly invalid) task, each with its path suffix, in order."""
    lists: list[tuple[str, Any]] = []
    branches = task.get("forkTasks")
    if isinstance(branches, list):
        lists += [(f".forkTasks[{i}]", branch) for i, branch in enumerate(branches)]
    cases = task.get("decisionCases")
    if isinstance(cases, dict):
        lists += [(f".decisionCases[{case!r}]", branch) for case, branch in cases.items()]
    lists += [(".defaultCase", task.get("defaultCase")), (".loopOver", task.get("loopOver"))]
    return [(suffix, inner) for suffix, inner in lists if isinstance(inner, list)]


def _inner_task_lists(task: Mapping[str, Any]) -> Iterator[list[Any]]:
    """`_inner_lists` without the paths."""
    branches = task.get("forkTasks")
    if isinstance(branches, list):
        yield from (branch for branch in branches if isinstance(branch, list))
    cases = task.get("decisionCases")
    if isinstance(cases, dict):
        yield from (branch for branch in cases.values() if isinstance(branch, list))
    for field in ("defaultCase", "loopOver"):
        inner = task.get(field)
        if isinstance(inner, list):
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


def referenced_task_names(raw: Mapping[str, Any]) -> set[str]:
    """Names of the task definitions a (possibly invalid) workflow definition uses."""
    names: set[str] = set()
    for task in iter_tasks(raw.get("tasks")):
        kind = task.get("type", "SIMPLE")
        if kind == "SIMPLE" and isinstance(task.get("name"), str):
            names.add(task["name"])
        if kind == "FORK_JOIN_DYNAMIC" and isinstance(task.get("forkTaskName"), str):
            names.add(task["forkTaskName"])
        compensation = task.get("compensation")
        if isinstance(compensation, dict) and isinstance(compensation.get("name"), str):
            names.add(compensation["name"])
    return names


def needs_every_task_def(raw: Mapping[str, Any]) -> bool:
    """Whether the definition names task types only at run time (a dynamic fork of task specs),
    so a run must be able to see every registered task definition."""
    return any(task.get("type") == "FORK_JOIN_DYNAMIC" and task.get("dynamicForkTasksParam")
               for task in iter_tasks(raw.get("tasks")))


def referenced_workflow_names(raw: Mapping[str, Any]) -> set[str]:
    """Sub-workflows and the failure workflow a (possibly invalid) definition starts."""
    names = {t["subWorkflowParam"]["name"] for t in iter_tasks(raw.get("tasks"))
             if t.get("type") == "SUB_WORKFLOW" and isinstance(t.get("subWorkflowParam"), dict)
             and isinstance(t["subWorkflowParam"].get("name"), str)}
    if isinstance(raw.get("failureWorkflow"), str) and raw["failureWorkflow"]:
        names.add(raw["failureWorkflow"])
    return names


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
        problems.append(f"{where}: '{field}' must be an integer from {low} to {high}, got {_show(value)}")


def _number_problem(value: Any, field: str, *, low: float, high: float, unit: str = "") -> str | None:
    """Why `value` is not a finite number from `low` to `high`, if it is not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _finite_number(value) \
            and low <= value <= high:
        return None
    bound = TEN_YEARS if high == MAX_DURATION_SECONDS else f"{high:g}"
    return f"'{field}' must be a number{unit} >= {low:g} and at most {bound}, got {_show(value)}"


def _check_number(out: dict[str, Any], field: str, where: str, problems: list[str], *, low: float,
                  high: float) -> None:
    problem = _number_problem(out.get(field), field, low=low, high=high)
    if problem:
        problems.append(f"{where}: {problem}")
    else:
        out[field] = float(out[field])


def _raise_if(problems: list[str], summary: str) -> None:
    if problems:
        raise InvalidArgument(f"{summary}: " + "; ".join(problems), problems)
