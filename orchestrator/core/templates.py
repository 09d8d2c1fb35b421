"""Input-mapping expressions: `${workflow.input.x}`, `${ref.output.a[0].b}` and friends.

A string that is exactly one expression resolves to the referenced value with its
type (a number stays a number). An expression inside a longer string is
interpolated as text. `$${` writes a literal `${`. Nothing here evaluates code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator

_EXPRESSION = re.compile(r"\$(\$?)\{([^}]*)\}")
_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")

WORKFLOW_FIELDS = ("input", "variables", "workflowId", "correlationId")
TASK_FIELDS = ("input", "output")


class TemplateError(ValueError):
    """An expression that cannot be parsed or names nothing that can exist."""


@dataclass(frozen=True)
class Reference:
    """A parsed `${...}`: a root (`workflow` or a task reference) and a path below it."""

    root: str
    path: tuple[str | int, ...]


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


def references_in(value: Any) -> Iterator[Reference]:
    """Every reference inside a template (strings, lists and objects, nested)."""
    if isinstance(value, str):
        for match in _EXPRESSION.finditer(value):
            if not match.group(1):
                yield parse_reference(match.group(2))
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
    if isinstance(template, dict):
        return {key: resolve(item, scope) for key, item in template.items()}
    if isinstance(template, list):
        return [resolve(item, scope) for item in template]
    return template


def _resolve_string(text: str, scope: dict[str, Any]) -> Any:
    whole = _EXPRESSION.fullmatch(text)
    if whole and not whole.group(1):
        return _lookup(parse_reference(whole.group(2)), scope)

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        value = _lookup(parse_reference(match.group(2)), scope)
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    return _EXPRESSION.sub(substitute, text)


def _lookup(reference: Reference, scope: dict[str, Any]) -> Any:
    node: Any = scope.get(reference.root)
    for step in reference.path:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and -len(node) <= step < len(node) else None
        else:
            node = node.get(step) if isinstance(node, dict) else None
        if node is None:
            return None
    return node
