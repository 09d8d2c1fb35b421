"""The nodes run Conductor's HTTP and HTTP_POLL tasks themselves, as Conductor's server does.

Each node attaches one in-process worker session for the two task types to its dispatcher, so
these tasks travel the path every worker task travels: queued by a decision, claimed
atomically with a lease (one node runs each attempt), heartbeated while the call or the polling
lasts, reported with `complete_task`, retried under the task definition, re-run by another
node when this one dies (the lease expires). The calls are made with httpx's asyncio client,
so a slow endpoint costs a coroutine, never the node's loop; at most `concurrency` calls run
at once per node (the session's credits), the rest wait in the queue for any node.

The request, the output and the reasons are Conductor's (see `core.http_request`). An HTTP
task never reaches the cluster's own etcd or Redis (`blocked_target`), and a response body
above MAX_RESPONSE_BYTES fails its attempt instead of filling the node's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from ..core import javascript
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.http_request import (MAX_RESPONSE_BYTES, HttpRequest, HttpRequestError, blocked_target,
                                 failure_reason, parse_poll, parse_request, response_output)
from ..core.payloads import PayloadLimit, checked_output
from ..store import ResultOutcome, Store, StoreUnavailable
from .dispatch import Dispatcher, WorkerSession

log = logging.getLogger(__name__)

HTTP_TYPES = frozenset({"HTTP", "HTTP_POLL"})


class _TooLarge(Exception):
    pass


class HttpTaskRunner:
    """This node's executor of HTTP and HTTP_POLL tasks (see the module's docstring)."""

    def __init__(self, store: Store, dispatcher: Dispatcher, node_id: str, limit: PayloadLimit, *,
                 concurrency: int, protected: list[str], on_result: Callable[[list[str]], None]) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limit = limit
        self.concurrency = concurrency
        self.protected = protected          # host:port of etcd and Redis: never an HTTP task's target
        self.on_result = on_result          # decide the workflow now (its next step, here)
        self.session = WorkerSession(f"{node_id}/http", HTTP_TYPES, concurrency)
        self.outcomes: Counter[tuple[str, str]] = Counter()   # (task type, status) of attempts run here
        self._client: httpx.AsyncClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.concurrency <= 0:
            return
        self._client = httpx.AsyncClient(
            follow_redirects=True, max_redirects=5, trust_env=True,
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            event_hooks={"request": [self._refuse_protected]})
        self.dispatcher.attach(self.session)
        self._reader = asyncio.create_task(self._read(), name="http-tasks")

    async def stop(self) -> None:
        if self._reader is None:
            return
        self._reader.cancel()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(self._reader, *self._running, return_exceptions=True)
        await self.dispatcher.detach(self.session)   # what was pushed and not started goes back
        if self._client is not None:
            await self._client.aclose()

    async def _refuse_protected(self, request: httpx.Request) -> None:
        """Every request, redirects included, is checked: no task reaches etcd or Redis."""
        endpoint = blocked_target(str(request.url), self.protected)
        if endpoint is not None:
            raise HttpRequestError(f"{request.url.host}:{request.url.port} is the cluster's own etcd or Redis "
                                   f"({endpoint}); HTTP tasks may not call it")

    async def _read(self) -> None:
        while True:
            message = await self.session.outbox.get()
            if message is None:
                return
            if not message.HasField("task"):
                continue
            task = asyncio.create_task(self._run(message.task))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, assignment: Any) -> None:
        workflow_id, task_id, task_type = assignment.workflow_id, assignment.task_id, assignment.task_type
        beating = asyncio.create_task(self._heartbeat(workflow_id, task_id, assignment.lease_ms))
        try:
            task_input = json.loads(assignment.input_json or b"{}")
            status, output, reason = await self._execute(task_type, task_input)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # never expected; the attempt fails with what happened
            log.exception("HTTP task %s failed unexpectedly", task_id)
            status, output, reason = st.TASK_FAILED, {}, f"the node could not run the HTTP task: {exc}"
        finally:
            beating.cancel()
        await self._report(workflow_id, task_id, task_type, status, output, reason)

    async def _report(self, workflow_id: str, task_id: str, task_type: str, status: st.TaskStatus,
                      output: dict[str, Any], reason: str) -> None:
        checked, problem = checked_output(self.limit, json.dumps(output, ensure_ascii=False))
        if checked is None:
            status, checked, reason = st.TASK_FAILED, "{}", problem
        text = checked
        try:
            ack = await self.store.complete_task(workflow_id, task_id, self.session.worker_id, status, text,
                                                 reason, now_ms())
        except StoreUnavailable as exc:   # the lease expires and the attempt runs again
            log.warning("could not store the result of HTTP task %s (%s)", task_id, exc)
            ack = None
        self.session.held = max(0, self.session.held - 1)
        self.session.heard()
        self.dispatcher.grant(self.session, 1)
        if ack is not None and ack.outcome is ResultOutcome.STORED:
            self.outcomes[(task_type, status)] += 1
            self.on_result([workflow_id])

    async def _heartbeat(self, workflow_id: str, task_id: str, lease_ms: int) -> None:
        """Keep the lease while the call (or the polling) lasts, as a worker would."""
        period = max(0.2, lease_ms / 3000)
        while True:
            await asyncio.sleep(period)
            self.session.heard()
            try:
                if await self.store.heartbeat(workflow_id, task_id, self.session.worker_id, now_ms()) == 0:
                    return   # the attempt is no longer ours; its result will be refused as stale
            except StoreUnavailable:
                pass

    async def _execute(self, task_type: str, task_input: dict[str, Any]) -> tuple[st.TaskStatus, dict[str, Any], str]:
        try:
            request = parse_request(task_input)
            poll = parse_poll(task_input) if task_type == "HTTP_POLL" else None
        except HttpRequestError as exc:
            return st.FAILED_WITH_TERMINAL_ERROR, {}, str(exc)
        if poll is None:
            return await self._call(request)
        polls = 0
        while True:
            status, output, reason = await self._call(request)
            polls += 1
            output["pollCount"] = polls
            if status != st.TASK_COMPLETED:
                return status, output, reason
            try:
                done = javascript.to_boolean(await asyncio.to_thread(
                    javascript.evaluate, poll.condition, {"output": output}))
            except javascript.JavaScriptError as exc:
                return st.FAILED_WITH_TERMINAL_ERROR, output, f"terminationCondition failed: {exc}"
            if done:
                return st.TASK_COMPLETED, output, ""
            if polls >= poll.max_polls:
                return (st.TASK_FAILED, output,
                        f"terminationCondition still false after maxPollCount={poll.max_polls} polls")
            await asyncio.sleep(poll.delay_s(polls))

    async def _call(self, request: HttpRequest) -> tuple[st.TaskStatus, dict[str, Any], str]:
        assert self._client is not None
        timeout = httpx.Timeout(request.read_timeout_s, connect=request.connect_timeout_s)
        try:
            async with self._client.stream(request.method, request.uri, headers=request.headers,
                                           content=request.content, timeout=timeout) as response:
                content = await self._body(response)
        except HttpRequestError as exc:
            return st.FAILED_WITH_TERMINAL_ERROR, {}, str(exc)
        except _TooLarge:
            return (st.TASK_FAILED, {}, f"{request.method} {request.uri[:200]} answered with a body larger than "
                                   f"{MAX_RESPONSE_BYTES} bytes; HTTP tasks keep at most that much")
        except httpx.TimeoutException as exc:
            kind = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for the answer"
            return st.TASK_FAILED, {}, f"{request.method} {request.uri[:200]} timed out {kind}"
        except httpx.HTTPError as exc:
            return st.TASK_FAILED, {}, f"failed to invoke HTTP task: {type(exc).__name__}: {exc}"[:1000]
        output = response_output(response.status_code, list(response.headers.multi_items()), content)
        if 200 <= response.status_code < 300:
            return st.TASK_COMPLETED, output, ""
        return st.TASK_FAILED, output, failure_reason(request, response.status_code, content)

    @staticmethod
    async def _body(response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _TooLarge()
            chunks.append(chunk)
        return b"".join(chunks)
