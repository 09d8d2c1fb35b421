"""The nodes run Conductor's HTTP and HTTP_POLL tasks themselves, as Conductor's server does.

Each node attaches one in-process worker session for the two task types to its dispatcher, so
these tasks travel the path every worker task travels: queued by a decision, claimed
atomically with a lease (one node runs each attempt), heartbeated while the call or the polling
lasts, reported with `complete_task`, retried under the task definition, re-run by another
node when this one dies (the lease expires). The calls are made with httpx's asyncio client,
so a slow endpoint costs a coroutine, never the node's loop; at most `concurrency` calls run
at once per node (the session's credits), the rest wait in the queue for any node.

The request, the output and the reasons are Conductor's (see `core.http_request`). A response
body above MAX_RESPONSE_BYTES fails its attempt instead of filling the node's memory.

Where a task may connect is decided by address, at connect time (`AddressGuard`): the host of
every connection (the first and each redirect's) is resolved here, every address it resolves
to is checked (`core.http_request.AddressPolicy`: no loopback, link-local, unspecified,
multicast, private or reserved address unless the node's `http_task_allow_cidrs` lists its
range, and never the cluster's own etcd or Redis), and the connection is made to the address
that was checked, so a name that resolves elsewhere a moment later (DNS rebinding) changes
nothing; the Host header and TLS's server name stay the name. However the URL spells the
address (`127.1`, `2130706433`, `0x7f000001`, `[::ffff:127.0.0.1]`, a name), what is judged is
what the connection would reach. Proxies from the environment are not used: the address a
proxy connects to could not be checked.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..core import javascript
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.http_request import (MAX_RESPONSE_BYTES, AddressDenied, AddressPolicy, HttpRequest, HttpRequestError,
                                 IPAddress, denied_reason, failure_reason, parse_poll, parse_request, plain_address,
                                 response_output, split_endpoint)
from ..core.payloads import PayloadLimit, checked_output
from ..store import ResultOutcome, Store, StoreUnavailable
from .dispatch import Dispatcher, WorkerSession

if TYPE_CHECKING:   # imported when the first HTTP task runs (`HttpTaskRunner._ready_client`)
    import httpx

log = logging.getLogger(__name__)

HTTP_TYPES = frozenset({"HTTP", "HTTP_POLL"})


class _TooLarge(Exception):
    pass


class NoAddress(Exception):
    """A host that resolves to no address (the client's transport turns it into a connection error)."""


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""host, port -> the addresses (text) a connection to them may use, in the order to try them."""


async def resolve(host: str, port: int) -> list[str]:
    """The system's resolver (getaddrinfo, off the loop); an address literal in any spelling
    getaddrinfo reads (`127.1`, `0x7f000001`) comes back as the address it means."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def _this_machine(address: IPAddress) -> bool:
    """Whether `address` is one of this machine's own (a socket can be bound to it)."""
    address = plain_address(address)
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


class AddressGuard:
    """Where HTTP tasks may connect: `checked` resolves a host and refuses (AddressDenied, one
    line naming the address and its class) unless every address it resolves to may be called."""

    def __init__(self, policy: AddressPolicy, protected: Iterable[str], resolver: Resolver = resolve) -> None:
        self.policy = policy
        self.protected = [(endpoint, parts) for endpoint in protected if (parts := split_endpoint(endpoint))]
        self.resolver = resolver

    async def checked(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for host:port, every one of them allowed."""
        addresses = []
        for text in await self.resolver(host, port):
            address = ipaddress.ip_address(text)
            endpoint = await self._infrastructure(address, port)
            if endpoint is not None:
                raise AddressDenied(f"{host}:{port} is the cluster's own etcd or Redis ({endpoint}); HTTP tasks may "
                                    "not call it")
            kind = self.policy.denied(address)
            if kind is not None:
                raise AddressDenied(denied_reason(host, port, address, kind))
            addresses.append(text)
        if not addresses:
            raise NoAddress(f"{host} resolves to no address")
        return addresses

    async def _infrastructure(self, address: IPAddress, port: int) -> str | None:
        """The etcd or Redis endpoint `address`:`port` reaches, if it reaches one: the same address,
        or both on this machine (a server bound to 0.0.0.0 or 127.0.0.1 answers on every local
        address, and every loopback one)."""
        for endpoint, (host, endpoint_port) in self.protected:
            if endpoint_port != port:
                continue
            try:
                theirs = {plain_address(ipaddress.ip_address(a)) for a in await resolve(host, port)}
            except (OSError, ValueError):   # unresolvable now: nothing can reach it by that name either
                continue
            if plain_address(address) in theirs or (_this_machine(address) and any(map(_this_machine, theirs))):
                return endpoint
        return None


class HttpTaskRunner:
    """This node's executor of HTTP and HTTP_POLL tasks (see the module's docstring)."""

    def __init__(self, store: Store, dispatcher: Dispatcher, node_id: str, limit: PayloadLimit, *,
                 concurrency: int, protected: list[str], on_result: Callable[[list[str]], None],
                 allow_cidrs: list[str] | tuple[str, ...] = ()) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limit = limit
        self.concurrency = concurrency
        # host:port of etcd and Redis are never an HTTP task's target; other addresses by the policy
        self.guard = AddressGuard(AddressPolicy.from_cidrs(allow_cidrs), protected)
        self.on_result = on_result          # decide the workflow now (its next step, here)
        self.session = WorkerSession(f"{node_id}/http", HTTP_TYPES, concurrency)
        self.outcomes: Counter[tuple[str, str]] = Counter()   # (task type, status) of attempts run here
        self._client: httpx.AsyncClient | None = None   # made by the first HTTP task (`_ready_client`)
        self._reader: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.concurrency <= 0:
            return
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

    async def _ready_client(self) -> httpx.AsyncClient:
        """The client, made on first use: httpx and httpcore (with h2 when installed) take about a
        fifth of a node's start to import (0.4 of 2.1 s, 2026-12-07), and most nodes run no HTTP
        task for a while or ever. Imported in a thread, so that the loop goes on meanwhile."""
        if self._client is None:
            made = await asyncio.to_thread(importlib.import_module, "orchestrator.cluster.http_client")
            if self._client is None:   # another task's first call may have made it meanwhile
                self._client = made.guarded_client(self.guard, self.concurrency)
        return self._client

    async def _call(self, request: HttpRequest) -> tuple[st.TaskStatus, dict[str, Any], str]:
        client = await self._ready_client()
        import httpx   # loaded with the client
        timeout = httpx.Timeout(request.read_timeout_s, connect=request.connect_timeout_s)
        try:
            async with client.stream(request.method, request.uri, headers=request.headers,
                                           content=request.content, timeout=timeout) as response:
                content = await self._body(response)
        except AddressDenied as exc:   # never connected: the first address or a redirect's is out of bounds
            return st.FAILED_WITH_TERMINAL_ERROR, {}, f"{request.method} {request.uri[:200]}: {exc}"
        except httpx.InvalidURL as exc:   # e.g. '0177.0.0.1', which httpx will not read as an address
            return st.FAILED_WITH_TERMINAL_ERROR, {}, f"{request.method} {request.uri[:200]}: not a URL to call: {exc}"
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
