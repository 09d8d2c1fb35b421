"""The partitioned key layout (store/redis/keys.py): where a workflow and its family live."""

from __future__ import annotations

import zlib

import pytest

from orchestrator.store.redis.keys import Keys, draw_id, partition_of, partition_of_key, root_of


def slot_tag(key: str) -> str:
    """The hash tag Redis Cluster hashes a key by: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1:key.index("}", start)]


def test_a_family_shares_its_root_partition() -> None:
    parent = "3f2a9c0d4e5b6a7f8091a2b3c4d5e6f7"
    child = f"{parent}.charge.0.0a1b2c3d4e5f"
    grandchild = f"{child}.refund.1.f00f00f00f00"
    assert root_of(grandchild) == parent
    assert partition_of(child, 64) == partition_of(grandchild, 64) == zlib.crc32(parent.encode()) % 64


@pytest.mark.parametrize("partitions", [1, 7, 64, 1024])
def test_a_drawn_id_lands_in_its_partition_and_looks_like_any(partitions: int) -> None:
    for target in {0, partitions - 1, partitions // 2}:
        drawn = draw_id(target, partitions)
        assert partition_of(drawn, partitions) == target
        assert len(drawn) == 32 and int(drawn, 16) >= 0 and "." not in drawn
    assert len({draw_id(0, partitions) for _ in range(50)}) == 50


def test_an_idempotency_key_and_the_workflow_drawn_for_it_are_in_one_slot() -> None:
    keys = Keys("wfo:shop", 64)
    p = partition_of_key("order-17", 64)
    workflow_id = draw_id(p, 64)
    assert slot_tag(keys.workflow(workflow_id)) == slot_tag(keys.in_partition(p, "idem", "order-17")) == f"shop:p{p}"


def test_partition_keys_and_global_keys_carry_their_tags_under_the_prefix() -> None:
    keys = Keys("wfo:shop", 16)
    assert keys.queue(3, "pay") == "wfo:{shop:p3}:q:pay"
    assert keys.task_defs == "wfo:{shop}:defs:task" and slot_tag(keys.limits) == "shop"
    assert keys.ready_channel("pay") == "wfo:{shop}:ready:pay"
    assert Keys("plain").partition(2) == "{plain:p2}"


def test_a_prefix_with_braces_or_a_count_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="hash tags"):
        Keys("wfo:{x}")
    with pytest.raises(ValueError, match="partitions"):
        Keys("wfo:x", 0)
