"""A workflow read again parses only the task fields whose text changed (codec.FieldMemo, issue 21):
a wide fork is read back for every batch of its results, and parsing its every task again was most
of what its node did."""

from __future__ import annotations

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


def test_the_memo_is_bounded() -> None:
    memo = codec.FieldMemo(capacity=2500)
    for workflow in ("a", "b", "c"):
        codec.parse_workflow(workflow, row(600, set()), {DIGEST: SNAPSHOT}, memo)
    assert memo.previous("a") == {}   # 3 x 1,200 fields: the least recently read went
    assert len(memo.previous("c")) == 1200
