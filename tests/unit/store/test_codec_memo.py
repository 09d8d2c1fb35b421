"""A workflow read again parses only the task fields whose text changed (codec.FieldMemo, issue 21):
a wide fork is read back for every batch of its results, and parsing its every task again was most
of what its node did. What is read must be what a read of every field gives."""

from __future__ import annotations

from orchestrator.core.decider.instances import Instances, instances_of
from orchestrator.store.redis import codec

SNAPSHOT = codec.dumps({"workflow": {"name": "fan", "version": 1, "tasks": []}, "taskDefs": {}})
DIGEST = codec.snapshot_digest(SNAPSHOT)


def row(branches: int, done: set[int]) -> dict[str, str]:
    """The hash of a workflow with `branches` tasks, those in `done` completed."""
    fields = {"m": codec.dumps({"name": "fan", "version": 1, "input": {}, "correlationId": ""}), "snap": DIGEST,
              "created": "1", "upd": "1", "rev": str(len(done) + 1), "st": "RUNNING"}
    for i in range(branches):
        status = "COMPLETED" if i in done else "IN_PROGRESS"
        fields[f"t:id{i}"] = codec.dumps({"id": f"id{i}", "ref": f"fan_{i}", "kind": "SIMPLE", "type": "noop",
                                          "attempt": 0, "seq": i, "input": {"i": i}, "scheduled": 1})
        fields[f"s:id{i}"] = codec.dumps({"status": status, "type": "noop", "lease_ms": 1000, "worker": "w"})
        if i in done:
            fields[f"o:id{i}"] = codec.dumps({"i": i})
    return fields


def test_a_workflow_read_again_parses_only_what_changed() -> None:
    memo = codec.FieldMemo()
    codec.parse_workflow("wf", row(1000, set()), {DIGEST: SNAPSHOT}, memo)
    assert memo.parsed == 2000   # every spec and every state, once
    again = codec.parse_workflow("wf", row(1000, {7}), {DIGEST: SNAPSHOT}, memo)
    assert memo.parsed == 2002   # branch 7's state and its new output
    assert again == codec.parse_workflow("wf", row(1000, {7}), {DIGEST: SNAPSHOT}, None)
    assert again is not None and again.tasks[7].output == {"i": 7}


def test_what_is_read_again_is_what_a_whole_read_gives() -> None:
    memo = codec.FieldMemo(smallest=0)
    first = row(5, set())
    codec.parse_workflow("wf", first, {DIGEST: SNAPSHOT}, memo)
    later = row(5, {1, 3})
    later["t:id9"] = first["t:id4"].replace("id4", "id9").replace('"seq":4', '"seq":9')   # a new task
    later["s:id9"] = first["s:id4"]
    later["c:00000001"] = codec.dumps({"op": "retry"})
    later["vars"] = codec.dumps({"x": 1})
    del later["o:id1"]
    again = codec.parse_workflow("wf", later, {DIGEST: SNAPSHOT}, memo)
    whole = codec.parse_workflow("wf", later, {DIGEST: SNAPSHOT}, None)
    assert again == whole and again is not None and whole is not None
    kept, built = instances_of(again), Instances(whole)   # the decider's index, kept beside the reads
    assert kept.latest == built.latest and kept.live == built.live and kept.next_seq == built.next_seq
    assert {name: entry.task for name, entry in kept.entries.items()} == {
        name: entry.task for name, entry in built.entries.items()}
    assert [t.task_id for t in again.tasks] == ["id0", "id1", "id2", "id3", "id4", "id9"]
    assert again.task("id9") is again.tasks[5] and again.commands == [{"op": "retry", "field": "c:00000001"}]
    del later["t:id2"], later["s:id2"]   # a task deleted (an operator's rerun): read whole
    assert codec.parse_workflow("wf", later, {DIGEST: SNAPSHOT}, memo) == codec.parse_workflow(
        "wf", later, {DIGEST: SNAPSHOT}, None)


def test_a_short_workflow_is_not_kept() -> None:
    memo = codec.FieldMemo()
    codec.parse_workflow("wf", row(3, set()), {DIGEST: SNAPSHOT}, memo)
    assert memo.previous("wf") is None


def test_the_memo_is_bounded() -> None:
    memo = codec.FieldMemo(capacity=2500)
    for workflow in ("a", "b", "c"):
        codec.parse_workflow(workflow, row(600, set()), {DIGEST: SNAPSHOT}, memo)
    kept = memo.previous("c")
    assert memo.previous("a") is None   # 3 x 1,206 fields: the least recently read went
    assert kept is not None and len(kept.row) == 1206
