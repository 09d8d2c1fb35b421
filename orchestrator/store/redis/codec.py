"""Between the core's types and what the Redis hash and the Lua scripts hold.

A workflow's hash: `m` (name, version, input, correlation id), `def` (the definition
snapshot), `st`, `rev`, `created`, `upd`, `end`, `out`, `reason`, `vars`, `parent`,
`c:<n>` (operator commands not yet applied), and per task attempt `t:<id>` (its spec),
`s:<id>` (its scalar state, which scripts update) and `o:<id>` (its output, verbatim).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ...core import state as m
from ...core.decider import Decision
from ...core.statuses import WorkflowStatus


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decision_args(prefix: str, epoch: int | None, wf: m.WorkflowState, d: Decision, now_ms: int,
                  hand_over: Mapping[str, str] | None = None) -> list[str]:
    """The APPLY_DECISION arguments: user data stays pre-encoded text inside the envelope.
    Raises ValueError (or TypeError, RecursionError) for a decision JSON cannot hold."""
    fields: list[str] = []
    for task in d.new_tasks:
        fields += [f"t:{task.task_id}", dumps(task.spec.to_json()),
                   f"s:{task.task_id}", dumps(task.runtime.to_json())]
    for task_id, runtime in d.changed_runtimes.items():
        fields += [f"s:{task_id}", dumps(runtime.to_json())]
    for task_id, output in d.outputs.items():
        fields += [f"o:{task_id}", dumps(output)]
    if d.variables is not None:
        fields += ["vars", dumps(d.variables)]
    keep: list[list[str]] = []
    if d.snapshot is not None:   # restarted with the latest definition: its version shows from now on
        definition = d.snapshot["workflow"]
        text = dumps(d.snapshot)
        keep.append([snapshot_digest(text), text])
        fields += ["snap", keep[-1][0],
                   "m", dumps({"name": definition["name"], "version": definition["version"], "input": wf.input,
                               "correlationId": wf.correlation_id})]
    envelope: dict[str, Any] = {"fields": fields}
    if d.status:
        envelope.update(status=d.status, out=dumps(d.output) if d.output is not None else None,
                        reason=d.reason)
    for name, value in (("delete", d.delete_tasks), ("consumed", d.consumed_commands), ("enqueue", d.enqueue),
                        ("dequeue", d.dequeue), ("drop", d.drop_leases),
                        ("terminate", d.terminate_workflows), ("publish", d.publish)):
        if value:
            envelope[name] = [list(v) if isinstance(v, tuple) else v for v in value]
    if d.start_workflows:
        envelope["start"] = [{"id": w.workflow_id, "name": w.name, "corr": w.correlation_id, "parent": w.parent,
                              "depth": w.depth,
                              "m": dumps({"name": w.name, "version": w.version, "input": w.input,
                                          "correlationId": w.correlation_id}),
                              "snap": _kept(keep, dumps(w.snapshot)),
                              "vars": dumps(w.snapshot["workflow"].get("variables", {}))}
                             for w in d.start_workflows]
    if keep:
        envelope["keep"] = keep
    if d.reset_result:
        envelope["reset"] = True
    if d.wake_at_ms is not None:
        envelope["wake"] = d.wake_at_ms
    if d.empty:
        envelope["noop"] = True
    if hand_over:
        serve = {task_id: hand_over[task_id] for _, task_id in d.enqueue if task_id in hand_over}
        if serve:
            envelope["serve"] = serve
    named: dict[str, Any] = {"prefix": prefix, "id": wf.workflow_id, "rev": wf.revision, "now": now_ms}
    if epoch is not None:
        named["epoch"] = epoch
    return [dumps(named), json.dumps({k: v for k, v in envelope.items() if v is not None}, separators=(",", ":"))]


def snapshot_digest(text: str) -> str:
    """The name a snapshot is stored under: equal texts, one copy."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _kept(keep: list[list[str]], text: str) -> str:
    digest = snapshot_digest(text)
    if not any(pair[0] == digest for pair in keep):
        keep.append([digest, text])
    return digest


@functools.lru_cache(maxsize=256)
def parse_snapshot(text: str) -> dict[str, Any]:
    """Workflows of one definition share one snapshot text: parse it once, not per decision.

    The parsed snapshot is shared, so nothing may change it (the decider only reads it)."""
    snapshot: dict[str, Any] = json.loads(text)
    return snapshot


def snapshot_ref(row: dict[str, str]) -> str | None:
    """The digest of the snapshot a workflow's hash refers to (None: it holds the text itself,
    as workflows stored before snapshots were shared do)."""
    return row.get("snap")


class FieldMemo:
    """The task fields of the workflows this process read last, parsed, by their text: a workflow read
    again (a wide fork is read for every batch of its results, each of which moved its revision) parses
    only the fields whose text changed since, not its every task again (issue 21). A spec (`t:`) is
    written once; a state (`s:`) or an output (`o:`) is parsed again when its text differs.

    The parsed values are shared by the states read: nothing may change them in place (the decider
    replaces a task's runtime or output, it never edits one). At most `capacity` fields are kept, the
    workflows read least recently going first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._fields: OrderedDict[str, dict[str, tuple[str, Any]]] = OrderedDict()
        self._size = 0
        self.parsed = 0   # fields parsed (not found unchanged): what a read costs

    def previous(self, workflow_id: str) -> dict[str, tuple[str, Any]]:
        return self._fields.get(workflow_id) or {}

    def keep(self, workflow_id: str, fields: dict[str, tuple[str, Any]]) -> None:
        self._size -= len(self._fields.pop(workflow_id, {}))
        if len(fields) > self.capacity:
            return
        self._fields[workflow_id] = fields
        self._size += len(fields)
        while self._size > self.capacity:
            _, dropped = self._fields.popitem(last=False)
            self._size -= len(dropped)


FIELDS = FieldMemo()

_TASK_FIELD_PARSERS: dict[str, Any] = {
    "t": lambda text: m.TaskSpec.from_json(json.loads(text)),
    "s": lambda text: m.TaskRuntime.from_json(json.loads(text)),
    "o": json.loads,
}


def parse_workflow(workflow_id: str, row: dict[str, str], snapshots: Mapping[str, str] | None = None,
                   memo: FieldMemo | None = FIELDS) -> m.WorkflowState | None:
    """Rebuild a WorkflowState from its hash (None when the hash, or its snapshot, does not exist).
    `snapshots`: digest -> snapshot text, for the digests the rows refer to; `memo`: the fields read
    before, reused where their text is unchanged (None: parse every field)."""
    if not row or "m" not in row:
        return None
    meta = json.loads(row["m"])
    digest = snapshot_ref(row)
    text = (snapshots or {}).get(digest) if digest is not None else row.get("def")
    if text is None:
        return None
    snapshot = parse_snapshot(text)
    specs: dict[str, m.TaskSpec] = {}
    runtimes: dict[str, m.TaskRuntime] = {}
    outputs: dict[str, dict[str, Any]] = {}
    commands: list[dict[str, Any]] = []
    previous = memo.previous(workflow_id) if memo is not None else {}
    seen: dict[str, tuple[str, Any]] = {}
    parsed = 0
    for field, value in row.items():
        prefix, _, task_id = field.partition(":")
        if not task_id:
            continue
        if prefix == "c":
            commands.append({**json.loads(value), "field": field})
            continue
        parse = _TASK_FIELD_PARSERS.get(prefix)
        if parse is None:
            continue
        known = previous.get(field)
        if known is not None and known[0] == value:
            parsed_value = known[1]
        else:
            parsed_value = parse(value)
            parsed += 1
        seen[field] = (value, parsed_value)
        if prefix == "t":
            specs[task_id] = parsed_value
        elif prefix == "s":
            runtimes[task_id] = parsed_value
        else:
            outputs[task_id] = parsed_value
    if memo is not None:
        memo.parsed += parsed
        memo.keep(workflow_id, seen)
    tasks = [m.TaskState(spec, runtimes[task_id], outputs.get(task_id))
             for task_id, spec in specs.items() if task_id in runtimes]
    tasks.sort(key=_seq)
    return m.WorkflowState(
        workflow_id=workflow_id, name=meta["name"], version=meta["version"], status=WorkflowStatus(row["st"]),
        input=meta["input"], correlation_id=meta["correlationId"], created_at_ms=int(row["created"]),
        updated_at_ms=int(row.get("upd", row["created"])), definition=snapshot["workflow"],
        task_defs=snapshot["taskDefs"], sub_workflows=snapshot.get("subWorkflows", {}), tasks=tasks,
        variables=json.loads(row["vars"]) if row.get("vars") else {}, parent=row.get("parent", ""),
        commands=commands,
        output=json.loads(row["out"]) if row.get("out") else None, reason=row.get("reason", ""),
        ended_at_ms=int(row.get("end", 0)), revision=int(row["rev"]), depth=int(row.get("depth", 0)),
        stored_bytes=sum(len(field) + len(value) for field, value in row.items()))


def _seq(task: m.TaskState) -> int:
    return task.spec.seq
