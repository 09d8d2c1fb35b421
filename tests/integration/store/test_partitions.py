"""The state cut into partitions (issue 23, store/redis/keys.py) on a real Redis: the number of
partitions is settled once, a search pages over every partition without repeating or skipping, a
family and an idempotency key stay in one partition, and the leader's clocks see every partition."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from helpers_layouts import StoreLayout
from orchestrator.core.definitions import normalise_workflow_def
from orchestrator.core.errors import FailedPrecondition
from orchestrator.core.schema import Snapshot
from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import partition_of, partition_of_key

NOW = 1_700_000_000_000


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def fresh(layout: StoreLayout) -> RedisStore:
    """A store of a cluster of its own on the layout's Redis."""
    return layout.store(f"pt{uuid.uuid4().hex[:8]}")


def noop_snapshot(name: str) -> Snapshot:
    definition = normalise_workflow_def({"name": name, "tasks": [
        {"name": "x", "taskReferenceName": "x", "type": "NOOP"}]}, {})
    return {"workflow": definition, "taskDefs": {}, "subWorkflows": {}}


def test_the_number_of_partitions_is_set_once_and_a_node_that_disagrees_is_refused(layout: StoreLayout) -> None:
    async def scenario() -> None:
        first = fresh(layout)
        prefix = first.prefix
        try:
            await first.prepare(16)
            assert first.keys.partitions == 16
            assert await first._redis.get(first.keys.partition_count) == "16"
        finally:
            await first.close()
        adopting = layout.store(prefix)   # its setting left out: as stored
        disagreeing = layout.store(prefix)
        try:
            await adopting.prepare()
            assert adopting.keys.partitions == 16
            with pytest.raises(FailedPrecondition, match="created with 16 partitions"):
                await disagreeing.prepare(64)
            assert await adopting._redis.get(adopting.keys.partition_count) == "16"
        finally:
            await adopting.close()
            await disagreeing.close()
    run(scenario())


def test_a_state_in_the_layout_before_partitions_is_refused_and_left_as_it_is(layout: StoreLayout) -> None:
    async def scenario() -> None:
        store = fresh(layout)
        try:
            await store._redis.set(f"{store.prefix}:defs:rev", 7)   # what the unpartitioned layout wrote
            with pytest.raises(FailedPrecondition, match="layout from before partitions"):
                await store.prepare()
            assert await store._redis.exists(store.keys.partition_count) == 0
            assert await store._redis.get(f"{store.prefix}:defs:rev") == "7"
        finally:
            await store.close()
    run(scenario())


def test_search_pages_over_every_partition_neither_repeating_nor_skipping(layout: StoreLayout) -> None:
    """Workflows spread over the partitions, many created in the same millisecond: pages of a few,
    each after the last one's cursor, give every workflow once, newest first, (time, id) descending."""
    async def scenario() -> None:
        store = fresh(layout)
        try:
            await store.prepare(8)
            snapshot = noop_snapshot("paged")
            created: list[tuple[str, int]] = []
            for i in range(60):
                at = NOW + i // 7   # seven at a time share a creation time
                workflow_id = uuid.uuid4().hex
                while partition_of(workflow_id, 8) != i % 8:   # every partition holds some (random ids
                    workflow_id = uuid.uuid4().hex           # left one empty about once in 400 runs)
                await store.start_workflow(workflow_id, snapshot, {}, "", "", at)
                created.append((workflow_id, at))
            assert len({partition_of(w, 8) for w, _ in created}) == 8
            if layout.on_cluster:   # so the pages merge what several masters hold
                assert len({layout.server_of(store.keys.partition(p)) for p in range(8)}) > 1
            seen: list[str] = []
            cursor = ""
            for _ in range(40):
                page = await store.search(name="paged", status="", correlation_id="", cursor=cursor, limit=7)
                seen += page.workflow_ids
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            expected = [w for w, _ in sorted(created, key=lambda row: (row[1], row[0]), reverse=True)]
            assert seen == expected
        finally:
            await store.close()
    run(scenario())


def test_a_start_with_an_idempotency_key_lives_beside_it_and_answers_a_repeat(layout: StoreLayout) -> None:
    async def scenario() -> None:
        store = fresh(layout)
        try:
            await store.prepare()
            snapshot = noop_snapshot("keyed")
            first_id = store.new_workflow_id("order-42")
            assert partition_of(first_id, store.keys.partitions) == partition_of_key("order-42", store.keys.partitions)
            assert await store.start_workflow(first_id, snapshot, {}, "", "order-42", NOW) == (first_id, True)
            again = store.new_workflow_id("order-42")
            assert await store.start_workflow(again, snapshot, {}, "", "order-42", NOW) == (first_id, False)
            with pytest.raises(ValueError, match="not in the partition of its idempotency key"):
                stray = next(w for w in (uuid.uuid4().hex for _ in range(1000))
                             if partition_of(w, store.keys.partitions) != partition_of(first_id, store.keys.partitions))
                await store.start_workflow(stray, snapshot, {}, "", "order-42", NOW)
        finally:
            await store.close()
    run(scenario())


def test_the_leaders_clocks_and_the_retention_see_every_partition(layout: StoreLayout) -> None:
    """Reminders and ends in several partitions: `due` finds them all (at most its limit), and
    `ended_before` gives the oldest ends over every partition in time order."""
    async def scenario() -> None:
        store = fresh(layout)
        try:
            await store.prepare(8)
            await store.raise_epoch(3)
            snapshot = noop_snapshot("clocked")
            ids = []
            for i in range(24):
                ids.append(uuid.uuid4().hex)
                await store.start_workflow(ids[-1], snapshot, {}, "", "", NOW + i)   # undecided: a reminder each
            assert len({partition_of(w, 8) for w in ids}) > 4
            due = await store.due(NOW + 10_000, 100)
            assert sorted(due.workflows) == sorted(ids)
            assert len((await store.due(NOW + 10_000, 5)).workflows) == 5
            for i, workflow_id in enumerate(ids[:10]):
                await store.terminate(workflow_id, "done", NOW + 100 + i)
            ended = await store.ended_before(NOW + 10_000, 6)
            assert [workflow_id for _, workflow_id in ended] == ids[:6]
            assert await store.forget_ended(3, ended, NOW + 10_000) == 6
            assert [w for _, w in await store.ended_before(NOW + 10_000, 100)] == ids[6:10]
        finally:
            await store.close()
    run(scenario())


def test_a_concurrency_slot_counted_for_an_attempt_without_a_lease_is_given_back(layout: StoreLayout) -> None:
    """The count of a type's tasks in progress is kept in the global slot, apart from the leases: an
    attempt that ended between its claim and the claim's settle (or whose claimer died) would hold its
    slot for good. The leader's sweep takes out what has held no lease for UNLEASED_AFTER_MS."""
    from orchestrator.core.definitions import normalise_task_def
    from orchestrator.core.decider import decide
    from orchestrator.cluster.deciding import new_task_id

    async def scenario() -> None:
        store = fresh(layout)
        try:
            await store.prepare(4)
            task_def = normalise_task_def({"name": "single", "concurrentExecLimit": 1})
            await store.put_task_def(task_def)
            definition = normalise_workflow_def({"name": "one", "tasks": [
                {"name": "single", "taskReferenceName": "a"}]}, {"single": task_def})
            snapshot: Snapshot = {"workflow": definition, "taskDefs": {"single": task_def}, "subWorkflows": {}}
            ids = []
            for _ in range(2):
                ids.append(uuid.uuid4().hex)
                await store.start_workflow(ids[-1], snapshot, {}, "", "", NOW)
                state = await store.load(ids[-1])
                assert state is not None
                await store.apply_decisions(None, NOW, [(state, decide(state, NOW, new_task_id))])
            [first] = await store.claim("single", 5, "w", NOW)
            assert await store.claim("single", 5, "w", NOW) == []   # its one slot is taken
            member = f"{first.workflow_id}|{first.spec.task_id}"
            # the attempt's lease goes without a word to the count (as if it ended before the settle)
            await store._redis.zrem(store.keys.leases(store.keys.partition_of(first.workflow_id)), member)
            assert await store.release_freed(None, NOW + 1_000) == 0   # too recent to tell
            assert await store.claim("single", 5, "w", NOW + 1_000) == []
            assert await store.release_freed(None, NOW + 6_000) == 1
            [second] = await store.claim("single", 5, "w", NOW + 6_000)
            assert second.workflow_id != first.workflow_id
        finally:
            await store.close()
    run(scenario())
