"""What the kinds' `validate` parts share: checking the expressions and scripts written in
task fields (a bad one is a registration error, not a run-time surprise), and the fields
several kinds handle alike."""

from __future__ import annotations

from typing import Any

from .. import javascript
from ..safe_expr import SafeExpressionError, compile_expression
from ..values import is_template
from .base import Checker

JAVASCRIPT = ("javascript", "graaljs")
INLINE_EVALUATORS = ("expression", "javascript", "graaljs", "value-param")


def check_script(problems: list[str], source: Any, where: str, *, wrap_lambda: bool = False) -> None:
    """Check that a literal JavaScript source compiles (one with `${...}` is resolved first)."""
    if not isinstance(source, str) or not source.strip():
        problems.append(f"{where}: a script (text) is required")
        return
    if is_template(source):
        return
    problem = javascript.check_syntax(javascript.lambda_script(source) if wrap_lambda else source)
    if problem:
        problems.append(f"{where}: {problem}")


def check_safe_expression(problems: list[str], source: Any, where: str) -> str:
    """Check a safe expression (the language of `safe_expr.py`) compiles."""
    if not isinstance(source, str) or not source.strip():
        problems.append(f"{where}: an expression (text) is required")
        return ""
    try:
        compile_expression(source)
    except SafeExpressionError as exc:
        problems.append(f"{where}: {exc}")
    return source


def no_fields(*_: Any) -> None:
    """The `validate` of a kind with nothing of its own to check."""


def keep_sink(checker: Checker, task: dict[str, Any], out: dict[str, Any], *_: Any) -> None:
    """A worker-run I/O task keeps Conductor's `sink` as written (its worker reads it)."""
    if "sink" in task:
        out["sink"] = task["sink"]
