"""The task kinds: one module each (orchestrator/core/kinds/), found through one registry.

A kind cannot be half-added: every module of the package is a listed kind or one of the few
helpers, every kind provides every part, the registry knows every type name the validator
accepts and every field the schema names belongs to a kind. A kind reaches the validator and
the decider only through what they hand it, never by import (they import the registry), and
the drivers ask a kind's parts instead of comparing type names.
"""

from __future__ import annotations

import ast
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core import kinds
from orchestrator.core.definitions import COMMON_TASK_FIELDS, TASK_KINDS, check_workflow_def, normalise_task_def
from orchestrator.core.kinds import KINDS, OWN_TYPE, Kind, kind_for, kind_of, type_names
from orchestrator.core.kinds.base import Box, Lanes, Loop, never, nothing
from orchestrator.core.schema import WorkflowTask

HELPERS = {"base", "checks", "refs", "steps"}   # what kinds share; every other module is a kind
PACKAGE = Path(kinds.__file__).parent
EVERY_KIND = (*KINDS, OWN_TYPE)


def _kinds_in(module_name: str) -> list[Kind]:
    module = __import__(f"{kinds.__name__}.{module_name}", fromlist=["_"])
    return [value for value in vars(module).values() if isinstance(value, Kind)]


def _modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules([str(PACKAGE)]))


def test_every_module_of_the_package_is_a_listed_kind_or_a_helper() -> None:
    for name in _modules():
        defined = _kinds_in(name)
        if name in HELPERS:
            assert defined == [], f"helper module {name} defines a kind"
            continue
        assert defined, f"kinds/{name}.py defines no Kind: a kind module holds one (or list it in HELPERS)"
        for kind in defined:
            assert any(kind is listed for listed in EVERY_KIND), \
                f"kinds/{name}.py defines {kind.names} but kinds/__init__.py does not list it in KINDS"


def test_the_registry_knows_every_type_name_the_validator_accepts() -> None:
    assert type_names() == TASK_KINDS
    assert len(set(TASK_KINDS)) == len(TASK_KINDS), "two kinds answer to the same name"
    for name in TASK_KINDS:
        kind = kind_of(name)
        assert kind is not None and name in kind.names
        assert kind_for(name) is kind
    refused = check_workflow_def({"name": "w", "tasks": [{"name": "x", "taskReferenceName": "x", "type": "NOPE"}]},
                                 {})
    assert f"use one of {', '.join(type_names())} (" in refused.problems[0]


@pytest.mark.parametrize("name", TASK_KINDS)
def test_a_task_of_each_type_is_not_refused_for_its_type(name: str) -> None:
    task = {"name": "fetch", "taskReferenceName": "t", "type": name}
    check = check_workflow_def({"name": "w", "tasks": [task]}, {"fetch": normalise_task_def({"name": "fetch"})})
    assert not [p for p in check.problems if "is not supported" in p or "unknown field" in p], check.problems


def test_a_type_that_is_no_kind_runs_on_workers_as_the_users_own() -> None:
    assert kind_of("charge_card") is None and kind_of(["SIMPLE"]) is None and kind_of(None) is None
    assert kind_for("charge_card") is OWN_TYPE and OWN_TYPE.runs_on_workers and OWN_TYPE.names == ()


def test_every_field_the_schema_names_belongs_to_a_kind() -> None:
    schema_fields = WorkflowTask.__required_keys__ | WorkflowTask.__optional_keys__
    kind_fields = {field for kind in KINDS for field in kind.fields}
    set_by_the_validator = {"taskType"}   # a type that is not Conductor's: OWN_TYPE writes it
    assert schema_fields - COMMON_TASK_FIELDS - set_by_the_validator <= kind_fields
    assert kind_fields <= schema_fields, "a kind's field is missing from schema.WorkflowTask"


@pytest.mark.parametrize("kind", EVERY_KIND, ids=lambda kind: "/".join(kind.names) or "own type")
def test_each_kind_provides_every_part(kind: Kind) -> None:
    assert all(name.isupper() for name in kind.names)
    assert kind.role in ("worker", "system", "container")
    assert isinstance(kind.fields, frozenset) and all(isinstance(f, str) for f in kind.fields)
    assert not kind.fields & COMMON_TASK_FIELDS
    args: Any = [None] * 6
    inspect.signature(kind.validate).bind(*args)          # (checker, task, out, where, known, previous)
    inspect.signature(kind.decide).bind(*args[:4])        # (walk, node, suffix, previous)
    for name in kind.names or ("OWN",):
        shape = kind.graph({"type": name, "taskReferenceName": "t", "name": "t"})
        assert isinstance(shape, (Box, Lanes, Loop)) and shape.title
    for nested in kind.children:
        assert nested.field in kind.fields
    _what_a_run_needs_answers(kind)


# Tasks of every shape the parts of what a run needs are asked about: as written, not yet valid.
SAMPLE_TASKS: list[dict[str, Any]] = [
    {}, {"name": "t", "taskReferenceName": "t", "inputParameters": {}},
    {"name": "t", "taskReferenceName": "t", "inputParameters": {"event": "orders", "startWorkflow": {"name": "w"},
                                                                "forkTaskName": "f", "forkTaskWorkflow": "w"},
     "subWorkflowParam": {"name": "w", "version": 2}, "forkTaskName": "f"},
    {"name": "t", "taskReferenceName": "t", "inputParameters": {"startWorkflow": "${x}"},
     "subWorkflowParam": {"name": "${x}", "workflowDefinition": {"name": "inner", "tasks": []}}},
    {"name": ["t"], "inputParameters": None, "subWorkflowParam": "w", "forkTaskName": 1},
]


def _what_a_run_needs_answers(kind: Kind) -> None:
    """Each part of what a run needs answers for a task of any shape, with the type it promises."""
    assert isinstance(kind.runs_user_code, bool)
    for name in kind.names or ("OWN",):
        for sample in SAMPLE_TASKS:
            task = {**sample, "type": name}
            assert all(isinstance(n, str) for n in kind.task_defs_named(task))
            assert isinstance(kind.needs_every_task_def(task), bool)
            assert all(isinstance(n, str) and isinstance(v, int) for n, v in kind.workflows_named(task))
            assert isinstance(kind.needs_every_workflow_def(task), bool)
            assert all(isinstance(d, dict) for d in kind.inline_workflows(task))
            assert all(isinstance(topic, str) for topic in kind.topics(task))


def test_a_plain_kind_needs_nothing_it_does_not_declare() -> None:
    noop = kind_of("NOOP")
    assert noop is not None and not noop.runs_user_code
    assert (noop.task_defs_named, noop.workflows_named, noop.inline_workflows, noop.topics) == (nothing,) * 4
    assert (noop.needs_every_task_def, noop.needs_every_workflow_def) == (never, never)


DRIVEN_BY_KINDS = ("definitions.py", "limits.py", "namespaces.py")


@pytest.mark.parametrize("name", DRIVEN_BY_KINDS)
def test_the_drivers_ask_the_kinds_instead_of_comparing_type_names(name: str) -> None:
    """`task["type"] == "WAIT"` or `kind in ("LAMBDA", ...)` in a driver is a kind's part living
    elsewhere: ask the kind (`kind_for(type).topics(task)`, ...). Type names in messages are fine."""
    path = PACKAGE.parent / name
    names = set(type_names())
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            named = {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)} & names
            assert not named, f"{name}:{node.lineno} compares with the type name(s) {sorted(named)}"


DRIVERS = ("definitions", "decider", "namespaces", "kinds")


def _runtime_imports(path: Path) -> set[str]:
    """The core modules a kind module imports when it runs (not those under TYPE_CHECKING)."""
    found: set[str] = set()
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, ast.ImportFrom) and statement.level:
            parts = (statement.module or "").split(".")
            if statement.level == 2:
                found.add(parts[0] if statement.module else "")
            elif statement.level == 1 and not statement.module:
                found.add("kinds")   # `from . import x`: the registry
    return found


@pytest.mark.parametrize("name", _modules())
def test_a_kind_reaches_the_drivers_only_through_what_it_is_handed(name: str) -> None:
    """The validator, the decider and the namespaces import the registry, which imports every
    kind: a kind importing them back would make the order of imports matter."""
    imported = _runtime_imports(PACKAGE / f"{name}.py")
    assert not imported & set(DRIVERS), f"kinds/{name}.py imports {sorted(imported & set(DRIVERS))}"
