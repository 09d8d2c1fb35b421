"""The task kinds, one module each, and the registry the validator, the decider and the console
ask: `kind_of("DO_WHILE")` is the kind of that type (None for a type that is not one of them),
`kind_for(type)` the kind that runs it (types that are not Conductor's run on workers of that
type: `own_type`). What a kind is: `base.py`.

Adding a kind is adding its module (a `Kind` value: its names, fields, validation, decision
step, children and graph, and what a run of it needs when that is anything: the definitions it
names, the topics it waits on, ...) and listing it in KINDS below; tests/unit/core/test_kinds.py
checks that every module of this package is listed, that the registry knows every type the
validator accepts and that the drivers compare no type names.
"""

from __future__ import annotations

from typing import Any

from . import (delegated, do_while, dynamic, event, exclusive_join, fork_join, fork_join_dynamic, http, human, inline,
               join, json_jq_transform, lambda_, noop, own_type, set_variable, simple, start_workflow, sub_workflow,
               switch, terminate, wait)
from .base import Kind, NestedTasks, Role

__all__ = ["KINDS", "OWN_TYPE", "Kind", "kind_for", "kind_of", "nested_task_fields", "type_names"]

KINDS: tuple[Kind, ...] = (
    # run on workers
    simple.KIND, dynamic.KIND, http.KIND, delegated.KIND,
    # run by the decider itself
    noop.KIND, set_variable.KIND, inline.KIND, lambda_.KIND, json_jq_transform.KIND, terminate.KIND, wait.KIND,
    human.KIND, sub_workflow.KIND, start_workflow.KIND, join.KIND, exclusive_join.KIND, event.KIND,
    # hold other tasks
    fork_join.KIND, fork_join_dynamic.KIND, switch.SWITCH, switch.DECISION, do_while.KIND,
)
"""Every kind, in the order messages list their type names."""

OWN_TYPE = own_type.KIND
"""The kind of a type that is not Conductor's (a task definition of workers of that type)."""

_BY_NAME = {name: kind for kind in KINDS for name in kind.names}


def kind_of(type_name: Any) -> Kind | None:
    """The kind a task type names (None: not one of ours, or not a name at all)."""
    return _BY_NAME.get(type_name) if isinstance(type_name, str) else None


def kind_for(type_name: Any) -> Kind:
    """The kind that runs a task of this type: its own, else that of types that are not Conductor's."""
    return kind_of(type_name) or OWN_TYPE


def type_names(role: Role | None = None) -> tuple[str, ...]:
    """Every type name (of kinds of `role`), in the order of KINDS."""
    return tuple(name for kind in KINDS if role is None or kind.role == role for name in kind.names)


def nested_task_fields() -> tuple[NestedTasks, ...]:
    """Every field that holds tasks in some kind, each once, in the order of KINDS (forkTasks,
    decisionCases, defaultCase, loopOver): what a walk over a definition descends into."""
    return tuple(dict.fromkeys(child for kind in KINDS for child in kind.children))
