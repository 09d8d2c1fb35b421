"""Definitions: register, read, list and validate task and workflow definitions.

Definitions are stored under their qualified names (core/namespaces.py) and shown relative: the
caller of a namespace registers, reads and lists only its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.definitions import (check_workflow_def, normalise_task_def, normalise_workflow_def, parse_document,
                                referenced_task_names, waited_topics, workflows_to_fetch)
from ..core.errors import InvalidArgument
from ..core.namespaces import as_seen, as_stored, own, qualified, relative, topic_in
from ..core.payloads import require_text_keys
from ..core.schema import TaskDef, WorkflowDef
from ..store import Store
from .access import allowed, request_namespace

MAX_REACHABLE_WORKFLOWS = 1000   # what one registration may look up: bounds its work


@dataclass(frozen=True)
class Source:
    """A definition as a caller gives it: an object (`definition`) or JSON/YAML text (`document`)."""

    kind: Literal["definition", "document", ""]   # "": neither was given
    definition: dict[str, Any] = field(default_factory=dict)
    document: str = ""


@dataclass(frozen=True)
class Validation:
    """A workflow definition checked: normalised when it has no problems."""

    definition: WorkflowDef | None
    problems: list[str]
    warnings: list[str]


def _read(source: Source) -> dict[str, Any]:
    if source.kind == "definition":
        return source.definition
    if source.kind == "document":
        document = parse_document(source.document)
        require_text_keys(document, "definition")
        return document
    raise InvalidArgument("source: give either 'definition' (a JSON object) or 'document' (JSON/YAML text)")


class Metadata:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def register_task_def(self, source: Source) -> TaskDef:
        """Register (or replace) a task definition; it as the caller sees it."""
        allowed("MetadataService/RegisterTaskDef")
        definition = normalise_task_def(_read(source))
        await self.store.put_task_def(as_stored(request_namespace(), definition))
        return definition

    async def task_def(self, name: str) -> TaskDef | None:
        allowed("MetadataService/GetTaskDef")
        if not name:
            raise InvalidArgument("name is required")
        definition = await self.store.get_task_def(qualified(request_namespace(), name))
        return as_seen(definition) if definition is not None else None

    async def task_defs(self) -> list[TaskDef]:
        """The caller's namespace's task definitions, by name."""
        allowed("MetadataService/ListTaskDefs")
        defs = await self.store.task_defs()
        return own(request_namespace(), (defs[n] for n in sorted(defs)))

    async def register_workflow_def(self, source: Source) -> WorkflowDef:
        """Register a workflow definition's version; it normalised, as the caller sees it."""
        allowed("MetadataService/RegisterWorkflowDef")
        raw = _read(source)
        definition = normalise_workflow_def(raw, *await self._known(raw))
        namespace = request_namespace()
        # first: no event is missed once it is stored
        await self.store.watch_topics(topic_in(namespace, t) for t in waited_topics(definition))
        await self.store.put_workflow_def(as_stored(namespace, definition))
        return definition

    async def validate_workflow_def(self, source: Source) -> Validation:
        """What registering the definition would say, without registering it."""
        allowed("MetadataService/ValidateWorkflowDef")
        raw = _read(source)
        definition, problems, warnings = check_workflow_def(raw, *await self._known(raw))
        return Validation(None if problems else definition, problems, warnings)

    async def workflow_def(self, name: str, version: int = 0) -> WorkflowDef | None:
        """A version of a workflow definition (0: the latest), or None."""
        allowed("MetadataService/GetWorkflowDef")
        if not name:
            raise InvalidArgument("name is required")
        if version < 0:
            raise InvalidArgument("version must be 0 (latest) or a positive version number")
        definition = await self.store.get_workflow_def(qualified(request_namespace(), name), version)
        return as_seen(definition) if definition is not None else None

    async def workflow_defs(self, name: str = "") -> list[WorkflowDef]:
        """Every version of the caller's namespace's workflow definitions (of `name` only, if given)."""
        allowed("MetadataService/ListWorkflowDefs")
        namespace = request_namespace()
        return own(namespace, await self.store.workflow_defs(qualified(namespace, name) if name else ""))

    async def _known(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The registered task definitions `raw` names, and every registered workflow definition
        it can reach (sub-workflows and failure workflows, transitively), so that a cycle back
        to `raw` through already registered definitions is a registration error."""
        namespace = request_namespace()
        workflows: dict[str, Any] = {}
        while wanted := workflows_to_fetch(raw, workflows):
            for name in sorted(wanted)[:MAX_REACHABLE_WORKFLOWS]:
                stored = await self.store.get_workflow_def(qualified(namespace, name))
                workflows[name] = as_seen(stored) if stored is not None else None
            if len(workflows) >= MAX_REACHABLE_WORKFLOWS:
                raise InvalidArgument(f"the definition reaches more than {MAX_REACHABLE_WORKFLOWS} workflow "
                                      "definitions through sub-workflows and failure workflows")
        found = {name: d for name, d in workflows.items() if d is not None}
        task_defs = await self.store.task_defs(qualified(namespace, n) for n in referenced_task_names(raw))
        return {relative(n): as_seen(d) for n, d in task_defs.items()}, found
