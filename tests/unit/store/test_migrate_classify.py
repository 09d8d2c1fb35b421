"""migrate-state's reading of the old layout's key names (orchestrator/store/redis/migrate.py): each
key the code before partitions wrote is recognised with its Redis type, and nothing else is."""

from __future__ import annotations

import pytest

from orchestrator.store.redis.migrate import classify


@pytest.mark.parametrize(("rest", "redis_type", "kind"), [
    ("wf:{3f2a}", "hash", "workflow"),
    ("wf:{3f2a.sub.0.9c}", "hash", "workflow"),
    ("q:charge", "zset", "task members"),
    ("qd:charge", "zset", "task members"),
    ("leases", "zset", "task members"),
    ("decide", "zset", "workflow members"),
    ("idx:all", "zset", "workflow members"),
    ("idx:name:team-a:order", "zset", "workflow members"),
    ("idx:corr:A-1", "zset", "workflow members"),
    ("inflight:", "set", "workflow members"),   # the default namespace is ''
    ("inflight:team-a", "set", "workflow members"),
    ("ended", "stream", "ended stream"),
    ("snap:9a8b", "string", "snapshot"),
    ("idem:team-a:key-1", "string", "idempotency key"),
    ("epoch", "string", "epoch"),
    ("defs:rev", "string", "definitions revision"),
    ("limits", "hash", "limits"),
    ("defs:task", "hash", "global"),
    ("defs:wf:order", "hash", "global"),
    ("defs:wfnames", "set", "global"),
    ("inprog:charge", "zset", "global"),
    ("rate:charge", "zset", "global"),
    ("ev:orders", "stream", "global"),
    ("evcfg", "hash", "global"),
    ("evwaits", "set", "global"),
    ("evage", "hash", "global"),
    ("handlers", "hash", "global"),
    ("topics:", "set", "global"),
    ("groups:team-a", "set", "global"),
    ("tasklog:7c", "list", "global"),
    ("handled:on_order:1700000000000-0#0", "string", "global"),
    ("barrier", "string", "global"),
])
def test_every_key_of_the_old_layout_is_recognised(rest: str, redis_type: str, kind: str) -> None:
    assert classify(rest, redis_type) == kind


@pytest.mark.parametrize(("rest", "redis_type"), [
    ("wf:{3f2a}", "string"),          # the right name, another type: not ours
    ("ev:orders", "hash"),
    ("leases:extra", "zset"),
    ("wf:3f2a", "hash"),              # a workflow's id was a hash tag
    ("something:else", "string"),
    ("partitions", "string"),
])
def test_anything_else_is_left_alone(rest: str, redis_type: str) -> None:
    assert classify(rest, redis_type) is None
