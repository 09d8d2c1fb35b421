"""All workflow, task and definition state, in Redis.

Every change goes through one Lua script of `orchestrator.scripts` (one atomic
step each); plain commands are used only to read and to store definitions.
Any node may start, terminate, claim, heartbeat and report results; only the
leader's engine calls the fenced `apply_decision`, `expire_lease` and `raise_epoch`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Iterable

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import NoScriptError

from . import model as m
from . import scripts
from .definitions import iter_tasks, referenced_task_names
from .engine import Decision
from .errors import FailedPrecondition, NotFound, StaleEpoch


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ClaimedTask:
    workflow_id: str
    spec: m.TaskSpec
    lease_ms: int


class _CachedSnapshot:
    """A snapshot as this node last read it, with the definitions revision it was read at."""

    def __init__(self, revision: int, snapshot: dict[str, Any]) -> None:
        self.revision = revision
        self.snapshot = snapshot
        self.text = dumps(snapshot)
        self.variables = dumps(snapshot["workflow"].get("variables", {}))


@dataclass(frozen=True)
class Due:
    """What the engine must look at now, and when it next needs to wake up."""

    workflows: list[str]
    expired_leases: list[tuple[str, str]]
    next_at_ms: float | None


class Store:
    def __init__(self, client: aioredis.Redis, prefix: str = "wfo", idempotency_ttl_s: int = 7 * 86400) -> None:
        self.redis = client
        self.prefix = prefix
        self.idempotency_ttl_s = idempotency_ttl_s
        self._start = client.register_script(scripts.START_WORKFLOW)
        self._apply = client.register_script(scripts.APPLY_DECISION)
        self._claim = client.register_script(scripts.CLAIM)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._complete = client.register_script(scripts.COMPLETE_TASK)
        self._release = client.register_script(scripts.RELEASE_TASK)
        self._expire = client.register_script(scripts.EXPIRE_LEASE)
        self._raise_epoch = client.register_script(scripts.RAISE_EPOCH)
        self._terminate = client.register_script(scripts.TERMINATE)
        self._signal = client.register_script(scripts.SIGNAL_TASK)
        self._operate = client.register_script(scripts.OPERATE)
        self._snapshots: dict[tuple[str, int], _CachedSnapshot] = {}

    @classmethod
    def from_url(cls, url: str, prefix: str = "wfo") -> "Store":
        client = aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=5,
                                         socket_keepalive=True, retry_on_timeout=True)
        return cls(client, prefix)

    @classmethod
    def from_sentinels(cls, sentinels: list[str], master: str, prefix: str = "wfo", db: int = 0,
                       password: str | None = None) -> "Store":
        """Follow the master that Sentinel names; after a failover, reconnect to the new one."""
        addresses = [(host, int(port)) for host, port in (s.rsplit(":", 1) for s in sentinels)]
        sentinel = Sentinel(addresses, socket_timeout=1.0)
        client = sentinel.master_for(master, decode_responses=True, db=db, password=password,
                                     health_check_interval=5, socket_keepalive=True, retry_on_timeout=True)
        return cls(client, prefix)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def workflow_key(self, workflow_id: str) -> str:
        return f"{self.prefix}:wf:{{{workflow_id}}}"

    @property
    def ready_channel(self) -> str:
        return self.key("ready")

    @property
    def wake_channel(self) -> str:
        return self.key("wake")

    async def close(self) -> None:
        await self.redis.aclose()

    # ------------------------------------------------------------- definitions

    async def put_task_def(self, definition: dict[str, Any]) -> None:
        """Store a task definition and the limits the claim script enforces for its type."""
        name = definition["name"]
        concurrency, rate = definition["concurrentExecLimit"], definition["rateLimitPerFrequency"]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("defs", "task"), name, dumps(definition))
            if concurrency or rate:
                period_ms = int(definition["rateLimitFrequencyInSeconds"] * 1000)
                pipe.hset(self.key("limits"), name, f"{concurrency}|{rate}|{period_ms}")
            else:
                pipe.hdel(self.key("limits"), name)
            pipe.incr(self.key("defs", "rev"))
            await pipe.execute()

    async def get_task_def(self, name: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.key("defs", "task"), name)
        return json.loads(raw) if raw else None

    async def task_defs(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        key = self.key("defs", "task")
        if names is None:
            return {k: json.loads(v) for k, v in (await self.redis.hgetall(key)).items()}
        names = sorted(set(names))
        if not names:
            return {}
        values = await self.redis.hmget(key, names)
        return {n: json.loads(v) for n, v in zip(names, values) if v}

    async def put_workflow_def(self, definition: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("defs", "wf", definition["name"]), str(definition["version"]), dumps(definition))
            pipe.sadd(self.key("defs", "wfnames"), definition["name"])
            pipe.incr(self.key("defs", "rev"))
            await pipe.execute()

    async def get_workflow_def(self, name: str, version: int = 0) -> dict[str, Any] | None:
        key = self.key("defs", "wf", name)
        if version:
            raw = await self.redis.hget(key, str(version))
            return json.loads(raw) if raw else None
        versions = await self.redis.hkeys(key)
        if not versions:
            return None
        raw = await self.redis.hget(key, max(versions, key=int))
        return json.loads(raw) if raw else None

    async def workflow_defs(self, name: str = "") -> list[dict[str, Any]]:
        """Every version of `name`, or the latest version of every name."""
        if name:
            versions = await self.redis.hgetall(self.key("defs", "wf", name))
            return [json.loads(versions[v]) for v in sorted(versions, key=int)]
        names = sorted(await self.redis.smembers(self.key("defs", "wfnames")))
        found = [await self.get_workflow_def(n) for n in names]
        return [d for d in found if d]

    # ------------------------------------------------------------- workflows

    async def snapshot(self, definition: dict[str, Any]) -> dict[str, Any]:
        """The definition with every task and workflow definition it can reach, frozen for one run.

        Sub-workflows and the failure workflow are resolved now ("name:version", version 0 =
        the latest at start), so a run never changes because a definition was re-registered.
        """
        workflows: dict[str, dict[str, Any]] = {}
        task_names = set(referenced_task_names(definition))
        pending = [definition]
        while pending:
            current = pending.pop()
            for node_ref, version in _workflow_refs(current):
                key = f"{node_ref}:{version}"
                if key in workflows:
                    continue
                found = await self.get_workflow_def(node_ref, version)
                if found is None:
                    raise FailedPrecondition(f"workflow '{current['name']}' needs workflow definition "
                                             f"'{node_ref}' (version {version or 'latest'}), which is not registered")
                workflows[key] = found
                task_names |= referenced_task_names(found)
                pending.append(found)
        task_defs = await self.task_defs(task_names)
        missing = task_names - set(task_defs)
        if missing:
            raise FailedPrecondition(f"task definition(s) {', '.join(sorted(missing))} used by "
                                     f"'{definition['name']}' are no longer registered")
        return {"workflow": definition, "taskDefs": task_defs, "subWorkflows": workflows}

    async def start_workflow(self, workflow_id: str, snapshot: dict[str, Any], workflow_input: dict[str, Any],
                             correlation_id: str, idempotency_key: str, now_ms: int) -> tuple[str, bool]:
        """Start from a snapshot as given (no check that it is still the latest)."""
        outcome = await self._start_from(_CachedSnapshot(-1, snapshot), workflow_id, workflow_input, correlation_id,
                                         idempotency_key, now_ms)
        assert outcome is not None
        return outcome

    async def start_by_name(self, name: str, version: int, workflow_id: str, workflow_input: dict[str, Any],
                            correlation_id: str, idempotency_key: str, now_ms: int) -> tuple[str, bool]:
        """Start the definition `name` (version 0 = latest) from this node's snapshot cache.

        Every registration bumps `defs:rev`; the start script refuses a snapshot taken at an
        older revision, and the cache is refilled. So a start costs one round trip, and never
        runs a definition older than the latest registration."""
        for _ in range(3):
            cached = self._snapshots.get((name, version)) or await self._fill_snapshot(name, version)
            outcome = await self._start_from(cached, workflow_id, workflow_input, correlation_id,
                                             idempotency_key, now_ms)
            if outcome is not None:
                return outcome
            self._snapshots.clear()
        raise FailedPrecondition("definitions keep changing during this start; try again")

    async def _fill_snapshot(self, name: str, version: int) -> _CachedSnapshot:
        revision = int(await self.redis.get(self.key("defs", "rev")) or 0)   # before reading: see above
        definition = await self.get_workflow_def(name, version)
        if definition is None:
            which = f" version {version}" if version else ""
            raise NotFound(f"no workflow definition named '{name}'{which}; register it first")
        cached = self._snapshots[(name, version)] = _CachedSnapshot(revision, await self.snapshot(definition))
        return cached

    async def _start_from(self, cached: _CachedSnapshot, workflow_id: str, workflow_input: dict[str, Any],
                          correlation_id: str, idempotency_key: str, now_ms: int) -> tuple[str, bool] | None:
        definition = cached.snapshot["workflow"]
        meta = {"name": definition["name"], "version": definition["version"], "input": workflow_input,
                "correlationId": correlation_id}
        created, found_id = await self._start(args=[
            self.prefix, workflow_id, idempotency_key, now_ms, dumps(meta), cached.text, definition["name"],
            correlation_id, self.idempotency_ttl_s, cached.variables, cached.revision])
        if created == -1:
            return None
        return found_id, bool(created)

    async def load(self, workflow_id: str) -> m.WorkflowState | None:
        return parse_workflow(workflow_id, await self.redis.hgetall(self.workflow_key(workflow_id)))

    async def load_many(self, workflow_ids: list[str]) -> list[m.WorkflowState | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for workflow_id in workflow_ids:
                pipe.hgetall(self.workflow_key(workflow_id))
            rows = await pipe.execute()
        return [parse_workflow(i, row) for i, row in zip(workflow_ids, rows)]

    async def terminate(self, workflow_id: str, reason: str, now_ms: int, compensate: bool = False) -> None:
        result = await self._terminate(args=[self.prefix, workflow_id, reason, now_ms, "1" if compensate else "0"])
        if result == "UNKNOWN":
            raise NotFound(f"no workflow with id '{workflow_id}'")
        if result.startswith("TERMINAL:"):
            raise FailedPrecondition(f"workflow '{workflow_id}' already ended as {result.split(':', 1)[1]}; "
                                     "only a running, paused or compensating workflow can be terminated")

    async def operate(self, workflow_id: str, *, allowed: Iterable[str], new_status: str = "",
                      command: dict[str, Any] | None = None, now_ms: int) -> None:
        """Change status and/or queue a command for the decider, if the workflow is in an allowed status."""
        result = await self._operate(args=[self.prefix, workflow_id, ",".join(allowed), new_status,
                                           dumps(command) if command else "", now_ms])
        if result == "UNKNOWN":
            raise NotFound(f"no workflow with id '{workflow_id}'")
        if result.startswith("STATE:"):
            raise FailedPrecondition(f"workflow '{workflow_id}' is {result.split(':', 1)[1]}; this operation "
                                     f"needs one of {', '.join(allowed)}")

    async def signal_task(self, workflow_id: str, task_id: str, status: str, output_json: str, reason: str,
                          now_ms: int) -> None:
        result = str(await self._signal(args=[self.prefix, workflow_id, task_id, status, output_json, reason,
                                              now_ms]))
        if result == "UNKNOWN":
            raise NotFound(f"workflow '{workflow_id}' has no task '{task_id}'")
        if result.startswith("KIND:"):
            raise FailedPrecondition(f"task '{task_id}' is a {result[5:]} task; only WAIT and HUMAN tasks "
                                     "take signals")
        if result.startswith("STALE:"):
            raise FailedPrecondition(f"task '{task_id}' is already {result[6:]}")

    async def search(self, *, name: str, status: str, correlation_id: str, offset: int, limit: int,
                     created_from_ms: int = 0, created_to_ms: int = 0) -> tuple[list[str], int | None]:
        """Workflow ids, newest first, matching every filter given; and the next offset.

        Every index is scored by creation time, so the time range narrows the scan itself."""
        if correlation_id:
            index = self.key("idx", "corr", correlation_id)
        elif name:
            index = self.key("idx", "name", name)
        elif status:
            index = self.key("idx", "st", status)
        else:
            index = self.key("idx", "all")
        found: list[str] = []
        position = offset
        chunk = max(limit * 2, 100)
        while len(found) < limit:
            ids = await self.redis.zrevrangebyscore(index, created_to_ms or "+inf", created_from_ms or "-inf",
                                                    start=position, num=chunk)
            if not ids:
                return found, None
            async with self.redis.pipeline(transaction=False) as pipe:
                for workflow_id in ids:
                    pipe.hmget(self.workflow_key(workflow_id), "st", "m")
                rows = await pipe.execute()
            for workflow_id, (st, meta_raw) in zip(ids, rows):
                position += 1
                if st is None:
                    continue
                meta = json.loads(meta_raw)
                if ((not status or st == status) and (not name or meta["name"] == name)
                        and (not correlation_id or meta["correlationId"] == correlation_id)):
                    found.append(workflow_id)
                    if len(found) == limit:
                        break
        more = await self.redis.zcount(index, created_from_ms or "-inf", created_to_ms or "+inf") > position
        return found, position if more else None

    # ------------------------------------------------------------- tasks (any node)

    async def claim(self, task_type: str, count: int, worker_id: str, now_ms: int) -> list[ClaimedTask]:
        flat = await self._claim(args=[self.prefix, task_type, count, now_ms, worker_id])
        claimed = []
        for i in range(0, len(flat), 4):
            spec = m.TaskSpec.from_json(json.loads(flat[i + 2]))
            claimed.append(ClaimedTask(flat[i], spec, int(flat[i + 3])))
        return claimed

    async def heartbeat(self, workflow_id: str, task_id: str, worker_id: str, now_ms: int) -> int:
        """Extends the lease of an attempt this worker holds; returns the lease in ms, 0 if gone."""
        return int(await self._heartbeat(args=[self.prefix, workflow_id, task_id, now_ms, worker_id]))

    async def complete_task(self, workflow_id: str, task_id: str, worker_id: str, status: str,
                            output_json: str, reason: str, now_ms: int) -> str:
        """Returns OK, DUPLICATE (same result seen before), STALE:<why> or UNKNOWN."""
        return str(await self._complete(args=[self.prefix, workflow_id, task_id, status, output_json,
                                              reason, now_ms, worker_id]))

    async def release_task(self, workflow_id: str, task_id: str, worker_id: str, now_ms: int) -> bool:
        return bool(await self._release(args=[self.prefix, workflow_id, task_id, now_ms, worker_id]))

    # ------------------------------------------------------------- engine (leader only, fenced)

    async def raise_epoch(self, epoch: int) -> None:
        stored = int(await self._raise_epoch(args=[self.prefix, epoch]))
        if stored > epoch:
            raise StaleEpoch(f"stored epoch {stored} is newer than ours ({epoch})")

    async def due(self, now_ms: int, limit: int) -> Due:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.key("decide"), "-inf", now_ms, start=0, num=limit)
            pipe.zrangebyscore(self.key("leases"), "-inf", now_ms, start=0, num=limit)
            # the first entries still in the future: when to look again if nothing wakes us
            pipe.zrangebyscore(self.key("decide"), f"({now_ms}", "+inf", start=0, num=1, withscores=True)
            pipe.zrangebyscore(self.key("leases"), f"({now_ms}", "+inf", start=0, num=1, withscores=True)
            workflows, leases, next_decide, next_lease = await pipe.execute()
        nexts = [row[0][1] for row in (next_decide, next_lease) if row]
        expired = [tuple(member.split("|", 1)) for member in leases]
        return Due(workflows, expired, min(nexts) if nexts else None)  # type: ignore[arg-type]

    async def expire_lease(self, epoch: int, workflow_id: str, task_id: str, now_ms: int) -> str:
        result = str(await self._expire(args=[self.prefix, epoch, workflow_id, task_id, now_ms]))
        if result == "STALE_EPOCH":
            raise StaleEpoch("lease expiry refused: a newer leader holds the epoch")
        return result

    async def apply_decisions(self, epoch: int, now_ms: int,
                              decisions: list[tuple[m.WorkflowState, Decision]]) -> list[str]:
        """Apply many decisions in one pipeline; returns OK/CONFLICT/GONE for each."""
        try:
            results = await self._apply_pipelined(epoch, now_ms, decisions)
        except NoScriptError:   # Redis restarted and lost its script cache; a repeat is safe (revisions)
            await self.redis.script_load(scripts.APPLY_DECISION)
            results = await self._apply_pipelined(epoch, now_ms, decisions)
        if "STALE_EPOCH" in results:
            raise StaleEpoch("decision refused: a newer leader holds the epoch")
        return results

    async def _apply_pipelined(self, epoch: int, now_ms: int,
                               decisions: list[tuple[m.WorkflowState, Decision]]) -> list[str]:
        # EVALSHA itself: a Script object in a pipeline makes redis-py ask SCRIPT EXISTS every time.
        async with self.redis.pipeline(transaction=False) as pipe:
            for workflow, decision in decisions:
                pipe.evalsha(self._apply.sha, 0, *decision_args(self.prefix, epoch, workflow, decision, now_ms))
            return [str(r) for r in await pipe.execute()]


def decision_args(prefix: str, epoch: int, wf: m.WorkflowState, d: Decision, now_ms: int) -> list[Any]:
    """The APPLY_DECISION arguments: user data stays pre-encoded text inside the envelope."""
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
    if d.snapshot is not None:   # restarted with the latest definition: its version shows from now on
        definition = d.snapshot["workflow"]
        fields += ["def", dumps(d.snapshot),
                   "m", dumps({"name": definition["name"], "version": definition["version"], "input": wf.input,
                               "correlationId": wf.correlation_id})]
    envelope: dict[str, Any] = {"fields": fields}
    if d.status:
        envelope.update(status=d.status, out=dumps(d.output) if d.output is not None else None,
                        reason=d.reason)
    for name, value in (("delete", d.delete_tasks), ("consumed", d.consumed_commands), ("enqueue", d.enqueue),
                        ("dequeue", d.dequeue), ("drop", d.drop_leases),
                        ("terminate", d.terminate_workflows)):
        if value:
            envelope[name] = [list(v) if isinstance(v, tuple) else v for v in value]
    if d.start_workflows:
        envelope["start"] = [{"id": w.workflow_id, "name": w.name, "corr": w.correlation_id, "parent": w.parent,
                              "m": dumps({"name": w.name, "version": w.version, "input": w.input,
                                          "correlationId": w.correlation_id}),
                              "def": dumps(w.snapshot),
                              "vars": dumps(w.snapshot["workflow"].get("variables", {}))}
                             for w in d.start_workflows]
    if d.reset_result:
        envelope["reset"] = True
    if d.wake_at_ms is not None:
        envelope["wake"] = d.wake_at_ms
    return [prefix, epoch, wf.workflow_id, wf.revision, now_ms,
            json.dumps({k: v for k, v in envelope.items() if v is not None}, separators=(",", ":"))]


def _workflow_refs(definition: dict[str, Any]) -> list[tuple[str, int]]:
    """(name, version) of the sub-workflows and failure workflow a definition starts."""
    refs = [(t["subWorkflowParam"]["name"], t["subWorkflowParam"].get("version", 0))
            for t in iter_tasks(definition.get("tasks")) if t.get("type") == "SUB_WORKFLOW"]
    if definition.get("failureWorkflow"):
        refs.append((definition["failureWorkflow"], 0))
    return refs


@functools.lru_cache(maxsize=256)
def _parse_snapshot(text: str) -> dict[str, Any]:
    """Workflows of one definition share one snapshot text: parse it once, not per decision.

    The parsed snapshot is shared, so nothing may change it (the decider only reads it)."""
    return json.loads(text)


def parse_workflow(workflow_id: str, row: dict[str, str]) -> m.WorkflowState | None:
    """Rebuild a WorkflowState from its hash (None when the hash does not exist)."""
    if not row or "m" not in row:
        return None
    meta = json.loads(row["m"])
    snapshot = _parse_snapshot(row["def"])
    specs: dict[str, m.TaskSpec] = {}
    runtimes: dict[str, m.TaskRuntime] = {}
    outputs: dict[str, dict[str, Any]] = {}
    commands: list[dict[str, Any]] = []
    for field, value in row.items():
        prefix, _, task_id = field.partition(":")
        if not task_id:
            continue
        if prefix == "t":
            specs[task_id] = m.TaskSpec.from_json(json.loads(value))
        elif prefix == "s":
            runtimes[task_id] = m.TaskRuntime.from_json(json.loads(value))
        elif prefix == "o":
            outputs[task_id] = json.loads(value)
        elif prefix == "c":
            commands.append({**json.loads(value), "field": field})
    tasks = [m.TaskState(spec, runtimes[task_id], outputs.get(task_id))
             for task_id, spec in specs.items() if task_id in runtimes]
    tasks.sort(key=lambda t: t.spec.seq)
    return m.WorkflowState(
        workflow_id=workflow_id, name=meta["name"], version=meta["version"], status=row["st"],
        input=meta["input"], correlation_id=meta["correlationId"], created_at_ms=int(row["created"]),
        updated_at_ms=int(row.get("upd", row["created"])), definition=snapshot["workflow"],
        task_defs=snapshot["taskDefs"], sub_workflows=snapshot.get("subWorkflows", {}), tasks=tasks,
        variables=json.loads(row["vars"]) if row.get("vars") else {}, parent=row.get("parent", ""),
        commands=commands,
        output=json.loads(row["out"]) if row.get("out") else None, reason=row.get("reason", ""),
        ended_at_ms=int(row.get("end", 0)), revision=int(row["rev"]))
