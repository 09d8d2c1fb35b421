"""Input-mapping expressions: `${workflow.input.x}`, `${ref.output.a[0].b}` and friends.

Definitions are read with Conductor's vocabulary (`parse_conductor_reference`): besides the
documented `input`/`output`/`variables`/`workflowId`/`correlationId`, the other fields
Conductor resolves (`${workflow.createTime}`, `${ref.status}`, `${CPEWF_TASK_ID}`) and JSONPath
keys in dot or bracket notation, with a final `.length()`: such plain paths are read and
looked up here, the fast path. The rest of Conductor's JSONPath (`${ref.output..status}`,
`[*]`, `[?(@.x == 'y')]`, `[0:2]`, `[-1]`, `$.` in front) is compiled and evaluated by
`jsonpaths.py`, which says what it reads and the bounds that keep a hostile path cheap.

A string that is exactly one expression resolves to the referenced value with its
type (a number stays a number). An expression inside a longer string is
interpolated as text. `$${` writes a literal `${`. Nothing here evaluates code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from collections.abc import Iterator

from .jsonpaths import CompiledPath, PathError, compile_path, evaluate

_EXPRESSION = re.compile(r"\$(\$?)\{([^}]*)\}")
_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")

WORKFLOW_FIELDS = ("input", "variables", "workflowId", "correlationId")
TASK_FIELDS = ("input", "output")

# What Conductor's parameter resolution also offers (`${workflow.createTime}`, `${ref.status}`, ...);
# definitions may use them. `parse_reference` keeps to the fields above, the documented core.
CONDUCTOR_WORKFLOW_FIELDS = WORKFLOW_FIELDS + (
    "output", "status", "workflowType", "version", "createTime", "updateTime", "parentWorkflowId",
    "parentWorkflowTaskId", "reasonForIncompletion", "schemaVersion", "taskToDomain")
CONDUCTOR_TASK_FIELDS = TASK_FIELDS + (
    "taskId", "status", "referenceTaskName", "retryCount", "taskType", "taskDefName", "scheduledTime",
    "startTime", "endTime", "updateTime", "reasonForIncompletion", "workerId", "iteration", "seq",
    "callbackAfterSeconds", "pollCount", "workflowInstanceId", "correlationId")
TASK_ID = "CPEWF_TASK_ID"
"""`${CPEWF_TASK_ID}`: the id of the task whose input is being resolved (Conductor's name)."""

LENGTH = "length()"
"""A path may end in `.length()`: the length of the list, object or text it names (JSONPath's)."""

# Conductor's paths are JSONPath in dot notation: keys may start with a digit or hold '-' and
# other characters (`${loop.output.3.task}`), `['key']` is a key, `[n]` an index.
_CONDUCTOR_STEP = re.compile(r"""\s*(?:\.\s*([^.\[\]'"\s][^.\[\]]*?)\s*(?=[.\[]|$)"""
                             r"""|\[\s*(\d+)\s*\]|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\])""")
_CONDUCTOR_ROOT = re.compile(r"\s*([A-Za-z0-9_][A-Za-z0-9_\-]*)")


class TemplateError(ValueError):
    """An expression that cannot be parsed or names nothing that can exist."""


@dataclass(frozen=True)
class Reference:
    """A parsed `${...}`: a root (`workflow` or a task reference) and a path below it. A
    JSONPath beyond plain keys and indexes has `jsonpath` (its `path` is then the first key)."""

    root: str
    path: tuple[str | int, ...]
    jsonpath: CompiledPath | None = field(default=None, compare=False)


def parse_reference(text: str) -> Reference:
    """Parse the inside of `${...}` into a root and a path of keys and indexes."""
    text = text.strip()
    if not text:
        raise TemplateError("empty expression '${}'")
    path: list[str | int] = []
    for raw in text.split("."):
        match = _SEGMENT.fullmatch(raw)
        if not match:
            raise TemplateError(f"'${{{text}}}': '{raw}' is not a name optionally followed by [index]")
        path.append(match.group(1))
        path.extend(int(i) for i in _INDEX.findall(match.group(2)))
    root = str(path[0])
    rest = tuple(path[1:])
    if root == "workflow":
        if not rest or rest[0] not in WORKFLOW_FIELDS:
            raise TemplateError(
                f"'${{{text}}}': after 'workflow.' use one of {', '.join(WORKFLOW_FIELDS)}")
    elif not rest or rest[0] not in TASK_FIELDS:
        raise TemplateError(f"'${{{text}}}': after a task reference use '.input' or '.output'")
    return Reference(root, rest)


@lru_cache(maxsize=4096)
def parse_conductor_reference(text: str) -> Reference:
    """Parse the inside of `${...}` as Conductor does: everything `parse_reference` reads, and
    the other workflow and task fields Conductor resolves (`${workflow.createTime}`,
    `${ref.status}`), `${CPEWF_TASK_ID}`, JSONPath keys (`output.3.x`, `['a b']`) and a final
    `.length()`; any other JSONPath (deep scans, wildcards, filters, slices: `jsonpaths.py`)
    is compiled. Cached: a decision resolves the same few texts again and again."""
    stripped = text.strip()
    if not stripped:
        raise TemplateError("empty expression '${}'")
    if stripped == TASK_ID:
        return Reference(TASK_ID, ())
    plain = _plain_path(stripped[2:] if stripped.startswith("$.") else stripped)
    if plain is None:
        try:
            compiled = compile_path(stripped)
        except PathError as exc:
            shown = stripped if len(stripped) <= 100 else stripped[:97] + "..."
            raise TemplateError(f"'${{{shown}}}': {exc}") from None
        for root, key in ((compiled.root, compiled.key), *compiled.filter_roots):
            _check_fields(stripped, root, [key] if key is not None else [])
        return Reference(compiled.root, (compiled.key,) if compiled.key is not None else (), compiled)
    root, path = plain
    _check_fields(stripped, root, path)
    return Reference(root, tuple(path))


def _plain_path(text: str) -> tuple[str, list[str | int]] | None:
    """A root and the keys and indexes below it, or None when the text is not only keys in dot
    or bracket notation and non-negative indexes, with a final `.length()` (a JSONPath then)."""
    match = _CONDUCTOR_ROOT.match(text)
    if not match:
        return None
    root, position = match.group(1), match.end()
    path: list[str | int] = []
    while position < len(text):
        step = _CONDUCTOR_STEP.match(text, position)
        if not step or step.end() == position:
            return None
        name, index, quoted, double = step.groups()
        if index is not None:
            path.append(int(index))
        elif name is not None:
            if name == "*" or ("(" in name and name != LENGTH):   # a wildcard, a function: not keys
                return None
            path.append(name)
        else:
            path.append(quoted if quoted is not None else double)
        position = step.end()
    if LENGTH in path[:-1] or any(p == "" for p in path):
        return None
    return root, path


def _check_fields(text: str, root: str, path: list[str | int] | list[str]) -> None:
    """The first key below `workflow` or a task reference is one Conductor gives it."""
    if root == "workflow":
        if not path or path[0] not in CONDUCTOR_WORKFLOW_FIELDS:
            raise TemplateError(f"'${{{text}}}': after 'workflow.' use one of "
                                f"{', '.join(CONDUCTOR_WORKFLOW_FIELDS)}")
    elif root == TASK_ID:
        raise TemplateError(f"'${{{text}}}': {TASK_ID} has no keys below it")
    elif not path or path[0] not in CONDUCTOR_TASK_FIELDS:
        raise TemplateError(f"'${{{text}}}': after a task reference use .input, .output or one of "
                            f"{', '.join(CONDUCTOR_TASK_FIELDS[2:])}")


def references_in(value: Any) -> Iterator[Reference]:
    """Every reference inside a template (strings, lists and objects, nested)."""
    if isinstance(value, str):
        for match in _EXPRESSION.finditer(value):
            if not match.group(1):
                reference = parse_conductor_reference(match.group(2))
                yield reference
                if reference.jsonpath is not None:   # what `$...` inside its filters reads
                    for root, key in reference.jsonpath.filter_roots:
                        yield Reference(root, (key,) if key is not None else ())
    elif isinstance(value, dict):
        for item in value.values():
            yield from references_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from references_in(item)


def resolve(template: Any, scope: dict[str, Any]) -> Any:
    """Fill a template from `scope` ({"workflow": {...}, "<ref>": {"input":..., "output":...}}).

    A reference to something absent resolves to None rather than failing: a task
    may legitimately leave an output key unset.
    """
    if isinstance(template, str):
        return _resolve_string(template, scope)
    if isinstance(template, dict):   # a text, the usual value, resolved without a call of this one
        return {key: _resolve_string(item, scope) if isinstance(item, str) else resolve(item, scope)
                for key, item in template.items()}
    if isinstance(template, list):
        return [resolve(item, scope) for item in template]
    return template


def _resolve_string(text: str, scope: dict[str, Any]) -> Any:
    whole = _EXPRESSION.fullmatch(text)
    if whole and not whole.group(1):
        return _lookup(parse_conductor_reference(whole.group(2)), scope)

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        value = _lookup(parse_conductor_reference(match.group(2)), scope)
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _EXPRESSION.sub(substitute, text)


def _lookup(reference: Reference, scope: dict[str, Any]) -> Any:
    """The value a parsed reference names in `scope` (None when absent). Resolved for every
    `${...}` of every new task's input, so its loop is kept plain (issue 21): a final `.length()`
    (the only place a plain path has one) is dealt with after the keys and indexes before it."""
    if reference.jsonpath is not None:
        return evaluate(reference.jsonpath, scope)
    node: Any = scope.get(reference.root)
    path = reference.path
    counts = bool(path) and path[-1] == LENGTH
    for step in path[:-1] if counts else path:
        if node is None:
            return None
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and -len(node) <= step < len(node) else None
        else:
            node = node.get(step) if isinstance(node, dict) else None
    if counts:
        if isinstance(node, dict) and LENGTH in node:   # a key of that name is read as a key
            return node.get(LENGTH)
        return len(node) if isinstance(node, (list, dict, str)) else None
    return node
