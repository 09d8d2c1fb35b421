"""SWITCH, and DECISION (Conductor's older SWITCH): run the case the expression selects, or
the default case. They differ in how the case is named (SWITCH: `expression` for its
`evaluatorType`; DECISION: `caseValueParam` or a JavaScript `caseExpression`) and decide alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import javascript
from .. import statuses as st
from ..safe_expr import evaluate
from ..schema import WorkflowTask
from ..values import names_key
from .base import DONE, Checker, Kind, Lanes, NestedTasks, Outcome, Shape, type_title
from .checks import JAVASCRIPT, check_safe_expression, check_script
from .steps import instant

if TYPE_CHECKING:
    from ..decider.walk import Walk

CASES = (NestedTasks("decisionCases", "cases"), NestedTasks("defaultCase", "list"))


# ---------------------------------------------------------------- registration

def validate_switch(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
                    _previous: Any) -> None:
    evaluator = task.get("evaluatorType") or "value-param"
    expression = task.get("expression")
    if evaluator == "value-param":
        if not names_key(expression, out["inputParameters"]):
            checker.problems.append(f"{where}: with evaluatorType 'value-param', 'expression' must name a key "
                                    "of 'inputParameters'")
    elif evaluator == "expression":
        check_safe_expression(checker.problems, expression, f"{where}: 'expression'")
    elif evaluator in JAVASCRIPT:
        check_script(checker.problems, expression, f"{where}: 'expression'")
    else:
        checker.problems.append(f"{where}: 'evaluatorType' must be 'value-param', 'expression', 'javascript' or "
                                "'graaljs'")
    _check_cases(checker, task, out, where, known)
    out["evaluatorType"], out["expression"] = evaluator, expression


def validate_decision(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str],
                      _previous: Any) -> None:
    param, expression = task.get("caseValueParam"), task.get("caseExpression")
    if param:
        if not names_key(param, out["inputParameters"]):
            checker.problems.append(f"{where}: 'caseValueParam' must name a key of 'inputParameters'")
        out["caseValueParam"] = param
    elif expression:
        check_script(checker.problems, expression, f"{where}: 'caseExpression'")
        out["caseExpression"] = expression
    else:
        checker.problems.append(f"{where}: a DECISION needs 'caseValueParam' (an input parameter) or "
                                "'caseExpression' (JavaScript)")
    _check_cases(checker, task, out, where, known)


def _check_cases(checker: Checker, task: dict[str, Any], out: dict[str, Any], where: str, known: set[str]) -> None:
    """Each case and the default case, a task list each, side by side: a reference made in one
    is known after the switch, not in the other cases."""
    cases = task.get("decisionCases", {})
    if cases is None:
        cases = {}
    if not isinstance(cases, dict):
        checker.problems.append(f"{where}: 'decisionCases' must be an object of case -> task list")
        cases = {}
    before = set(known)
    out["decisionCases"] = {}
    for case, tasks in cases.items():
        branch_known = set(before)
        out["decisionCases"][str(case)] = checker.sequence(tasks, f"{where}.decisionCases[{case!r}]", branch_known)
        known |= branch_known
    default = task.get("defaultCase", [])
    branch_known = set(before)
    out["defaultCase"] = checker.sequence(default, f"{where}.defaultCase", branch_known) if default else []
    known |= branch_known


# ---------------------------------------------------------------- run time

def decide(walk: Walk, node: WorkflowTask, suffix: str, _previous: WorkflowTask | None) -> Outcome:
    outcome, task = instant(walk, node, suffix, lambda inputs: _select_case(node, inputs))
    if not outcome.done:
        return outcome
    if task.runtime.status != st.TASK_COMPLETED:   # optional and failed, or skipped: no case runs
        return DONE
    case = (task.output or {})["selectedCase"]
    branch = node["decisionCases"].get(case, node["defaultCase"])
    return walk.run(branch, suffix)


def _select_case(node: WorkflowTask, inputs: dict[str, Any]) -> dict[str, Any]:
    if node["type"] == "DECISION":   # Conductor's older SWITCH
        if node.get("caseValueParam"):
            value = inputs.get(node["caseValueParam"])
            case = value if isinstance(value, str) else json.dumps(value)
        else:
            case = javascript.to_case(javascript.evaluate(node["caseExpression"], inputs))
        return {"caseOutput": [case], "selectedCase": case}
    evaluator = node["evaluatorType"]
    if evaluator == "value-param":
        value = inputs.get(node["expression"])
    elif evaluator in JAVASCRIPT:
        return _selected(javascript.to_case(javascript.evaluate(node["expression"], inputs)))
    else:
        value = evaluate(node["expression"], inputs)
    return _selected(value if isinstance(value, str) else json.dumps(value))


def _selected(case: str) -> dict[str, Any]:
    return {"evaluationResult": [case], "selectedCase": case}


def graph(task: Mapping[str, Any]) -> Shape:
    """A lane per case, in the order of their names, then the default case."""
    cases = [(str(case), tasks) for case, tasks in sorted(task.get("decisionCases", {}).items())]
    return Lanes(type_title(task), [*cases, ("default", task.get("defaultCase", []))])


SWITCH = Kind(names=("SWITCH",), role="container",
              fields=frozenset({"evaluatorType", "expression", "decisionCases", "defaultCase"}),
              validate=validate_switch, decide=decide, graph=graph, children=CASES)
DECISION = Kind(names=("DECISION",), role="container",
                fields=frozenset({"caseValueParam", "caseExpression", "decisionCases", "defaultCase"}),
                validate=validate_decision, decide=decide, children=CASES)
"""Drawn as one box, as the console always has (its cases are not drawn)."""
