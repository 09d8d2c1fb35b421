"""Consuming the event bus: every node runs the active event handlers (choreography).

Each handler has one consumer group (named after it) on its topic's stream, and every node
reads it as a consumer named after itself, so a handler's events spread over the cluster and
each goes to one node at a time. Delivery is at-least-once, handling is exactly-once in effect:

- an event is acknowledged only after all its handler's actions are done;
- each action is done together with its record (`handled:<handler>:<event id>#<i>`), or for
  `start_workflow` through the start script's idempotency key `event:<handler>:<event id>`
  (`#<i>` added for the second action on), in one atomic step; so a redelivered event
  (a node died after acting and before acknowledging) changes nothing;
- an event published through this node's API is read for this node's consumers in the call that
  appends it (`take`), as their blocked reads would have: it is handled here at once, without
  another node waking up to read it, and acknowledged with the handler's next read;
- what a node received and did not acknowledge for the handler's `redeliverAfterSeconds` (it
  died, or the store failed under it) is taken over by whichever node looks first (XAUTOCLAIM);
- an event a handler cannot handle (its workflow definition is not registered, the task ended,
  a condition fails at run time, a payload is too large) goes to the dead-letter topic with the
  reason at once; one delivered `maxDeliveries` times without being acknowledged goes there too;
- a start refused by its namespace's quota of workflows in flight is not the event's fault and
  passes: the event stays unacknowledged and is delivered again after `redeliverAfterSeconds`.

Events of one handler are handled concurrently, so their order is not kept.

A handler belongs to the namespace of its stored name (core/namespaces.py): it consumes that
namespace's topic, starts that namespace's workflows, publishes to its topics, and completes,
fails or terminates only its workflows (another's is "no such workflow").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.namespaces import namespace_of, qualified, relative, topic_in
from ..core import events as ev
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.errors import InvalidArgument, OrchestratorError
from ..core.payloads import PayloadLimit, encode
from ..core.safe_expr import SafeExpressionError
from ..store import ActionOutcome, Store, StoreUnavailable
from ..store.protocol import FirstDecision, QuotaExceeded, Started

log = logging.getLogger(__name__)

BATCH = 128
MAX_IN_FLIGHT = 32       # events this node handles at once (each is a few store calls)
WAITS = "waits"          # the kind of the consumers of topics WAIT tasks wait on
MAX_CORRELATED = 20      # running workflows one event may reach through its key as a correlation id
BLOCK_MS = 500
REFRESH_S = 1.0


class Unhandleable(Exception):
    """This event cannot be handled by this handler, ever: it goes to the dead-letter topic."""


@dataclass
class _Running:
    handler: dict[str, Any]
    task: asyncio.Task[None]


class EventConsumers:
    def __init__(self, store: Store, consumer: str, *, on_workflows: Callable[[list[str]], None],
                 start_decided: Callable[[Callable[[FirstDecision], Awaitable[Started]]], Awaitable[Started]],
                 max_payload_bytes: int, refresh_s: float = REFRESH_S) -> None:
        """`consumer`: this node's name in every group; `on_workflows`: decide these workflows
        soon (ones an action completed a task of or terminated). `start_decided` (`Decider.start`):
        a start_workflow action's workflow is created and decided in one script, as an API
        start is."""
        self.store = store
        self.consumer = consumer
        self.on_workflows = on_workflows
        self.start_decided = start_decided
        self.payload_limit = PayloadLimit(max_payload_bytes)
        self.refresh_s = refresh_s
        self._running: dict[str, _Running] = {}
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)   # events being handled at once, all handlers
        self._taken: set[asyncio.Task[None]] = set()   # events taken at their publish, being handled
        self._to_ack: dict[str, list[str]] = {}   # handler -> events taken and handled, for its next read
        self._supervisor: asyncio.Task[None] | None = None
        self.handled = 0        # events this node handled (actions done or condition false)
        self.dead_lettered = 0  # events this node sent to the dead-letter topic
        self.duplicates = 0     # actions found done already (redeliveries)

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        tasks = [r.task for r in self._running.values()] + list(self._taken)
        if self._supervisor is not None:
            tasks.append(self._supervisor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()

    async def _supervise(self) -> None:
        """Follow the stored handlers: start a consumer for each active one, stop removed ones."""
        while True:
            try:
                handlers = {h["name"]: h for h in await self.store.event_handlers() if h.get("active", True)}
                handlers.update((w["name"], w) for w in map(_wait_consumer, await self.store.watched_topics()))
            except StoreUnavailable:
                _raise_if_cancelled()
                await asyncio.sleep(self.refresh_s)
                continue
            except Exception:
                _raise_if_cancelled()
                log.exception("reading the event handlers failed (a bug)")
                await asyncio.sleep(self.refresh_s)
                continue
            for name, running in list(self._running.items()):
                if handlers.get(name) != running.handler or running.task.done():
                    running.task.cancel()
                    del self._running[name]
            for name, handler in handlers.items():
                if name not in self._running:
                    self._running[name] = _Running(handler, asyncio.create_task(self._consume(handler)))
            await asyncio.sleep(self.refresh_s)

    async def _consume(self, handler: dict[str, Any]) -> None:
        name, topic = handler["name"], handler["event"]
        idle_ms = int(handler["redeliverAfterSeconds"] * 1000)
        claim_every_s = min(handler["redeliverAfterSeconds"] / 2, 1.0)
        cursor, next_claim = "0-0", 0.0
        handled: list[str] = []   # acknowledged with the next read, in its round trip
        while True:
            try:
                handled += self._to_ack.pop(name, [])   # taken at their publish and handled since
                if time.monotonic() >= next_claim:
                    if handled:   # not left unacknowledged while the claim runs
                        await self.store.ack_events(name, topic, handled)
                        handled = []
                    cursor, claimed = await self.store.claim_events(
                        name, topic, self.consumer, idle_ms, BATCH, handler["maxDeliveries"], cursor, now_ms())
                    if claimed:
                        handled = await self._handle_batch(handler, claimed)
                    if cursor == "0-0":   # went through every pending event: look again later
                        next_claim = time.monotonic() + claim_every_s
                received = await self.store.receive_events(name, topic, self.consumer, BATCH, BLOCK_MS, ack=handled)
                handled = []
                if received:
                    handled = await self._handle_batch(handler, received)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                _raise_if_cancelled()
                log.warning("event handler %s: the store is unavailable (%s); retrying", name, exc)
                await asyncio.sleep(0.5)
            except Exception:
                _raise_if_cancelled()
                log.exception("event handler %s: consuming failed (a bug); retrying", name)
                await asyncio.sleep(1.0)

    def groups_for(self, topic: str) -> list[str]:
        """The groups of the handlers this node runs on `topic`, to read an event published here for
        (service/events.py); none while MAX_IN_FLIGHT taken events wait to be handled, so that a
        burst of publishes to this node goes to every node's reads instead."""
        if len(self._taken) >= MAX_IN_FLIGHT:
            return []
        return [name for name, running in self._running.items()
                if running.handler["event"] == topic and not running.task.done()]

    def take(self, taken: Sequence[tuple[str, ev.BusEvent]]) -> None:
        """Handle the events a publish delivered to this node's consumer, each in its group (a
        handler's); each is acknowledged with that handler's next read. A handler stopped meanwhile,
        or a failure, leaves it pending: taken over after `redeliverAfterSeconds`, as a read one would be."""
        for group, event in taken:
            running = self._running.get(group)
            if running is None:
                continue
            task = asyncio.create_task(self._handle_taken(running.handler, event))
            self._taken.add(task)
            task.add_done_callback(self._taken.discard)

    async def _handle_taken(self, handler: dict[str, Any], event: ev.BusEvent) -> None:
        try:
            async with self._in_flight:
                if await self._handle(handler, event):
                    self._to_ack.setdefault(handler["name"], []).append(event.event_id)
        except asyncio.CancelledError:
            raise
        except QuotaExceeded:   # logged by `_act`: delivered again after the handler's redeliverAfterSeconds
            pass
        except StoreUnavailable as exc:
            log.warning("event %s of handler %s: the store is unavailable (%s); delivered again later",
                        event.event_id, handler["name"], exc)
        except Exception:
            log.exception("event %s of handler %s: handling failed (a bug); delivered again later",
                          event.event_id, handler["name"])

    async def _handle_batch(self, handler: dict[str, Any], events: list[ev.BusEvent]) -> list[str]:
        """Handle the events at once; the ids of those to acknowledge (the caller sends them with its
        next read). A store that failed under one of them is raised after the others' are sent."""
        async def one(event: ev.BusEvent) -> bool:
            async with self._in_flight:
                return await self._handle(handler, event)
        done = await asyncio.gather(*(one(event) for event in events), return_exceptions=True)
        acked = [event.event_id for event, ok in zip(events, done) if ok is True]
        for result in done:
            if isinstance(result, StoreUnavailable):
                await self.store.ack_events(handler["name"], handler["event"], acked)
                raise result
        return acked

    async def _handle(self, handler: dict[str, Any], event: ev.BusEvent) -> bool:
        """True: handled, acknowledge it. False: dead-lettered (acknowledged there). Raises for a
        transient failure: left unacknowledged, redelivered after the handler's timeout."""
        try:
            try:
                payload = json.loads(event.payload_json)
            except ValueError as exc:
                raise Unhandleable(f"the payload is not JSON: {exc}") from None
            if handler.get("kind") == WAITS:
                await self._complete_waits(event, payload)
                self.handled += 1
                return True
            root = ev.scope(event.event_id, relative(event.topic), payload, event.key)
            try:
                if not ev.matches(handler, root):
                    self.handled += 1
                    return True
            except SafeExpressionError as exc:
                raise Unhandleable(f"condition: {exc}") from None
            for index, action in enumerate(handler["actions"]):
                await self._act(handler["name"], event, index, action, root)
            self.handled += 1
            return True
        except Unhandleable as exc:
            if await self.store.dead_letter(handler["name"], event, str(exc), now_ms()):
                self.dead_lettered += 1
                log.warning("event %s of %s dead-lettered by handler %s: %s", event.event_id, event.topic,
                            handler["name"], exc)
            return False

    async def _act(self, handler: str, event: ev.BusEvent, index: int, action: dict[str, Any],
                   root: dict[str, Any]) -> None:
        kind = action["action"]
        where = f"action {index} ({kind})"
        try:
            params = ev.resolve(action[kind], root)
        except (SafeExpressionError, ValueError, TypeError) as exc:
            raise Unhandleable(f"{where}: {exc}") from None
        try:
            if kind == "start_workflow":
                await self._start(handler, event, index, params)
                return
            if kind == "publish":
                topic = topic_in(namespace_of(handler), ev.topic_name(params.get("topic"), "publish.topic"))
                data = encode(params.get("payload", {}), "publish.payload")
                self.payload_limit.check("publish.payload", data)
                outcome, detail = await self.store.event_action(
                    handler, event.event_id, index, "publish", now_ms(), topic=topic,
                    key=str(params.get("key", "")), data_json=data)
                self._check(outcome, detail, where, "")
                return
            workflow_id = _text(params, "workflowId")
            if kind == "terminate_workflow":
                reason = str(params.get("terminationReason") or f"event {event.event_id} on {relative(event.topic)}")
                if not await self._ours(handler, workflow_id):
                    outcome, detail = ActionOutcome.UNKNOWN, ""
                else:
                    outcome, detail = await self.store.event_action(handler, event.event_id, index, "terminate",
                                                                    now_ms(), workflow_id=workflow_id, reason=reason)
            else:
                outcome, detail = await self._finish_task(handler, event, index, kind, workflow_id, params)
            self._check(outcome, detail, where, workflow_id)
        except QuotaExceeded as exc:   # not the event's fault, and it passes: delivered again later
            log.warning("event %s of handler %s: %s: %s; delivered again after the handler's redeliverAfterSeconds",
                        event.event_id, handler, where, exc)
            raise
        except (OrchestratorError, ValueError, TypeError) as exc:
            raise Unhandleable(f"{where}: {exc}") from None

    async def _complete_waits(self, event: ev.BusEvent, payload: Any) -> None:
        """Complete the WAIT tasks waiting on this event's topic in the workflow the event names:
        its key, or `payload.workflowId`, as a workflow id, else its key as a correlation id
        (running workflows only). The WAIT's output is the event. An event nobody waits for is
        dropped; a repeat finds the task completed and changes nothing."""
        named = [event.key] if event.key else []
        if isinstance(payload, dict) and isinstance(payload.get("workflowId"), str):
            named.append(payload["workflowId"])
        states = [s for s in await self.store.load_many(named) if s is not None] if named else []
        if not states and event.key:
            page = await self.store.search(name="", status=st.RUNNING, correlation_id=event.key, cursor="",
                                           limit=MAX_CORRELATED, namespace=namespace_of(event.topic))
            states = [s for s in await self.store.load_many(page.workflow_ids) if s is not None]
        output = encode({"eventId": event.event_id, "topic": relative(event.topic), "key": event.key,
                         "payload": payload}, "the event")
        for state in states:
            for task in state.tasks:
                if task.spec.kind != "WAIT" or task.runtime.status != st.IN_PROGRESS:
                    continue
                try:
                    # a topic in a WAIT is one of its workflow's namespace (core/namespaces.py)
                    if topic_in(namespace_of(state.name), ev.topic_name(task.spec.input.get("event"))) != event.topic:
                        continue
                    await self.store.signal_task(state.workflow_id, task.task_id, st.TASK_COMPLETED, output, "",
                                                 now_ms())
                except OrchestratorError:   # not an event wait, or completed meanwhile (a redelivery)
                    continue
                self.on_workflows([state.workflow_id])

    def _check(self, outcome: ActionOutcome, detail: str, where: str, workflow_id: str) -> None:
        if outcome is ActionOutcome.DUPLICATE:
            self.duplicates += 1
            return
        if outcome is ActionOutcome.OK:
            if workflow_id:
                self.on_workflows([workflow_id])
            return
        what = {ActionOutcome.UNKNOWN: "no such workflow or task", ActionOutcome.ENDED: f"the workflow already "
                f"ended as {detail}", ActionOutcome.STALE: f"the task is already {detail}"}[outcome]
        raise Unhandleable(f"{where}: {what} (workflow '{workflow_id}')")

    async def _start(self, handler: str, event: ev.BusEvent, index: int, params: dict[str, Any]) -> None:
        name = params.get("name")
        version = params.get("version", 0) or 0
        workflow_input = params.get("input", {}) or {}
        correlation = params.get("correlationId", "") or ""
        if not isinstance(name, str) or not name:
            raise InvalidArgument("'name' must be the name of a workflow definition")
        if isinstance(version, bool) or not isinstance(version, int | float) or version < 0:
            raise InvalidArgument("'version' must be 0 (the latest) or a version number")
        if not isinstance(workflow_input, dict):
            raise InvalidArgument("'input' must be an object")
        data = encode(workflow_input, "the workflow input")
        self.payload_limit.check("the workflow input", data)
        idempotency_key = f"event:{handler}:{event.event_id}" + (f"#{index}" if index else "")
        qualified_name, started_at = qualified(namespace_of(handler), name), now_ms()
        workflow_id = self.store.new_workflow_id(idempotency_key)   # in the partition of its key
        def begin(decide: FirstDecision) -> Awaitable[Started]:
            return self.store.start_by_name(qualified_name, int(version), workflow_id, workflow_input,
                                            str(correlation), idempotency_key, started_at, decide=decide)

        if not (await self.start_decided(begin)).created:
            self.duplicates += 1

    async def _finish_task(self, handler: str, event: ev.BusEvent, index: int, kind: str, workflow_id: str,
                           params: dict[str, Any]) -> tuple[ActionOutcome, str]:
        ref = _text(params, "taskRefName")
        workflow = await self.store.load(workflow_id)
        if workflow is None or namespace_of(workflow.name) != namespace_of(handler):
            return ActionOutcome.UNKNOWN, ""
        tasks = [t for t in workflow.tasks if ref in (t.spec.ref, t.spec.key)]
        if not tasks:
            raise InvalidArgument(f"workflow '{workflow_id}' has no task '{ref}' (yet)")
        task = max(tasks, key=lambda t: t.spec.seq)
        output = params.get("output", {}) or {}
        if not isinstance(output, dict):
            raise InvalidArgument("'output' must be an object")
        data = encode(output, "the task output")
        self.payload_limit.check("the task output", data)
        status = st.TASK_COMPLETED if kind == "complete_task" else st.TASK_FAILED
        reason = "" if kind == "complete_task" else str(params.get("reason") or f"failed by event {event.event_id}")
        return await self.store.event_action(handler, event.event_id, index, "complete" if kind == "complete_task"
                                             else "fail", now_ms(), workflow_id=workflow_id, task_id=task.task_id,
                                             status=status, reason=reason, data_json=data)


    async def _ours(self, handler: str, workflow_id: str) -> bool:
        """Whether the workflow exists in the handler's namespace."""
        workflow = await self.store.load(workflow_id)
        return workflow is not None and namespace_of(workflow.name) == namespace_of(handler)


def _raise_if_cancelled() -> None:
    """End a consumer's retry loop once its task was asked to stop, even when the cancellation
    surfaced as a store error: redis-py can turn one that arrives while it connects into a
    connection error, and a loop that retried would keep a stopping node alive (issue 19)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _wait_consumer(topic: str) -> dict[str, Any]:
    """The consumer of a topic WAIT tasks wait on, run like a handler (group `wait:<topic>`)."""
    return {"name": f"wait:{topic}", "event": topic, "kind": WAITS, "redeliverAfterSeconds": 30.0,
            "maxDeliveries": ev.DEFAULT_MAX_DELIVERIES, "actions": []}


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"'{name}' resolved to {value!r:.80}, not a non-empty text")
    return value
