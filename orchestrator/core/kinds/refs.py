"""What the kinds' naming parts share (`Kind.task_defs_named`, `workflows_named`, ...): a name
written as text that the store can look up, and the version written beside it."""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from ..values import digits

SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate (half of a UTF-16 pair): no Unicode text, so no key of the store either."""


def literal(value: Any) -> TypeGuard[str]:
    """A name written as text (not a `${...}` or `$workflow.input...` expression) that the store
    can look up (a lone surrogate cannot be encoded: such a name is the validator's to refuse)."""
    return isinstance(value, str) and bool(value) and not value.startswith("$") and not SURROGATE.search(value)


def version_of(value: Any) -> int:
    """The version written beside a literal name: a number or digits, else 0 (the latest)."""
    if digits(value):
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
