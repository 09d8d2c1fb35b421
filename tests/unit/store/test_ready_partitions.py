"""Which partitions a node claims a task type from (store/redis/ready_partitions.py)."""

from __future__ import annotations

from orchestrator.store.redis.ready_partitions import ReadyPartitions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def partition_of(workflow_id: str) -> int:
    return int(workflow_id.removeprefix("w"))


def ready(clock: Clock | None = None) -> ReadyPartitions:
    return ReadyPartitions(partition_of, rescan_s=1.0, clock=clock or Clock())


def test_a_type_is_looked_at_whole_until_its_broadcasts_are_heard() -> None:
    index = ready()
    assert index.candidates("t") is None   # never looked at
    started = index.looking("t")
    assert [p for p, _ in index.scanned("t", [3, 5], started)] in ([3, 5], [5, 3])
    assert index.candidates("t") is None   # not listening: every claim looks everywhere
    index.listening("t")
    assert index.candidates("t") is None   # subscribed just now: what came before is looked for
    index.scanned("t", [3], index.looking("t"))
    assert [p for p, _ in index.candidates("t") or []] == [3]


def test_a_message_names_its_partition_and_one_without_a_task_means_all() -> None:
    index = ready()
    index.listening("t")
    index.scanned("t", [], index.looking("t"))
    assert index.candidates("t") == []
    index.heard("t", "w7|task-1")
    assert [p for p, _ in index.candidates("t") or []] == [7]
    index.heard("t", "t")   # a slot freed, a workflow resumed: no partition named
    assert index.candidates("t") is None


def test_a_short_claim_forgets_a_partition_unless_it_was_heard_of_since() -> None:
    index = ready()
    index.listening("t")
    index.scanned("t", [], index.looking("t"))
    index.heard("t", "w2|a")
    [(partition, mark)] = index.candidates("t") or []
    index.heard("t", "w2|b")            # queued while the claim was on its way
    index.drained("t", partition, mark)
    assert [p for p, _ in index.candidates("t") or []] == [2]
    [(partition, mark)] = index.candidates("t") or []
    index.drained("t", partition, mark)
    assert index.candidates("t") == []


def test_a_whole_look_keeps_what_was_heard_while_it_ran_and_expires() -> None:
    clock = Clock()
    index = ready(clock)
    index.listening("t")
    started = index.looking("t")
    index.heard("t", "w9|a")            # after the look began: its answer may predate the task
    assert sorted(p for p, _ in index.scanned("t", [1], started)) == [1, 9]
    clock.now += 1.5
    assert index.candidates("t") is None   # looked at whole again every rescan_s


def test_claims_start_from_a_different_partition_each_time() -> None:
    index = ready()
    index.listening("t")
    index.scanned("t", [1, 2, 3], index.looking("t"))
    firsts = {(index.candidates("t") or [])[0][0] for _ in range(3)}
    assert firsts == {1, 2, 3}


def test_a_partition_whose_server_did_not_answer_is_asked_last_for_a_while() -> None:
    clock = Clock()
    index = ready(clock)
    index.listening("t")
    index.scanned("t", [1, 2, 3], index.looking("t"))
    index.unreachable(2)
    for _ in range(3):   # still known, behind the others whatever the rotation
        assert [p for p, _ in index.candidates("t") or []][-1] == 2
    clock.now += 0.6
    assert {(index.candidates("t") or [])[-1][0] for _ in range(3)} == {1, 2, 3}   # its turn again
