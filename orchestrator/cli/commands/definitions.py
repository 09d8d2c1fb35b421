"""`orchestrator taskdef|workflowdef ...`: register, validate, get and list definitions."""

from __future__ import annotations

import argparse
from typing import Any

from ..command import add, group
from ..inputs import read_all_documents, read_documents
from ..output import EXIT_REFUSED, Reply
from ..views.definitions import definition_view, taskdefs_view, validation_view, workflowdefs_view


def add_definition_commands(commands: Any) -> None:
    taskdef = group(commands, "taskdef", "task definitions")
    add(taskdef, "register", "register task definitions from JSON/YAML files (one object or a list)",
        lambda c, a: [c.register_task_def(d) for d in read_all_documents(a.files)], files=True, view=taskdefs_view)
    add(taskdef, "get", "show one task definition", lambda c, a: c.get_task_def(a.name), with_name=True,
        view=definition_view)
    add(taskdef, "list", "list task definitions", lambda c, a: c.list_task_defs(), view=taskdefs_view)

    wfdef = group(commands, "workflowdef", "workflow definitions")
    add(wfdef, "register", "register workflow definitions from JSON/YAML files",
        lambda c, a: [c.register_workflow_def(d) for d in _dependencies_first(read_all_documents(a.files))],
        files=True, view=workflowdefs_view)
    add(wfdef, "validate", "check workflow definitions without registering them; exits 1 if any is invalid",
        _validate, files=True, view=validation_view)
    add(wfdef, "get", "show a workflow definition (latest version unless --version)",
        lambda c, a: c.get_workflow_def(a.name, a.version), with_name=True, version=True, view=definition_view)
    add(wfdef, "list", "list workflow definitions", lambda c, a: c.list_workflow_defs(), view=workflowdefs_view)


def _dependencies_first(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order workflow definitions so that each comes after the sub-workflows and failure
    workflows it names from the same batch (`register examples/*.yaml` in any file order).
    Names outside the batch must be registered already; a cycle keeps the given order
    (the server then says what is missing)."""
    from ...core.definitions import referenced_workflow_names

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
