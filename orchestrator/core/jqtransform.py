"""JSON_JQ_TRANSFORM: Conductor's jq task, on the `jq` package (libjq).

The program (`inputParameters.queryExpression`) runs over the task's whole input, as in
Conductor; the output is `{"result": first value or null, "resultList": [every value]}`.
Bounds: MAX_INPUT_CHARS of input (as JSON), MAX_RESULTS values and MAX_OUTPUT_CHARS of
output; beyond them the task fails with the limit's name.

libjq cannot be interrupted and holds the GIL while it runs, so a program never runs in the
node's process: compiling and running it are requests to a sandbox process
(`orchestrator/core/sandbox.py`), which is killed and replaced when the program runs longer than
MAX_MILLISECONDS (the caller waits that + sandbox.GRACE_MS at most) or ends it by going beyond
its memory limit (sandbox.MEMORY_BYTES: libjq then aborts with "cannot allocate memory"). Only
that evaluation fails, with the reason. `[.a[] as $x | .a[] as $y | .a[] as $z | .a[] as $w |
1]` over 100 items, `[] | .[300000000] = 1` and `"x" * 1e9` are such programs.

Some constructs are refused before anything runs (FORBIDDEN): those that read the node's
process rather than the task's input (`$ENV` and `env`, `input`/`inputs`, `input_filename`,
`$__loc__`, `$__prog_args`, `halt`, `halt_error`, `debug`, `stderr`, `import` and `include`;
a sandbox process has an environment of its own, so `$ENV` would show nothing of the node's,
but a program has no business with it), and, as before the sandbox, those whose work does
not follow the input: `range`, `repeat`, `while`, `until`, `recurse(...)` with arguments,
user `def`initions and `combinations`.

Cost of the sandbox, measured on the 2-core development machine (`python -m
orchestrator.core.jqtransform`, `python -m bench --scenario sandbox`): a small transform takes
0.02 ms in the node's process and 0.10-0.14 ms through the sandbox, `check_query` 0.12 ms; the
carrying grows with the input: about +1 ms for 60 KiB of input, +7 ms for 750 KiB (where jq
itself takes 50-500 ms, by program). A program stopped at the limit costs its caller the limit +
sandbox.GRACE_MS (1.3 s) and the next evaluation nothing (the pool's other process serves it
while the killed one's replacement starts).
"""

from __future__ import annotations

import json
import re
import time
from functools import lru_cache
from typing import Any

import jq  # type: ignore[import-not-found,unused-ignore]  # a C extension without type information

from . import sandbox

__all__ = ["JqError", "MAX_MILLISECONDS", "check_query", "transform"]

MAX_MILLISECONDS = 1000
"""How long one jq evaluation may run (in a sandbox process); then the process is killed."""
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
        raise JqError(f"'queryExpression' does not compile: {_one_line(str(exc))}") from None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else "jq failed"
    return line if len(line) <= 300 else line[:297] + "..."


def _refused(query: Any) -> str | None:
    """Why `query` is refused before anything runs (not a program, too long, FORBIDDEN), or None."""
    if not isinstance(query, str) or not query.strip():
        return "'queryExpression' must be a jq program (text)"
    if len(query) > MAX_QUERY_CHARS:
        return f"'queryExpression' has {len(query)} characters, more than the limit of {MAX_QUERY_CHARS}"
    used = [name for name, pattern in FORBIDDEN.items() if pattern.search(query)]
    if used:
        return (f"'queryExpression' uses {', '.join(used)}, which this version refuses: loops and recursion "
                "that do not follow the input are not allowed, nor is reading the node's environment or files")
    return None


def check_query(query: Any) -> str | None:
    """Why `query` is not a jq program that compiles, or None (compiled in a sandbox process)."""
    problem = _refused(query)
    if problem:
        return problem
    try:
        _in_sandbox("jq_check", {"query": query}, MAX_MILLISECONDS)
    except JqError as exc:
        return str(exc)
    return None


def transform(inputs: dict[str, Any], *, timeout_ms: int = MAX_MILLISECONDS) -> dict[str, Any]:
    """Run `inputs['queryExpression']` over `inputs` in a sandbox process; JqError with a
    one-line reason. The caller waits at most `timeout_ms` + sandbox.GRACE_MS."""
    query = inputs.get("queryExpression")
    problem = _refused(query)
    if problem:
        raise JqError(problem)
    try:
        text = json.dumps(inputs, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JqError(f"the input is not JSON: {exc}") from None
    if len(text) > MAX_INPUT_CHARS:
        raise JqError(f"the input is {len(text)} characters of JSON, more than the limit of {MAX_INPUT_CHARS} "
                      "(jqtransform.MAX_INPUT_CHARS)")
    result = _in_sandbox("jq", {"query": query, "input": text}, timeout_ms)
    if not isinstance(result, dict):   # not expected: the handler always answers this way
        raise JqError("the program's result could not be read")
    return result


def _in_sandbox(kind: str, request: dict[str, Any], timeout_ms: int) -> Any:
    try:
        return sandbox.run(kind, request, timeout_ms)
    except sandbox.Refused as exc:
        raise JqError(_one_line(str(exc))) from None
    except sandbox.Overrun:
        raise JqError(f"the program ran longer than the limit of {timeout_ms} ms (jqtransform.MAX_MILLISECONDS) "
                      "and was stopped; make it do less") from None
    except sandbox.Crashed as exc:
        raise JqError(f"the program ended the process that ran it ({exc}); most likely it used more memory "
                      f"than the limit of {sandbox.MEMORY_BYTES >> 20} MiB (sandbox.MEMORY_BYTES)") from None
    except sandbox.SandboxError as exc:
        raise JqError(f"the program could not be run: {exc}") from None


def _transform_here(query: str, text: str) -> str:
    """The JSON text of the output of `query` over the JSON text `text`, run in this process (a
    sandbox process's handler; the measurement compares it with the sandbox)."""
    program = _compiled(query)
    parts: list[str] = []
    size = 0
    try:
        for value in program.input_text(text):
            part = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            parts.append(part)
            size += len(part)
            if len(parts) > MAX_RESULTS or size > MAX_OUTPUT_CHARS:
                raise JqError(f"the program gives more than {MAX_RESULTS} values or {MAX_OUTPUT_CHARS} characters "
                              "(jqtransform.MAX_RESULTS, MAX_OUTPUT_CHARS)")
    except JqError:
        raise
    except (ValueError, TypeError) as exc:
        raise JqError(_one_line(str(exc))) from None
    return '{"result":' + (parts[0] if parts else "null") + ',"resultList":[' + ",".join(parts) + "]}"


def _check_here(query: str) -> str:
    _compiled(query)
    return "null"


def _warm_up() -> None:
    _transform_here(".", "{}")


# What a sandbox process answers (orchestrator/core/sandbox.py).
sandbox.handle("jq", lambda request: _transform_here(str(request["query"]), str(request["input"])),
               warm_up=_warm_up)
sandbox.handle("jq_check", lambda request: _check_here(str(request["query"])))


def _measure(rounds: int = 400) -> dict[str, float]:
    """Milliseconds per small evaluation: in this process (how the node ran jq before the
    sandbox) and through the sandbox."""
    inputs = {"persons": [{"name": "a", "id": 1}, {"name": "b", "id": 2}], "queryExpression": ".persons[] | .id"}
    text = json.dumps(inputs, separators=(",", ":"))
    transform(inputs)   # warm up: the sandbox process starts
    _transform_here(str(inputs["queryExpression"]), text)

    def per_call(call: Any) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            call()
        return round((time.perf_counter() - started) * 1000 / rounds, 3)

    in_process = per_call(lambda: json.loads(_transform_here(str(inputs["queryExpression"]),
                                                             json.dumps(inputs, separators=(",", ":")))))
    sandboxed = per_call(lambda: transform(inputs))
    check = per_call(lambda: check_query(inputs["queryExpression"]))
    sandbox.shutdown()
    return {"in_process_ms": in_process, "sandbox_ms": sandboxed, "sandbox_check_query_ms": check}


if __name__ == "__main__":   # pragma: no cover - a measurement, not a test
    print(json.dumps(_measure(), indent=2))
