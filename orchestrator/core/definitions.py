"""Task and workflow definitions: parsing (JSON or YAML), validation and defaults.

Validation collects every problem, each naming the task reference and the field,
so that one registration attempt tells the author everything to fix. Expressions
(`${...}` templates and the safe expressions of SWITCH, DO_WHILE and INLINE) are
checked here, so a bad expression is a registration error, not a runtime surprise.
Normalised definitions carry all defaults explicitly: what is stored is what runs.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast
from collections.abc import Iterator, Mapping

import yaml

from .errors import InvalidArgument
from .schema import TaskDef, WorkflowDef, WorkflowTask
from .safe_expr import SafeExpressionError, compile_expression
from .templates import TemplateError, references_in

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
RETRY_LOGICS = ("FIXED", "LINEAR_BACKOFF", "EXPONENTIAL_BACKOFF")
TASK_TIMEOUT_POLICIES = ("RETRY", "TIME_OUT_WF", "ALERT_ONLY")
WORKFLOW_TIMEOUT_POLICIES = ("TIME_OUT_WF", "ALERT_ONLY")
TERMINATION_STATUSES = ("COMPLETED", "FAILED", "TERMINATED")
MAX_LOOP_ITERATIONS = 1000

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
    """Read a JSON or YAML document that must hold one object."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"document is neither valid JSON nor valid YAML: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidArgument("a definition document must be a JSON/YAML object, "
                              f"got {type(value).__name__}")
    return value


def normalise_task_def(raw: Mapping[str, Any]) -> TaskDef:
    """Validate a task definition and fill in its defaults."""
    problems: list[str] = []
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("task definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out = {**TASK_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"task definition '{name}'"
    _check_int(out, "retryCount", where, problems, low=0, high=100)
    _check_choice(out, "retryLogic", RETRY_LOGICS, where, problems)
    _check_choice(out, "timeoutPolicy", TASK_TIMEOUT_POLICIES, where, problems)
    for field in ("retryDelaySeconds", "backoffScaleFactor", "maxRetryDelaySeconds", "timeoutSeconds"):
        _check_number(out, field, where, problems, low=0.0)
    _check_number(out, "responseTimeoutSeconds", where, problems, low=0.1)
    _check_number(out, "rateLimitFrequencyInSeconds", where, problems, low=0.001)
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
        where = f"task '{ref}' ({path})" if isinstance(ref, str) else path
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
        delay = out["startDelay"]
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
            self.problems.append(f"{where}: 'startDelay' must be a number of seconds >= 0")
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
        self.template(out["workflowOutput"], f"{where}: 'workflowOutput'", known)
        self.template(out["terminationReason"], f"{where}: 'terminationReason'", known)

    def _kind_wait(self, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
        duration, until = task.get("duration"), task.get("until")
        if duration is not None and until is not None:
            self.problems.append(f"{where}: give 'duration' or 'until', not both (neither = wait for a signal)")
        if duration is not None and (not isinstance(duration, (int, float)) or isinstance(duration, bool)
                                     or duration < 0):
            self.problems.append(f"{where}: 'duration' must be a number of seconds >= 0")
        if until is not None and not isinstance(until, (int, float, str)):
            self.problems.append(f"{where}: 'until' must be epoch milliseconds or a ${{...}} expression")
        out["duration"], out["until"] = duration, until

    def _kind_sub_workflow(self, task: dict[str, Any], out: dict[str, Any], where: str, *_: Any) -> None:
        param = task.get("subWorkflowParam")
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            self.problems.append(f"{where}: 'subWorkflowParam' must be an object with 'name' (and 'version')")
            return
        version = param.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            self.problems.append(f"{where}: 'subWorkflowParam.version' must be 0 (latest) or a version number")
        elif param["name"] not in self.workflow_defs:
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
        """Every `${...}` must parse and may only name tasks that run before this point."""
        try:
            for reference in references_in(template):
                if reference.root != "workflow" and reference.root not in known:
                    self.problems.append(f"{where}: '${{{reference.root}...}}' names no earlier task reference")
        except TemplateError as exc:
            self.problems.append(f"{where}: {exc}")


def validate_workflow_def(raw: Mapping[str, Any], task_defs: Mapping[str, Mapping[str, Any]],
                          workflow_defs: Mapping[str, Any] | None = None) -> tuple[WorkflowDef, list[str]]:
    """Check a workflow definition against the registered task and workflow definitions.

    Returns the normalised definition (of the WorkflowDef shape only when there are no
    problems) and the list of problems (empty when valid).
    """
    validator = _Validator(task_defs, workflow_defs or {})
    problems = validator.problems
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("workflow definition: 'name' is required: letters, digits, '_', '.', '-' (max 128)")
        name = "?"
    out: dict[str, Any] = {**WORKFLOW_DEF_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    where = f"workflow '{name}'"
    _check_int(out, "version", where, problems, low=1, high=2**31 - 1)
    _check_number(out, "timeoutSeconds", where, problems, low=0.0)
    _check_choice(out, "timeoutPolicy", WORKFLOW_TIMEOUT_POLICIES, where, problems)
    for field in ("outputParameters", "variables"):
        if not isinstance(out[field], dict):
            problems.append(f"{where}: '{field}' must be an object")
    failure = out["failureWorkflow"]
    if failure and (not isinstance(failure, str) or failure not in validator.workflow_defs):
        problems.append(f"{where}: 'failureWorkflow' names no registered workflow definition ({failure!r})")
    known: set[str] = set()
    out["tasks"] = validator.sequence(out.get("tasks"), "tasks", known)
    validator.template(out["outputParameters"], f"{where}: 'outputParameters'", known)
    unknown = sorted(set(out) - set(WORKFLOW_DEF_DEFAULTS) - {"name", "tasks"})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    if isinstance(name, str) and name in referenced_workflow_names(out):
        problems.append(f"{where}: a workflow cannot run itself as a sub-workflow")
    return cast(WorkflowDef, out), problems


def normalise_workflow_def(raw: Mapping[str, Any], task_defs: Mapping[str, Mapping[str, Any]],
                           workflow_defs: Mapping[str, Any] | None = None) -> WorkflowDef:
    out, problems = validate_workflow_def(raw, task_defs, workflow_defs)
    _raise_if(problems, "invalid workflow definition")
    return out


def iter_nodes(tasks: list[WorkflowTask]) -> Iterator[WorkflowTask]:
    """Every task of a normalised definition, nested ones included, depth first."""
    for task in tasks:
        yield task
        for branch in task.get("forkTasks", []):
            yield from iter_nodes(branch)
        for branch in task.get("decisionCases", {}).values():
            yield from iter_nodes(branch)
        yield from iter_nodes(task.get("defaultCase", []))
        yield from iter_nodes(task.get("loopOver", []))


def iter_tasks(tasks: Any) -> Iterator[dict[str, Any]]:
    """Every task of a (possibly invalid) definition, nested ones included, depth first."""
    if not isinstance(tasks, list):
        return
    for task in tasks:
        if not isinstance(task, dict):
            continue
        yield task
        for branch in task.get("forkTasks") or []:
            yield from iter_tasks(branch)
        for branch in (task.get("decisionCases") or {}).values() if isinstance(task.get("decisionCases"), dict) else []:
            yield from iter_tasks(branch)
        yield from iter_tasks(task.get("defaultCase"))
        yield from iter_tasks(task.get("loopOver"))


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
        problems.append(f"{where}: '{field}' must be an integer from {low} to {high}, got {value!r}")


def _check_number(out: dict[str, Any], field: str, where: str, problems: list[str], *, low: float) -> None:
    value = out.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
        problems.append(f"{where}: '{field}' must be a number >= {low}, got {value!r}")
    else:
        out[field] = float(value)


def _raise_if(problems: list[str], summary: str) -> None:
    if problems:
        raise InvalidArgument(f"{summary}: " + "; ".join(problems), problems)
