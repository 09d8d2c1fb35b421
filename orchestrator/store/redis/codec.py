"""Between the core's types and what the Redis hash and the Lua scripts hold.

A workflow's hash: `m` (name, version, input, correlation id), `def` (the definition
snapshot), `st`, `rev`, `created`, `upd`, `end`, `out`, `reason`, `vars`, `parent`,
`c:<n>` (operator commands not yet applied), and per task attempt `t:<id>` (its spec),
`s:<id>` (its scalar state, which scripts update) and `o:<id>` (its output, verbatim).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ...core import fastjson
from ...core import state as m
from ...core.decider import Decision
from ...core.decider.instances import SEQ, Instances
from ...core.statuses import WorkflowStatus


def dumps(value: Any) -> str:
    return fastjson.dumps(value)


def encoded_decision(named: dict[str, Any], envelope: dict[str, Any]) -> list[str]:
    """`decision_parts` as APPLY_DECISION's two arguments."""
    return [dumps(named), fastjson.dumps(envelope)]


def decision_parts(common: dict[str, Any], epoch: int | None, wf: m.WorkflowState, d: Decision, now_ms: int,
                   hand_over: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """APPLY_DECISION's arguments before they are written: its named scalars, and the envelope
    (what the script writes, each user value already JSON text), which the caller may check
    before encoding it (`RedisStore._within_limits`) rather than read it back from its text."""
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
    named: dict[str, Any] = {**common, "id": wf.workflow_id, "rev": wf.revision, "now": now_ms}
    if epoch is not None:
        named["epoch"] = epoch
    return named, {k: v for k, v in envelope.items() if v is not None}


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


class Read:
    """A workflow as this process last read it: its hash's fields as text, and what they were
    parsed into (its tasks, in `seq` order, where each is, and the decider's index of them)."""

    __slots__ = ("changed", "commands", "index", "meta", "row", "tasks", "variables", "where")

    def __init__(self, row: dict[str, str], tasks: list[m.TaskState], where: dict[str, int], meta: dict[str, Any],
                 variables: dict[str, Any], commands: list[dict[str, Any]],
                 changed: list[m.TaskState] | None = None) -> None:
        self.row, self.tasks, self.where = row, tasks, where
        self.meta, self.variables, self.commands = meta, variables, commands
        self.changed = changed   # the tasks parsed anew since the read before (None: all of them)
        self.index: Instances | None = None


class FieldMemo:
    """The workflows this process read last, as read (`Read`): a workflow read again (a wide fork is
    read for every batch of its results, each of which moved its revision) is parsed as what changed
    since, its other tasks taken as they were (issue 21). The fields that changed are found by
    comparing the texts (in C); a task is parsed again only where one of its fields changed.

    The parsed values are shared by the states read: nothing may change them in place (the decider
    replaces a task's runtime or output, it never edits one). Only workflows of at least `smallest`
    fields are kept (a short one parses in microseconds; a node holds many thousands), at most
    `capacity` fields in all, the workflows read least recently going first."""

    def __init__(self, capacity: int = 50_000, smallest: int = 64) -> None:
        self.capacity, self.smallest = capacity, smallest
        self._reads: OrderedDict[str, Read] = OrderedDict()
        self._size = 0
        self.parsed = 0   # task fields parsed (not found unchanged): what reads cost

    def previous(self, workflow_id: str) -> Read | None:
        return self._reads.get(workflow_id)

    def keep(self, workflow_id: str, read: Read) -> bool:
        """Keep `read` as the workflow's last (whether it was kept)."""
        dropped = self._reads.pop(workflow_id, None)
        if dropped is not None:
            self._size -= len(dropped.row)
        if not self.smallest <= len(read.row) <= self.capacity:
            return False
        self._reads[workflow_id] = read
        self._size += len(read.row)
        while self._size > self.capacity:
            _, oldest = self._reads.popitem(last=False)
            self._size -= len(oldest.row)
        return True


FIELDS = FieldMemo()


def parse_workflow(workflow_id: str, row: dict[str, str], snapshots: Mapping[str, str] | None = None,
                   memo: FieldMemo | None = FIELDS) -> m.WorkflowState | None:
    """Rebuild a WorkflowState from its hash (None when the hash, or its snapshot, does not exist).
    `snapshots`: digest -> snapshot text, for the digests the rows refer to; `memo`: the workflows
    read before, whose unchanged fields are not parsed again (None: parse every field)."""
    if not row or "m" not in row:
        return None
    # the record's own fields first: a corrupt record is an error to report, not a missing workflow
    previous = memo.previous(workflow_id) if memo is not None else None
    again = _read_again(previous, row) if previous is not None else None
    read, parsed = again if again is not None else _read(row)
    digest = snapshot_ref(row)
    text = (snapshots or {}).get(digest) if digest is not None else row.get("def")
    if text is None:
        return None
    snapshot = parse_snapshot(text)
    kept = False
    if memo is not None:
        memo.parsed += parsed
        read.row = dict(row)   # its own: whatever the caller does with `row`
        kept = memo.keep(workflow_id, read)
    meta = read.meta
    state = m.WorkflowState(
        workflow_id=workflow_id, name=meta["name"], version=meta["version"], status=WorkflowStatus(row["st"]),
        input=meta["input"], correlation_id=meta["correlationId"], created_at_ms=int(row["created"]),
        updated_at_ms=int(row.get("upd", row["created"])), definition=snapshot["workflow"],
        task_defs=snapshot["taskDefs"], sub_workflows=snapshot.get("subWorkflows", {}), tasks=read.tasks.copy(),
        variables=dict(read.variables), parent=row.get("parent", ""), commands=list(read.commands),
        output=json.loads(row["out"]) if row.get("out") else None, reason=row.get("reason", ""),
        ended_at_ms=int(row.get("end", 0)), revision=int(row["rev"]), depth=int(row.get("depth", 0)),
        stored_bytes=sum(map(len, row)) + sum(map(len, row.values())))
    state._positions = dict(read.where)
    if kept:   # the decider's index, kept up to date beside the read; the state has a copy
        if read.changed is not None and previous is not None and previous.index is not None:
            read.index = previous.index
            read.index.update(read.changed, state)
        else:
            read.index = Instances(state)
        read.index.copy().serve(state)
    return state


def _spec(text: str) -> m.TaskSpec:
    return m.TaskSpec.from_json(json.loads(text))


def _runtime(text: str) -> m.TaskRuntime:
    return m.TaskRuntime.from_json(fastjson.loads_own(text))


def _read(row: dict[str, str]) -> tuple[Read, int]:
    """Every field of a workflow's hash parsed; and how many task fields that was."""
    specs: dict[str, m.TaskSpec] = {}
    runtimes: dict[str, m.TaskRuntime] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for field, value in row.items():
        prefix, _, task_id = field.partition(":")
        if not task_id:
            continue
        if prefix == "t":
            specs[task_id] = _spec(value)
        elif prefix == "s":
            runtimes[task_id] = _runtime(value)
        elif prefix == "o":
            outputs[task_id] = json.loads(value)
    tasks = [m.TaskState(spec, runtimes[task_id], outputs.get(task_id))
             for task_id, spec in specs.items() if task_id in runtimes]
    tasks.sort(key=SEQ)
    read = Read(row, tasks, {task.task_id: i for i, task in enumerate(tasks)}, json.loads(row["m"]),
                _variables(row), _commands(row))
    return read, len(specs) + len(runtimes) + len(outputs)


def _read_again(previous: Read, row: dict[str, str]) -> tuple[Read, int] | None:
    """`row` parsed as `previous` with what changed since (found by comparing the texts, in C), and
    how many task fields that parsed; None when a task went (a rerun or restart: read it all)."""
    before = previous.row
    touched: set[str] = set()
    commands_changed = False
    for field in itertools.chain((field for field, _ in row.items() - before.items()), before.keys() - row.keys()):
        prefix, _, task_id = field.partition(":")
        if not task_id:
            continue
        if prefix in ("t", "s", "o"):
            touched.add(task_id)
        elif prefix == "c":
            commands_changed = True
    tasks = previous.tasks.copy()
    where = previous.where
    added: list[m.TaskState] = []
    parsed = 0
    for task_id in touched:
        spec_text, runtime_text, output_text = (row.get(f"{prefix}:{task_id}") for prefix in ("t", "s", "o"))
        position = where.get(task_id)
        if spec_text is None or runtime_text is None:
            if position is not None:
                return None
            continue   # not a whole task
        old = tasks[position] if position is not None else None
        if old is not None and before.get(f"t:{task_id}") == spec_text:
            spec = old.spec
        else:
            spec, parsed = _spec(spec_text), parsed + 1
        if old is not None and before.get(f"s:{task_id}") == runtime_text:
            runtime = old.runtime
        else:
            runtime, parsed = _runtime(runtime_text), parsed + 1
        output: dict[str, Any] | None = None
        if output_text is not None:
            if old is not None and before.get(f"o:{task_id}") == output_text:
                output = old.output
            else:
                output, parsed = json.loads(output_text), parsed + 1
        task = m.TaskState(spec, runtime, output)
        if position is None:
            added.append(task)
        else:
            tasks[position] = task
    if added:
        added.sort(key=SEQ)
        where = dict(where)
        if tasks and tasks[-1].spec.seq > added[0].spec.seq:   # not after the others: the order anew
            tasks += added
            tasks.sort(key=SEQ)
            where = {task.task_id: i for i, task in enumerate(tasks)}
        else:
            for task in added:
                where[task.task_id] = len(tasks)
                tasks.append(task)
    meta = previous.meta if before.get("m") == row["m"] else json.loads(row["m"])
    variables = previous.variables if before.get("vars") == row.get("vars") else _variables(row)
    commands = _commands(row) if commands_changed else previous.commands
    return Read(row, tasks, where, meta, variables, commands, [tasks[where[task_id]] for task_id in touched
                                                               if task_id in where]), parsed


def _variables(row: dict[str, str]) -> dict[str, Any]:
    return json.loads(row["vars"]) if row.get("vars") else {}


def _commands(row: dict[str, str]) -> list[dict[str, Any]]:
    return [{**json.loads(value), "field": field} for field, value in row.items() if field.startswith("c:")]
