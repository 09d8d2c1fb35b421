"""Scenario sandbox: what running user code in sandbox processes costs (issue 22, item 2).

JavaScript and jq run in a pool of sandbox processes (orchestrator/core/sandbox.py), not in the
node's. Measured in this process, no cluster needed: a small evaluation of each in the process
itself (as the node ran them before) and through the sandbox (a round trip on a pipe more),
the check at registration, and what a hostile jq program costs its caller (the limit + the
grace, then a kill) and the next evaluation (served by the pool's other process while the
killed one's replacement starts).
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.core import javascript, jqtransform, sandbox

from ..context import Bench
from ..targets import check

HOSTILE = "[.a[] as $x | .a[] as $y | .a[] as $z | .a[] as $w | .a[] as $v | 1] | length"   # hours in-process


def run(bench: Bench) -> dict[str, Any]:
    rounds = bench.options.pick(2000, 300)
    js = javascript._measure(rounds)
    jq = jqtransform._measure(rounds)
    for name, figures in (("JavaScript", js), ("jq", jq)):
        print(f"  {name}: {figures['in_process_ms']:.3f} ms in the node's process, "
              f"{figures['sandbox_ms']:.3f} ms through the sandbox", flush=True)
    jqtransform.transform({"a": [1], "queryExpression": ".a"})   # the pool is up and warm
    time.sleep(1.0)
    started = time.perf_counter()
    try:
        jqtransform.transform({"a": list(range(100)), "queryExpression": HOSTILE})
        failed = False
    except jqtransform.JqError:
        failed = True
    overrun_s = time.perf_counter() - started
    started = time.perf_counter()
    jqtransform.transform({"a": [1], "queryExpression": ".a"})
    next_ms = (time.perf_counter() - started) * 1000
    sandbox.shutdown()
    print(f"  a jq program that would run for hours: failed after {overrun_s:.2f} s; the next evaluation "
          f"took {next_ms:.1f} ms", flush=True)
    limit_s = (jqtransform.MAX_MILLISECONDS + sandbox.GRACE_MS) / 1000
    return {"javascript": js, "jq": jq, "hostile_jq_failed": failed, "hostile_jq_s": round(overrun_s, 3),
            "next_evaluation_ms": round(next_ms, 2),
            "targets": [
                check("JavaScript evaluation through the sandbox", js["sandbox_ms"], "<=", 2.0, "ms",
                      f"{js['in_process_ms']:.3f} ms in-process"),
                check("jq evaluation through the sandbox", jq["sandbox_ms"], "<=", 2.0, "ms",
                      f"{jq['in_process_ms']:.3f} ms in-process"),
                check("a hostile jq program fails within its limit + grace", overrun_s if failed else float("nan"),
                      "<=", limit_s + 0.5, "s"),
                check("the evaluation after it", next_ms, "<=", 50.0, "ms", "served by the pool's other process"),
            ]}
