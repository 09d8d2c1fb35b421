"""DO_WHILE: run `loopOver` once per iteration (keys get `__<n>`), while `loopCondition` holds
or items remain (`items`, a list; Conductor's `inputParameters.items`), at most `maxIterations`
times. The condition is ours (a safe expression over the workflow's scope, `$.<ref>.output...`)
or Conductor's (JavaScript whose `$` is the loop's inputs and each loop task's output by
reference, or `value-param`: an input parameter's value). A loop written for Conductor has
Conductor's output: each iteration's task outputs under its number (`keepLastN` keeps the last N)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import javascript
from .. import state as m
from .. import statuses as st
from ..limits import MAX_LOOP_ITERATIONS
from ..safe_expr import SafeExpressionError, compile_expression, evaluate
from ..schema import WorkflowTask
from ..values import is_template, show
from .base import DONE, Checker, Kind, Loop, NestedTasks, Outcome, Shape, type_title
from .checks import JAVASCRIPT, check_safe_expression, check_script
from .steps import RUN_TIME_ERRORS, failed_system_task, key

if TYPE_CHECKING:
    from ..decider.walk import Walk

# ---------------------------------------------------------------- registration

_STYLE_PATH = re.compile(r"\$\s*(?:\.\s*([A-Za-z_][\w\-]*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\])"
                         r"\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\])?")


def _our_loop_style(condition: str, refs: set[str]) -> bool:
    """Whether a loop condition reads its scope our way: every `$.x` is `$.workflow...` or
    `$.<task>.output...`/`.input...` (Conductor's way is `$.<task>.<key>` and `$.<input>`)."""
    for match in _STYLE_PATH.finditer(condition):
        root = match.group(1) or match.group(2) or match.group(3)
        field = match.group(4) or match.group(5) or match.group(6)
        if root == "workflow":
            continue
        if root not in refs or field not in ("output", "input"):
            return False
    return True


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
             _previous: Any) -> None:
    inputs = out["inputParameters"]
    condition, items, engine = _what_it_loops_on(checker, task, inputs, where, known)
    cap = _cap(checker, task, items, engine, where)
    keep = inputs.get("keepLastN")
    if keep is not None and not is_template(keep) and (not isinstance(keep, int) or isinstance(keep, bool)
                                                        or keep < 1):
        checker.problems.append(f"{where}: 'inputParameters.keepLastN' must be a whole number of iterations >= 1")
    ref = out["taskReferenceName"]
    inner_known = known | ({ref} if isinstance(ref, str) else set())
    out["loopOver"] = checker.sequence(task.get("loopOver"), f"{where}.loopOver", inner_known)
    known |= inner_known
    out["loopCondition"], out["items"], out["maxIterations"] = condition, items, cap
    if engine is not None and engine != "items":
        out["evaluatorType"] = engine


def _what_it_loops_on(checker: Checker, task: dict[str, Any], inputs: dict[str, Any], where: str,
                      known: set[str]) -> tuple[str | None, Any, str | None]:
    """(condition, items, engine): a condition and how it is evaluated, or items ('items')."""
    condition, items = task.get("loopCondition"), task.get("items")
    if condition is not None and not isinstance(condition, str):
        checker.problems.append(f"{where}: 'loopCondition' must be text")
        condition = None
    if condition is not None and not condition.strip():
        condition = None
    engine = None
    if items is None and condition is None and "items" in inputs:
        items, engine = inputs["items"], "items"   # Conductor's: loop over inputParameters.items
    if (condition is None) == (items is None) and engine is None:
        checker.problems.append(f"{where}: give 'loopCondition' (loop while true) or 'items' (loop over a list)")
    if items is not None:
        engine = engine or "items"
        checker.template(items, f"{where}: 'items'", known)
        if condition is not None:
            checker.warn(f"{where}: 'loopCondition' is ignored: the loop runs once per element of 'items'")
            condition = None
    elif condition is not None:
        engine = _loop_engine(checker, condition, task.get("evaluatorType"), where, inputs)
    return condition, items, engine


def _cap(checker: Checker, task: dict[str, Any], items: Any, engine: str | None, where: str) -> Any:
    """`maxIterations`, defaulted: 100 for ours, MAX_LOOP_ITERATIONS for Conductor's (which has no cap)."""
    conductor_style = engine != "expression"
    cap = task.get("maxIterations")
    if cap is None:
        cap = MAX_LOOP_ITERATIONS if conductor_style else 100
        if conductor_style and engine != "items":
            checker.warn(f"{where}: this DO_WHILE stops after {cap} iterations (limits.MAX_LOOP_ITERATIONS) even "
                         "if its condition still holds; Conductor has no such cap")
    if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_LOOP_ITERATIONS:
        checker.problems.append(f"{where}: 'maxIterations' must be an integer from 1 to {MAX_LOOP_ITERATIONS}")
    elif isinstance(items, list) and len(items) > cap:
        checker.problems.append(f"{where}: 'items' has {len(items)} elements, more than 'maxIterations' ({cap})")
    return cap


def _loop_engine(checker: Checker, condition: str, evaluator: Any, where: str, inputs: dict[str, Any]) -> str:
    """How a loop condition is evaluated: 'expression' (a safe expression over the workflow's
    scope, `$.<ref>.output...`), 'javascript' (Conductor's: `$` = the loop's inputs and each
    loop task's output by reference) or 'value-param' (an input parameter's value)."""
    if evaluator == "expression":
        check_safe_expression(checker.problems, condition, f"{where}: 'loopCondition'")
        return "expression"
    if evaluator == "value-param":
        if condition not in inputs:
            checker.problems.append(f"{where}: with evaluatorType 'value-param', 'loopCondition' must name a key of "
                                    "'inputParameters'")
        return "value-param"
    if evaluator is not None and evaluator not in JAVASCRIPT:
        checker.problems.append(f"{where}: 'evaluatorType' must be 'javascript', 'graaljs', 'value-param' or "
                                f"'expression', got {show(evaluator)}")
        return "javascript"
    if evaluator is None and not checker.conductor:
        try:
            compile_expression(condition)
            if _our_loop_style(condition, checker.all_refs):
                return "expression"
        except SafeExpressionError:
            pass
    check_script(checker.problems, condition, f"{where}: 'loopCondition'")
    return str(evaluator or "javascript")


# ---------------------------------------------------------------- run time

def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    loop_key = key(node, suffix)
    loop = walk.latest.get(loop_key)
    if loop is None:
        loop, outcome = _start(walk, node, loop_key)
        if outcome is not None:
            return outcome
    if loop.runtime.status in st.DONE_TASK:
        return DONE
    if loop.runtime.status != st.IN_PROGRESS:
        return failed_system_task(walk, node, loop)
    conductor = _conductor_loop(node)
    while True:
        output = loop.output or {}
        iteration = int(output["iteration"])
        outcome = walk.run(node["loopOver"], f"{suffix}__{iteration}")
        if not outcome.done:
            return outcome
        if conductor:   # Conductor's loop output keeps each iteration's outputs: {"1": {ref: output}, ...}
            output = _keep_iterations(walk, node, {**output, str(iteration): _iteration_outputs(walk, node, suffix,
                                                                                               iteration)}, iteration)
            walk.set_output(loop, output)
        try:
            again = _loop_again(walk, node, loop, iteration)
        except RUN_TIME_ERRORS as exc:
            walk.change(loop, status=st.FAILED_WITH_TERMINAL_ERROR, reason=f"loopCondition: {exc}")
            return walk.unsuccessful(node, loop)
        if not again or iteration >= node["maxIterations"]:
            walk.complete(loop, {**output, "stoppedByCap": again})
            return DONE
        kept = {k: v for k, v in output.items() if k.isdigit()}
        walk.set_output(loop, {**kept, **_iteration_output(iteration + 1, loop.spec.extra.get("items"))})


def _start(walk: Walk, node: WorkflowTask, loop_key: str) -> tuple[m.TaskState, Outcome | None]:
    """The loop's instance, at its first iteration; with the outcome when it ends at once
    (no items: COMPLETED; items that are no list, or too many: failed)."""
    items = walk.resolve(node["items"]) if node.get("items") is not None else None
    problem = ""
    if node.get("items") is not None and not isinstance(items, list):
        problem = f"'items' resolved to {type(items).__name__}, not a list"
    elif items is not None and len(items) > node["maxIterations"]:
        problem = (f"'items' has {len(items)} elements, more than maxIterations ({node['maxIterations']}); "
                   f"raise maxIterations (at most {MAX_LOOP_ITERATIONS}) or loop over batches")
    if problem:
        loop = walk.add(node, loop_key, status=st.FAILED_WITH_TERMINAL_ERROR, reason=problem)
        return loop, walk.unsuccessful(node, loop)
    if items == []:
        return walk.add(node, loop_key, status=st.TASK_COMPLETED, output={"iteration": 0}), DONE
    loop = walk.add(node, loop_key, status=st.IN_PROGRESS, output=_iteration_output(1, items),
                    extra={"items": items} if items is not None else {})
    return loop, None


def _conductor_loop(node: WorkflowTask) -> bool:
    """A loop written for Conductor (a JavaScript or value-param condition, or `items` in its
    inputParameters) has Conductor's output: each iteration's task outputs under its number."""
    inputs = node["inputParameters"]
    return node.get("evaluatorType") in (*JAVASCRIPT, "value-param") or (
        node.get("items") is not None and "items" in inputs and node["items"] == inputs["items"])


def _iteration_outputs(walk: Walk, node: WorkflowTask, suffix: str, iteration: int) -> dict[str, Any]:
    tail = f"{suffix}__{iteration}"
    outputs: dict[str, Any] = {}
    for inner in walk.nodes(node["loopOver"]):
        task = walk.latest.get(inner["taskReferenceName"] + tail)
        if task is not None:
            outputs[inner["taskReferenceName"]] = task.output or {}
    return outputs


def _keep_iterations(walk: Walk, node: WorkflowTask, output: dict[str, Any], iteration: int) -> dict[str, Any]:
    """Conductor's `keepLastN` (an input of the loop): only the last N iterations' outputs stay."""
    keep = walk.resolve(node["inputParameters"].get("keepLastN"))
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        return output
    return {k: v for k, v in output.items() if not k.isdigit() or int(k) > iteration - keep}


def _iteration_output(iteration: int, items: list[Any] | None) -> dict[str, Any]:
    if items is None:
        return {"iteration": iteration}
    item = items[iteration - 1]
    return {"iteration": iteration, "index": iteration - 1, "item": item, "loopIndex": iteration - 1,
            "loopItem": item}


def _loop_again(walk: Walk, node: WorkflowTask, loop: m.TaskState, iteration: int) -> bool:
    items = loop.spec.extra.get("items")
    if items is not None:
        return iteration < len(items)
    condition = node.get("loopCondition")
    assert condition is not None, "validation requires 'loopCondition' or 'items'"
    evaluator = node.get("evaluatorType")
    if evaluator in JAVASCRIPT:
        return javascript.to_boolean(javascript.evaluate(condition, _conductor_scope(walk, node, loop)))
    if evaluator == "value-param":
        value = walk.resolve(node["inputParameters"]).get(condition)
        return value is True or javascript.to_boolean(value) or (isinstance(value, str) and value.lower() == "true")
    return bool(evaluate(condition, walk.scope))


def _conductor_scope(walk: Walk, node: WorkflowTask, loop: m.TaskState) -> dict[str, Any]:
    """What Conductor's loop condition sees as `$`: the loop's inputParameters (resolved now),
    the loop's own output under its reference (`$.loop['iteration']`) and the latest output of
    each task inside the loop under its reference (`$.task.field`)."""
    scope: dict[str, Any] = dict(walk.resolve(node["inputParameters"]))
    for inner in walk.nodes(node["loopOver"]):
        entry = walk.scope.get(inner["taskReferenceName"])
        if entry is not None:
            scope[inner["taskReferenceName"]] = entry["output"]
    scope[node["taskReferenceName"]] = loop.output or {}
    return scope


def graph(task: Mapping[str, Any]) -> Shape:
    """Its body below it, with an edge back."""
    return Loop(type_title(task), task.get("loopOver", []))


KIND = Kind(names=("DO_WHILE",), role="container",
            fields=frozenset({"loopCondition", "loopOver", "items", "maxIterations", "evaluatorType"}),
            validate=validate, decide=decide, graph=graph, children=(NestedTasks("loopOver", "list"),), loops=True)
