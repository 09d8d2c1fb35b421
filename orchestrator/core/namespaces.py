"""Namespaces: teams share a cluster without sharing names.

Definitions, workflows and the task types workers serve belong to a namespace. Inside the
store a name of namespace `team-a` is written `team-a:charge_card`; the default namespace ("")
leaves names as they are. A user's names may not contain ':' (`definitions.NAME`), so
`team-a:charge_card` can only come from here, and two teams' `charge_card` never meet: not
in the definitions, not in a queue, not in a search.

The API qualifies names on the way in (from the caller's namespace: its token's, or the one it
asks for when its token allows) and shows them relative on the way out. Inside a definition,
names are relative to the definition's own namespace, so registering the same definitions in
two namespaces makes two independent sets. The decider learns a workflow's namespace from its
stored name, and qualifies the task types it queues; Conductor's system types that nodes or
the operator's infrastructure serve (HTTP, EVENT, ...) keep one queue for every namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar, cast

from .kinds import type_names
from .schema import TaskDef, WorkflowDef

__all__ = ["DEFAULT", "NAMESPACE", "SYSTEM_TYPES", "as_seen", "as_stored", "checked", "namespace_of", "own",
           "qualified", "queue_of", "relative", "topic_in"]

DEFAULT = ""
SEPARATOR = ":"
NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
SYSTEM_TYPES = frozenset(type_names())


def checked(namespace: str) -> str:
    """`namespace` if it is a namespace's name ("" is the default one), else ValueError."""
    if namespace and not NAMESPACE.match(namespace):
        raise ValueError(f"namespace '{namespace[:80]}' is not a namespace name: lower-case letters, digits, "
                         "'-' and '_', at most 63 characters, starting with a letter or digit")
    return namespace


def qualified(namespace: str, name: str) -> str:
    """`name` of `namespace` as the store knows it (unchanged if it is already qualified)."""
    if not namespace or name.startswith(namespace + SEPARATOR):
        return name
    return f"{namespace}{SEPARATOR}{name}"


def queue_of(namespace: str, task_type: str) -> str:
    """The queue tasks of `task_type` wait in for workers of `namespace`: its qualified name,
    except Conductor's system types (HTTP, EVENT, ...), whose one queue the nodes or the
    operator's own workers serve for every namespace."""
    return task_type if task_type in SYSTEM_TYPES else qualified(namespace, task_type)


def namespace_of(stored: str) -> str:
    """The namespace a stored name belongs to."""
    head, separator, _ = stored.partition(SEPARATOR)
    return head if separator else DEFAULT


def relative(stored: str) -> str:
    """A stored name as its own namespace sees it."""
    _, separator, tail = stored.partition(SEPARATOR)
    return tail if separator else stored


def topic_in(namespace: str, topic: str) -> str:
    """An event topic of `namespace`: topics are qualified like names."""
    return qualified(namespace, topic)


D = TypeVar("D", TaskDef, WorkflowDef)


def as_seen(definition: D) -> D:
    """A stored definition as its namespace sees it (its name relative)."""
    return cast(D, {**definition, "name": relative(definition["name"])})


def own(namespace: str, stored: Iterable[D]) -> list[D]:
    """The stored definitions of `namespace`, as it sees them, in the order given."""
    return [as_seen(d) for d in stored if namespace_of(d["name"]) == namespace]


def as_stored(namespace: str, definition: D) -> D:
    """A definition of `namespace` as the store keeps it (its name qualified)."""
    return cast(D, {**definition, "name": qualified(namespace, definition["name"])})
