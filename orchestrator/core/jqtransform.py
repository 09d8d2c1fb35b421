"""JSON_JQ_TRANSFORM: Conductor's jq task, on the `jq` package (libjq).

The program (`inputParameters.queryExpression`) runs over the task's whole input, as in
Conductor; the output is `{"result": first value or null, "resultList": [every value]}`.
Bounds: MAX_INPUT_CHARS of input (as JSON), MAX_RESULTS values and MAX_OUTPUT_CHARS of
output; beyond them the task fails with the limit's name.

libjq runs in this process holding the GIL, with no time limit, and cannot be interrupted: a
program that loops (`last(range(1e9))`, `repeat(1)`) would hold the whole node, not just the
decider. So the constructs whose work does not depend on the input are refused (FORBIDDEN):
`range`, `repeat`, `while`, `until`, `recurse(...)` with arguments, user `def`initions (the
way to recurse) and `combinations`. So are those that read the node's process rather than the
task's input: `$ENV` and `env` (the node's environment variables: secrets), `input`/`inputs`,
`input_filename`, `$__loc__`, `$__prog_args`, `halt`, `halt_error`, `debug`, `stderr`,
`import` and `include`. What is left (paths, `map`, `select`, `..`, `reduce`/`foreach` over
the input, string functions) does work in proportion to the input, which is bounded. A regular
expression that backtracks catastrophically on its input is the risk that remains.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jq  # type: ignore[import-not-found,unused-ignore]  # a C extension without type information

__all__ = ["JqError", "check_query", "transform"]

MAX_QUERY_CHARS = 16 * 1024
MAX_INPUT_CHARS = 1024 * 1024
MAX_RESULTS = 10_000
MAX_OUTPUT_CHARS = 2 * 1024 * 1024


class JqError(ValueError):
    """A jq program that does not compile, fails, or goes beyond a bound."""


FORBIDDEN: dict[str, re.Pattern[str]] = {name: re.compile(pattern) for name, pattern in {
    "range": r"(?<![.$\w\"])range\s*\(",
    "repeat": r"(?<![.$\w\"])repeat\b(?!\s*:)",
    "while": r"(?<![.$\w\"])while\s*\(",
    "until": r"(?<![.$\w\"])until\s*\(",
    "recurse(...)": r"(?<![.$\w\"])recurse\s*\(",
    "def": r"(?<![.$\w\"])def\s+[A-Za-z_]",
    "combinations": r"(?<![.$\w\"])combinations\b(?!\s*:)",
    "$ENV": r"\$ENV\b",
    "env": r"(?<![.$\w\"])env\b(?!\s*:)",
    "input": r"(?<![.$\w\"])inputs?\b(?!\s*:)",
    "input_filename": r"(?<![.$\w\"])input_filename\b",
    "$__loc__": r"\$__loc__",
    "$__prog_args": r"\$__prog_args",
    "halt": r"(?<![.$\w\"])halt(?:_error)?\b(?!\s*:)",
    "debug": r"(?<![.$\w\"])debug\b(?!\s*:)",
    "stderr": r"(?<![.$\w\"])stderr\b(?!\s*:)",
    "import": r"(?<![.$\w\"])(?:import|include)\s+\"",
}.items()}


@lru_cache(maxsize=256)
def _compiled(query: str) -> Any:
    try:
        return jq.compile(query)
    except ValueError as exc:
        raise JqError(_one_line(str(exc))) from None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else "jq failed"
    return line if len(line) <= 300 else line[:297] + "..."


def check_query(query: Any) -> str | None:
    """Why `query` is not a jq program that compiles, or None."""
    if not isinstance(query, str) or not query.strip():
        return "'queryExpression' must be a jq program (text)"
    if len(query) > MAX_QUERY_CHARS:
        return f"'queryExpression' has {len(query)} characters, more than the limit of {MAX_QUERY_CHARS}"
    used = [name for name, pattern in FORBIDDEN.items() if pattern.search(query)]
    if used:
        return (f"'queryExpression' uses {', '.join(used)}, which this version refuses: jq runs inside the node "
                "without a time limit, so loops and recursion that do not follow the input are not allowed, nor is "
                "reading the node's environment or files")
    try:
        _compiled(query)
    except JqError as exc:
        return f"'queryExpression' does not compile: {exc}"
    return None


def transform(inputs: dict[str, Any]) -> dict[str, Any]:
    """Run `inputs['queryExpression']` over `inputs`; JqError with a one-line reason."""
    query = inputs.get("queryExpression")
    problem = check_query(query)
    if problem:
        raise JqError(problem)
    try:
        text = json.dumps(inputs, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JqError(f"the input is not JSON: {exc}") from None
    if len(text) > MAX_INPUT_CHARS:
        raise JqError(f"the input is {len(text)} characters of JSON, more than the limit of {MAX_INPUT_CHARS} "
                      "(jqtransform.MAX_INPUT_CHARS)")
    results: list[Any] = []
    size = 0
    try:
        for value in _compiled(str(query)).input_text(text):
            results.append(value)
            size += len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
            if len(results) > MAX_RESULTS or size > MAX_OUTPUT_CHARS:
                raise JqError(f"the program gives more than {MAX_RESULTS} values or {MAX_OUTPUT_CHARS} characters "
                              "(jqtransform.MAX_RESULTS, MAX_OUTPUT_CHARS)")
    except JqError:
        raise
    except (ValueError, TypeError) as exc:
        raise JqError(_one_line(str(exc))) from None
    return {"result": results[0] if results else None, "resultList": results}
