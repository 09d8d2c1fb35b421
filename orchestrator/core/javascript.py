"""JavaScript where Conductor uses it: INLINE and SWITCH with `evaluatorType` javascript or
graaljs, DECISION's `caseExpression`, a DO_WHILE `loopCondition` written for Conductor, and
LAMBDA's `scriptExpression`.

This is the only module that runs JavaScript, and it never runs it in the node's process: an
evaluation is a request to a sandbox process (`orchestrator/core/sandbox.py`: a small pool of
processes with time, CPU and memory limits, killed and replaced when a script overruns or
crashes them). There, V8 (the `mini-racer` package) gives a script nothing but `$` (a copy of
its input, as JSON) and the language's own built-ins: no I/O, no timers, no modules, no host
objects. Each evaluation is bounded:

- MAX_MILLISECONDS of run time, by V8 (the process answers at the limit and is then replaced);
  should V8 not stop it (a built-in running in C++), the node kills the process sandbox.GRACE_MS
  later. Either way only that evaluation fails, with the reason;
- MAX_HEAP_BYTES of V8 heap (more fails the evaluation), and the sandbox process's memory
  limit (sandbox.MEMORY_BYTES) for what V8 allocates outside its heap: a script that goes
  beyond it ends its process, and only its evaluation fails;
- MAX_SOURCE_CHARS of source, MAX_INPUT_CHARS of input and MAX_RESULT_CHARS of result
  (all measured as JSON text).

Inside a sandbox process one V8 context is reused for every evaluation, not one per evaluation:
an evaluation in the shared context takes about 0.5 ms, a fresh context 3 ms bare and 6 ms
locked down as below (the first one in a process about 40 ms, V8's start-up). What a fresh
context would give for free is isolation, so the shared one is locked down once: every built-in
object, prototype and constructor reachable from the global object is frozen and the global
object's own properties are made read-only, so one script cannot change what the next one
sees; a script runs inside a function (its `var`s and functions are local), and any global
property it still manages to add (an assignment to an undeclared name) is deleted when it ends;
the legacy RegExp statics are reset. A context that timed out, ran out of memory or could not be
cleaned is not used again: its process answers and ends, and the next evaluation gets a new
process.

A few of V8's built-ins run over an array's whole length in C++, where the time limit cannot
stop them, and on a huge array some abort the process ("Fatal JavaScript out of memory", e.g.
`new Array(1e9).fill(0)`). The sandbox contains both (the kill, the process's end), and the
lock-down still makes every array method refuse a receiver longer than MAX_ARRAY_LENGTH and
typed arrays and buffers larger than MAX_BUFFER_BYTES, so such scripts fail at once with a
clear reason instead of costing a process.

Cost of the sandbox, measured on the 2-core development machine (`python -m
orchestrator.core.javascript`, `python -m bench --scenario sandbox`): a small evaluation takes
0.25-0.34 ms in the process that owns the context and 0.41 ms through the sandbox (a round trip
on a pipe and a JSON encoding more each way); `check_syntax` 0.34 ms. The carrying grows with the
input: about +1 ms for 60 KiB of input, +10 ms for 750 KiB.

Results are returned as JSON (`JSON.stringify` in V8): `undefined` becomes None, dates
become ISO text, NaN and Infinity become None (JSON has no such numbers).
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from typing import Any

from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, MiniRacer

from . import sandbox

__all__ = ["JavaScriptError", "MAX_HEAP_BYTES", "MAX_MILLISECONDS", "check_syntax", "evaluate", "lambda_script",
           "to_boolean", "to_case"]

MAX_MILLISECONDS = 100
MAX_HEAP_BYTES = 64 * 1024 * 1024
MAX_SOURCE_CHARS = 64 * 1024
MAX_INPUT_CHARS = 2 * 1024 * 1024
MAX_RESULT_CHARS = 2 * 1024 * 1024
MAX_ARRAY_LENGTH = 1 << 24
"""The longest array (or array-like) a built-in array method accepts in a script."""
MAX_BUFFER_BYTES = 32 * 1024 * 1024
"""The largest typed array or buffer a script may create."""
REUSE_LIMIT = 10_000
"""Evaluations one context serves before it is replaced (bounds what garbage a long-lived
context can accumulate). In a sandbox process, the process is replaced with it."""


class JavaScriptError(ValueError):
    """A script that does not compile, throws, runs too long, uses too much memory or
    returns what JSON cannot hold. The message says which, in one line."""


# The code installed once per context. `__run` evaluates the user's source with a direct
# `eval` inside a (sloppy-mode) function, so that the source's completion value is the
# result (`function e(){...} e();` and `$.a > 1` both work, as in Conductor) and its
# declarations stay local. The lockdown then freezes every object reachable from the
# global object (and the intrinsics only reachable through syntax), and makes the global
# object's own properties read-only.
_PRELUDE = r"""
(function () {
  'use strict';
  const stringify = JSON.stringify, parse = JSON.parse, ownNames = Object.getOwnPropertyNames;
  const baseline = new Set();
  // Made by the Function constructor so that it is sloppy-mode code, as Conductor's scripts
  // expect (an assignment to an undeclared name works; `this` is the global object).
  const evaluate = new Function('$', '__source', 'return eval(__source);');
  function clean() {
    for (const key of ownNames(globalThis)) {
      if (!baseline.has(key)) {
        try { delete globalThis[key]; } catch (e) { }
      }
    }
    for (const key of ownNames(globalThis)) { if (!baseline.has(key)) return false; }
    return true;
  }
  function message(error) {
    try {
      if (error instanceof Error) return String(error.name) + ': ' + String(error.message);
      return 'Uncaught ' + String(error);
    } catch (e) { return 'the script threw something that cannot be shown'; }
  }
  // V8 keeps the legacy RegExp statics (RegExp.input, $1-$9, lastMatch, leftContext, ...) per
  // context, outside any object a freeze can reach: the last match of one evaluation would be
  // readable by the next. A match of an empty pattern on an empty text resets them all to ''.
  const blank = /(?:)/, exec = RegExp.prototype.exec;
  function forgetMatches() { Reflect.apply(exec, blank, ['']); }
  function run(source, input) {
    let outcome;
    try {
      const value = evaluate(parse(input), source);
      outcome = ['ok', stringify(value === undefined ? null : value)];
    } catch (error) {
      outcome = ['error', message(error)];
    }
    forgetMatches();
    outcome.push(clean());
    return stringify(outcome);
  }
  function check(source) {
    try { new Function(source); return ''; } catch (e) { return message(e); }
  }
  // V8 runs some built-ins over an array's whole `length` in C++, where the time limit
  // cannot stop them, and a few of those abort the whole process when the array is huge
  // (`new Array(1e9).fill(0)`: "Fatal JavaScript out of memory"). So every method of
  // Array.prototype and of the typed arrays refuses a receiver longer than MAX_LENGTH, and
  // typed arrays and buffers cannot be made larger than MAX_BYTES.
  const MAX_LENGTH = @MAX_LENGTH@, MAX_BYTES = @MAX_BYTES@;
  const tooLong = () => new RangeError('arrays of more than ' + MAX_LENGTH + ' elements are not allowed in ' +
                                       'workflow scripts');
  function guardMethods(prototype) {
    for (const key of Reflect.ownKeys(prototype)) {
      const found = Object.getOwnPropertyDescriptor(prototype, key);
      if (!found || !('value' in found) || typeof found.value !== 'function' || key === 'constructor') continue;
      const original = found.value;
      const guarded = {[key](...args) {
        if (this !== null && this !== undefined && +this.length > MAX_LENGTH) throw tooLong();
        return Reflect.apply(original, this, args);
      }}[key];
      Object.defineProperty(guarded, 'length', {value: original.length});
      found.value = guarded;
      Object.defineProperty(prototype, key, found);
    }
  }
  guardMethods(Array.prototype);
  const TypedArray = Object.getPrototypeOf(Int8Array);
  guardMethods(TypedArray.prototype);
  const from = Array.from;
  Object.defineProperty(Array, 'from', {value: function from_(items, ...rest) {
    if (items !== null && items !== undefined && +items.length > MAX_LENGTH) throw tooLong();
    return Reflect.apply(from, this, [items, ...rest]);
  }, writable: true, configurable: true});
  for (const name of ['ArrayBuffer', 'SharedArrayBuffer', 'Int8Array', 'Uint8Array', 'Uint8ClampedArray',
                      'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array', 'Float32Array', 'Float64Array',
                      'BigInt64Array', 'BigUint64Array', 'Float16Array']) {
    const original = globalThis[name];
    if (typeof original !== 'function') continue;
    const unit = original.BYTES_PER_ELEMENT || 1;
    globalThis[name] = new Proxy(original, {construct(target, args, newTarget) {
      const size = args[0];
      if (typeof size === 'number' && size * unit > MAX_BYTES) {
        throw new RangeError('buffers of more than ' + MAX_BYTES + ' bytes are not allowed in workflow scripts');
      }
      if (size !== null && typeof size === 'object' && +size.length * unit > MAX_BYTES) {
        throw new RangeError('buffers of more than ' + MAX_BYTES + ' bytes are not allowed in workflow scripts');
      }
      return Reflect.construct(target, args, newTarget);
    }});
  }
  Object.defineProperty(globalThis, '__conductor', {value: Object.freeze({run, check}),
                                                    writable: false, configurable: false, enumerable: false});
  const roots = [globalThis,
    Object.getPrototypeOf([][Symbol.iterator]()), Object.getPrototypeOf(new Map()[Symbol.iterator]()),
    Object.getPrototypeOf(new Set()[Symbol.iterator]()), Object.getPrototypeOf(''[Symbol.iterator]()),
    Object.getPrototypeOf(/a/[Symbol.matchAll]('')),
    Object.getPrototypeOf(function* () {}), Object.getPrototypeOf(async function () {}),
    Object.getPrototypeOf(async function* () {}), Object.getPrototypeOf((function* () {})())];
  const seen = new Set(), queue = roots.slice();
  while (queue.length) {
    const item = queue.pop();
    if (item === null || (typeof item !== 'object' && typeof item !== 'function') || seen.has(item)) continue;
    seen.add(item);
    queue.push(Object.getPrototypeOf(item));
    for (const key of Reflect.ownKeys(item)) {
      const found = Object.getOwnPropertyDescriptor(item, key);
      if (!found) continue;
      if ('value' in found) queue.push(found.value); else { queue.push(found.get); queue.push(found.set); }
    }
  }
  for (const item of seen) { if (item !== globalThis) Object.freeze(item); }
  for (const key of Reflect.ownKeys(globalThis)) {
    const found = Object.getOwnPropertyDescriptor(globalThis, key);
    if (found && found.configurable) {
      if ('value' in found) { found.writable = false; }
      found.configurable = false;
      Object.defineProperty(globalThis, key, found);
    }
  }
  for (const key of ownNames(globalThis)) baseline.add(key);
})();
""".replace("@MAX_LENGTH@", str(MAX_ARRAY_LENGTH)).replace("@MAX_BYTES@", str(MAX_BUFFER_BYTES))

class _Engine:
    """One locked-down V8 context, replaced after a failure or REUSE_LIMIT evaluations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.context: MiniRacer | None = None
        self.graveyard: list[MiniRacer] = []   # discarded, closed when the next one is made
        self.uses = 0
        atexit.register(self.close)

    def close(self) -> None:
        with self.lock:
            self._discard()
            self._bury()

    def _discard(self) -> None:
        """Stop using the context. It is closed when the next one is made, not now (a script
        stopped by the time limit may still report to it, and a closed context would complain on
        stderr), and not later (mini-racer dies making a context while another lives). In a
        sandbox process, the process ends after its answer instead (a fresh one for the next)."""
        sandbox.retire()
        if self.context is not None:
            self.graveyard.append(self.context)
        self.context = None

    def _bury(self) -> None:
        while self.graveyard:
            context = self.graveyard.pop(0)
            try:
                context.close()
            except Exception:   # a broken context is dropped either way
                pass

    def call(self, code: str, timeout_ms: int) -> Any:
        """Evaluate `code` (a call into the prelude) in the shared context, within the limits."""
        with self.lock:
            if self.context is not None and self.uses >= REUSE_LIMIT - 1 and sandbox.inside():
                sandbox.retire()   # the context's last evaluation: a fresh process makes the next one
            if self.context is None or self.uses >= REUSE_LIMIT:
                self._discard()
                self._bury()
                self.context = _new_context()
                self.context.eval(_PRELUDE)
                self.uses = 0
            self.uses += 1
            cpu_started = time.process_time()
            try:
                return self.context.eval(code, timeout_sec=timeout_ms / 1000, max_memory=MAX_HEAP_BYTES)
            except JSTimeoutException:
                self._discard()
                cpu_ms = (time.process_time() - cpu_started) * 1000
                if sandbox.inside() and cpu_ms < timeout_ms / 2:
                    raise sandbox.Starved(_too_long(timeout_ms, cpu_ms)) from None
                raise JavaScriptError(_too_long(timeout_ms)) from None
            except JSOOMException:
                self._discard()
                raise JavaScriptError(f"the script used more memory than the limit of {MAX_HEAP_BYTES >> 20} MiB "
                                      "(javascript.MAX_HEAP_BYTES)") from None
            except JSEvalException as exc:   # not expected: the prelude catches what scripts throw
                self._discard()
                raise JavaScriptError(_one_line(str(exc))) from None

    def forget(self) -> None:
        """Drop the context (a script left something behind that could not be cleaned)."""
        with self.lock:
            self._discard()


def _new_context() -> MiniRacer:
    """A MiniRacer made on a thread of its own, where no asyncio loop runs.

    mini-racer (0.14 and later) binds a context to the event loop running where it is made;
    made inside the node's loop, every `eval` with a time limit then fails an assertion
    ("to apply a timeout in an async context..."). Made here, it starts its own loop thread,
    and `eval` from any thread, the node's loop included, waits on that thread with the limit.
    """
    made: list[MiniRacer] = []
    failed: list[BaseException] = []

    def make() -> None:
        try:
            made.append(MiniRacer())
        except BaseException as exc:   # handed to the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=make, name="javascript-context", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


_ENGINE = _Engine()


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "the script failed"
    return line if len(line) <= 300 else line[:297] + "..."


def _too_long(timeout_ms: int, cpu_ms: float | None = None) -> str:
    if cpu_ms is not None:   # a sandbox process's time measured: the node tried it twice
        return (f"the script ran longer than the limit of {timeout_ms} ms (javascript.MAX_MILLISECONDS) twice and "
                f"was stopped, with only {cpu_ms:.0f} ms of CPU the second time: it waits (Atomics.wait) or the "
                "machine is too busy to run it")
    return (f"the script ran longer than the limit of {timeout_ms} ms (javascript.MAX_MILLISECONDS) and was "
            "stopped; make it do less")


def evaluate(source: str, bindings: dict[str, Any], *, timeout_ms: int = MAX_MILLISECONDS) -> Any:
    """Run `source` as a script with `$` = `bindings` and return its completion value as JSON
    data (None for undefined), in a sandbox process. Raises JavaScriptError with a one-line
    reason. The caller waits at most `timeout_ms` + sandbox.GRACE_MS."""
    if not isinstance(source, str) or not source.strip():
        raise JavaScriptError("the script is empty")
    if len(source) > MAX_SOURCE_CHARS:
        raise JavaScriptError(f"the script has {len(source)} characters, more than the limit of {MAX_SOURCE_CHARS}")
    try:
        data = json.dumps(bindings, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JavaScriptError(f"the script's input is not JSON: {exc}") from None
    if len(data) > MAX_INPUT_CHARS:
        raise JavaScriptError(f"the script's input is {len(data)} characters of JSON, more than the limit of "
                              f"{MAX_INPUT_CHARS}")
    return _in_sandbox("js", {"source": source, "input": data}, timeout_ms)


def _in_sandbox(kind: str, request: dict[str, Any], timeout_ms: int) -> Any:
    try:
        return sandbox.run(kind, request, timeout_ms)
    except sandbox.Refused as exc:
        raise JavaScriptError(_one_line(str(exc))) from None
    except sandbox.Overrun:
        raise JavaScriptError(_too_long(timeout_ms)) from None
    except sandbox.Crashed as exc:
        raise JavaScriptError(f"the script ended the process that ran it ({exc}); most likely it used more "
                              f"memory than the limit of {sandbox.MEMORY_BYTES >> 20} MiB "
                              "(sandbox.MEMORY_BYTES)") from None
    except sandbox.SandboxError as exc:
        raise JavaScriptError(f"the script could not be run: {exc}") from None


def _evaluate_here(source: str, data: str, timeout_ms: int) -> str:
    """The JSON text of `source`'s value with `$` = the JSON text `data`, evaluated in this
    process (a sandbox process's handler; the measurement compares it with the sandbox)."""
    answer = _ENGINE.call(f"__conductor.run({json.dumps(source)}, {json.dumps(data)})", timeout_ms)
    try:
        outcome, payload, clean = json.loads(answer)
    except (TypeError, ValueError):   # not expected: the prelude always answers this way
        _ENGINE.forget()
        raise JavaScriptError("the script's result could not be read") from None
    if not clean:
        _ENGINE.forget()
    if outcome != "ok":
        raise JavaScriptError(_one_line(str(payload)))
    if not isinstance(payload, str):   # JSON.stringify of a function or a symbol
        return "null"
    if len(payload) > MAX_RESULT_CHARS:
        raise JavaScriptError(f"the script's result is {len(payload)} characters of JSON, more than the limit of "
                              f"{MAX_RESULT_CHARS}")
    return payload


def check_syntax(source: str) -> str | None:
    """Why `source` does not compile (one line), or None. Compiled as a function body, so
    a top-level `return` passes here (it would fail when run as a script)."""
    if len(source) > MAX_SOURCE_CHARS:
        return f"the script has {len(source)} characters, more than the limit of {MAX_SOURCE_CHARS}"
    try:
        problem = _in_sandbox("js_check", {"source": source}, MAX_MILLISECONDS)
    except JavaScriptError as exc:
        return str(exc)
    return str(problem) if problem else None


def _check_here(source: str) -> str:
    return str(_ENGINE.call(f"__conductor.check({json.dumps(source)})", MAX_MILLISECONDS) or "")


def _warm_up() -> None:
    """Make the context (V8's start, the lock-down) before the sandbox process says it is ready."""
    _evaluate_here("1", "{}", 10 * MAX_MILLISECONDS)


# What a sandbox process answers (orchestrator/core/sandbox.py).
sandbox.handle("js", lambda request: _evaluate_here(str(request["source"]), str(request["input"]),
                                                    int(request["limit_ms"])), warm_up=_warm_up)
sandbox.handle("js_check", lambda request: json.dumps(_check_here(str(request["source"]))))


def lambda_script(script_expression: str) -> str:
    """A LAMBDA task's `scriptExpression` as Conductor runs it: as the body of a function
    that is called, so its `return` gives the result."""
    return "function scriptFun(){" + script_expression + "\n} scriptFun();"


def to_boolean(value: Any) -> bool:
    """Conductor's reading of a loop condition's result: a boolean as it is, a number when
    above 0, anything else false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value > 0
    return False


def to_case(value: Any) -> str:
    """A SWITCH or DECISION result as the case name Conductor matches it to (Java's
    `String.valueOf`): text as it is, null as 'null', true/false, numbers, JSON for the rest."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _measure(rounds: int = 400) -> dict[str, float]:
    """Milliseconds per small evaluation: in this process's own shared context (how the node
    evaluated before the sandbox), through the sandbox, and in a fresh context each time (what
    a context per evaluation would cost)."""
    script = "(function(){ return $.a + $.b.length; })()"
    bindings = {"a": 1, "b": [1, 2, 3]}

    def per_call(call: Any, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            call()
        return round((time.perf_counter() - started) * 1000 / count, 3)

    def fresh() -> None:
        context = MiniRacer()
        context.eval(_PRELUDE)
        context.eval(f"__conductor.run({json.dumps(script)}, '{{\"a\":1,\"b\":[1,2,3]}}')")
        context.close()

    # first, while no other context lives here: mini-racer dies (SIGSEGV) making one beside another
    fresh()   # V8's start is not what is timed
    fresh_locked = per_call(fresh, max(1, rounds // 8))
    evaluate(script, bindings)   # warm up: the sandbox process starts, V8 starts in both
    _evaluate_here(script, json.dumps(bindings), MAX_MILLISECONDS)
    in_process = per_call(lambda: json.loads(_evaluate_here(script, json.dumps(bindings), MAX_MILLISECONDS)),
                          rounds)
    sandboxed = per_call(lambda: evaluate(script, bindings), rounds)
    check = per_call(lambda: check_syntax(script), rounds)
    sandbox.shutdown()
    return {"in_process_ms": in_process, "sandbox_ms": sandboxed, "sandbox_check_syntax_ms": check,
            "fresh_locked_context_ms": fresh_locked}


if __name__ == "__main__":   # pragma: no cover - a measurement, not a test
    print(json.dumps(_measure(), indent=2))
