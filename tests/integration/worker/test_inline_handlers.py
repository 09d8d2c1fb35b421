"""`@task(..., inline=True)` through a real node: such a sync handler runs on the worker's event
loop thread and costs no thread hand-off, while a sync handler without it still runs in the
worker's thread pool (whose hand-offs are counted here: one per run, back to the loop)."""

from __future__ import annotations

import threading
from typing import Any

from helpers import register_sequence, unique, wait_for_status
from worker import task

RUNS = 10


def test_an_inline_sync_handler_runs_on_the_loop_thread_and_a_plain_one_in_the_pool(node: Any,
                                                                                    run_worker: Any) -> None:
    client = node.client
    name, inline_type, pooled_type = unique("placed"), unique("inline_step"), unique("pooled_step")
    register_sequence(client, name, [inline_type, pooled_type], retryCount=0)
    threads: dict[str, set[int]] = {"inline": set(), "pooled": set()}

    @task(inline_type, inline=True)
    def inline_step(data: dict[str, Any]) -> dict[str, Any]:
        threads["inline"].add(threading.get_ident())
        return {"n": data["n"]}

    @task(pooled_type)
    def pooled_step(data: dict[str, Any]) -> dict[str, Any]:
        threads["pooled"].add(threading.get_ident())
        return {"n": data["n"]}

    background = run_worker([node.endpoint], [inline_step, pooled_step], concurrency=4)
    hand_offs = count_hand_offs_to(background.loop)
    background.attached()
    for n in range(RUNS):
        done = wait_for_status(client, client.start_workflow(name, {"n": n}), "COMPLETED", timeout_s=30)
        assert [t["output"] for t in done["tasks"]] == [{"n": n}, {"n": n}]
    assert threads["inline"] == {background.thread.ident}
    assert threads["pooled"] and background.thread.ident not in threads["pooled"]
    assert hand_offs["count"] == RUNS, hand_offs   # the pooled runs only: each comes back to the loop once


def count_hand_offs_to(loop: Any) -> dict[str, int]:
    """Count what other threads hand to `loop` (asyncio's own loop: the test's BackgroundWorker)."""
    counted = {"count": 0}
    real = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        counted["count"] += 1
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counting
    return counted
