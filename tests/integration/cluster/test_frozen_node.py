"""A frozen node (SIGSTOP: a long GC or VM pause, a stalled disk) must not stall the workers connected
to it (issue 19).

Three nodes, three etcd members, Redis with AOF; one demo worker whose endpoint list names all three
and which connects to the first (the SDK takes its endpoints in order and moves round robin). Steady
load is started on the other two nodes; the node holding the worker's stream is frozen for 20 s, then
woken. The worker must notice the silence (its pings go unanswered) within a few seconds and move
to the next endpoint, re-sending the results the frozen node never acknowledged; what that node had
leased comes back through the leases. Measured from stored state: the longest stretch without a
workflow completing, and the audit (nothing lost, nothing completed twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from assertions import scrape
from devtools.drill import DrillReport, SteadyLoad, audit, register_demo
from devtools.local_cluster import ClusterSettings, LocalCluster, start_worker, wait_for_leader
from devtools.procs import ManagedProcess
from helpers import serving_task_service
from orchestrator.cluster.dispatch import Dispatcher, WorkerSession
from orchestrator.core.state import TaskSpec
from orchestrator.store import ClaimedTask, StoreUnavailable
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import Worker, WorkflowClient, task

TTL_S = 2.0
LOAD_PER_S = 20.0
FREEZE_S = 20.0
MAX_STALL_S = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(name="frozen", etcd_members=3, node_ports=[0, 0, 0], lease_ttl_s=TTL_S,
                               workers=0, log_level="INFO")
    with LocalCluster(tmp_path, settings).start(workers=False) as running:
        yield running


def workers_connected(cluster: LocalCluster, node_id: str) -> float:
    samples = scrape(cluster.console_of(node_id))
    return samples.get(("orchestrator_workers_connected", frozenset({("task_type", "noop")})), 0.0)


def wait_until_connected(cluster: LocalCluster, node_id: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while workers_connected(cluster, node_id) < 1:
        assert time.monotonic() < deadline, f"the worker never connected to {node_id}"
        time.sleep(0.05)


def completion_times_ms(cluster: LocalCluster, workflow_ids: set[str]) -> list[int]:
    """When each of `workflow_ids` ended, from the store's audit stream (the cluster's clock)."""
    from orchestrator.store.redis import RedisStore
    from orchestrator.store.redis.keys import cluster_prefix

    async def read() -> list[int]:
        assert cluster.redis is not None
        store = RedisStore.from_url(cluster.redis.url, cluster_prefix(cluster.settings.name))
        try:
            return sorted(at for workflow_id, at in await store.ended_entries() if workflow_id in workflow_ids)
        finally:
            await store.close()
    return asyncio.run(read())


def longest_stall_s(times_ms: list[int], from_ms: float, to_ms: float) -> float:
    """The longest stretch in [from_ms, to_ms] without a completion (its ends count as stretch ends)."""
    inside = [from_ms, *(t for t in times_ms if from_ms <= t <= to_ms), to_ms]
    return max(b - a for a, b in itertools.pairwise(inside)) / 1000


def test_a_frozen_node_costs_its_workers_a_few_seconds_not_the_whole_freeze(cluster: LocalCluster) -> None:
    client = WorkflowClient(cluster.endpoints, timeout_s=15.0)
    try:
        frozen_id = wait_for_leader(client, 30.0, members=3)["leader_id"]   # as in `make cluster`: node-1 leads
        register_demo(client)
    finally:
        client.close()
    others = [n for n in cluster.nodes if n != frozen_id]
    # The worker lists every node and takes the first: the one to be frozen. Its tasks take 100 ms, so
    # some are running when the node freezes: their results go to it and are never acknowledged.
    worker: ManagedProcess = start_worker(
        cluster.base_dir / "logs", name="worker", concurrency=16, extra=["--log-level", "INFO", "--delay-ms", "100"],
        endpoints=[cluster.endpoint_of(frozen_id), *(cluster.endpoint_of(n) for n in others)])
    cluster.workers.append(worker)
    wait_until_connected(cluster, frozen_id)

    load_client = WorkflowClient([cluster.endpoint_of(n) for n in others], timeout_s=15.0)
    frozen = cluster.nodes[frozen_id]
    try:
        with SteadyLoad(load_client, "three_noops", LOAD_PER_S) as load:
            time.sleep(2.0)
            frozen_at_ms = time.time() * 1000
            frozen.pause()
            try:
                time.sleep(FREEZE_S)
                moved = sum(workers_connected(cluster, n) for n in others)
            finally:
                frozen.resume()
            woken_at_ms = time.time() * 1000
            time.sleep(3.0)
        report = DrillReport(signal="SIGSTOP")
        audit(cluster, load_client, report, load.started, settle_timeout_s=30.0)
    finally:
        load_client.close()

    worker.stop()   # it logs what it did as it stops
    worker_log = worker.log_path.read_text()
    summary = report.summary()
    assert report.started >= LOAD_PER_S * (FREEZE_S + 4) * 0.8, summary
    assert report.lost == [], f"lost workflows: {report.lost[:5]}\n{summary}"
    assert report.completed_twice == [], f"completed twice: {report.completed_twice[:5]}\n{summary}"
    assert report.completed == report.started, summary
    # an attempt runs again only when its lease expired: tasks the frozen node had leased and never delivered
    assert all(reason.startswith("lease expired") for reason in report.repeat_reasons), summary

    times = completion_times_ms(cluster, set(load.started))
    stall_s = longest_stall_s(times, frozen_at_ms - 500, woken_at_ms + 2000)
    during = sum(1 for t in times if frozen_at_ms + MAX_STALL_S * 1000 < t < woken_at_ms)
    print(f"\nfrozen {frozen_id} for {FREEZE_S:g} s: longest stretch without a completion {stall_s:.2f} s; "
          f"{during} workflows completed while it was frozen\n{summary}")
    assert moved >= 1, "the worker did not move to a healthy node while its node was frozen"
    # it left because its pings went unanswered (not a broken connection: a frozen process breaks none),
    # and re-sent there the results the frozen node had not acknowledged
    assert f"left {cluster.endpoint_of(frozen_id)}: the node sent nothing for" in worker_log, worker_log[-3000:]
    resent = re.search(r"WorkerStats\(.*resent=(\d+)", worker_log)
    assert resent is not None and int(resent.group(1)) >= 1, worker_log[-3000:]
    assert stall_s <= MAX_STALL_S, f"no workflow completed for {stall_s:.2f} s\n{summary}"
    # once moved, the worker keeps up with the load on the healthy nodes
    assert during >= LOAD_PER_S * (FREEZE_S - MAX_STALL_S) * 0.7, (during, summary)


# ---------------------------------------------------------------- the SDK against scripted nodes
# Fast, in-process: a node that answers pings and then "freezes" (sends nothing more, keeps the
# connection: what SIGSTOP looks like from the worker), a node older than pings, and a worker whose
# own event loop is held.

UNIT_TIMEOUT_S = 5.0


class PingingNode(pb_grpc.TaskServiceServicer):
    """A scripted TaskService that answers pings (unless `answers_pings` is off) until `freeze()`,
    after which it sends nothing at all, as a stopped process would."""

    def __init__(self, answers_pings: bool = True) -> None:
        self.answers_pings = answers_pings
        self.frozen = False
        self.inbox: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
        self.outbox: asyncio.Queue[pb.ServerMessage | None] = asyncio.Queue()
        self.streams = 0
        self.pings = 0

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[pb.ServerMessage]:
        self.streams += 1
        reader = asyncio.create_task(self._read(request_iterator))
        try:
            while (message := await self.outbox.get()) is not None:
                if not self.frozen:
                    yield message
        finally:
            reader.cancel()

    async def _read(self, request_iterator: Any) -> None:
        async for message in request_iterator:
            if message.WhichOneof("body") == "ping":
                self.pings += 1
                if self.answers_pings and not self.frozen:
                    self.outbox.put_nowait(pb.ServerMessage(pong=pb.Pong(seq=message.ping.seq)))
                continue
            if not self.frozen:
                await self.inbox.put(message)
        if not self.frozen:
            self.outbox.put_nowait(None)   # the worker half-closed: end the call, as a node does

    def freeze(self) -> None:
        self.frozen = True

    def push(self, message: pb.ServerMessage) -> None:
        self.outbox.put_nowait(message)

    async def next(self, kind: str | None = None) -> pb.WorkerMessage:
        """The next message from the worker (pings aside), skipping heartbeats unless asked for."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), UNIT_TIMEOUT_S)
            body = message.WhichOneof("body")
            if kind == body or (kind is None and body != "heartbeat"):
                return message
            if kind is not None and body != "heartbeat":
                raise AssertionError(f"expected {kind}, got {message}")


@contextlib.asynccontextmanager
async def scripted_node(answers_pings: bool = True) -> AsyncIterator[tuple[PingingNode, str]]:
    node = PingingNode(answers_pings)
    async with serving_task_service(node) as address:
        yield node, address


def pushed(task_id: str, task_type: str, lease_ms: int = 30_000) -> pb.ServerMessage:
    return pb.ServerMessage(task=pb.TaskAssignment(workflow_id="wf-1", task_id=task_id, task_type=task_type,
                                                   reference_name="r", input_json=b"{}", lease_ms=lease_ms))


async def wait_until(predicate: Any, timeout_s: float = UNIT_TIMEOUT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_a_node_that_stops_answering_is_left_within_the_deadline_and_gets_nothing_more() -> None:
    """Frozen after answering pings: the worker moves on within node_timeout_s (3 s by default),
    re-sends there the result the frozen node never acknowledged, heartbeats its task in flight there
    (its lease is far longer than the deadline, so the heartbeats' own check is not what notices) and
    reports it there."""
    release = asyncio.Event()

    @task("quick")
    async def quick(data: dict[str, Any]) -> dict[str, Any]:
        return {"quick": True}

    @task("slow")
    async def slow(data: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"slow": True}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with scripted_node() as (a, endpoint_a), scripted_node() as (b, endpoint_b):
            w = Worker(endpoints=[endpoint_a, endpoint_b], handlers=[quick, slow], concurrency=4)
            async with w:
                assert (await a.next()).hello.capacity == 4
                await asyncio.sleep(0.3)   # it answers the first pings
                a.push(pushed("t-slow", "slow", lease_ms=60_000))
                a.push(pushed("t-quick", "quick"))
                assert (await a.next("result")).result.task_id == "t-quick"   # never acknowledged
                assert w.in_flight == 1
                a.freeze()
                frozen_at = loop.time()
                a.push(pushed("t-late", "quick"))   # never sent: the node is frozen

                hello = await asyncio.wait_for(b.next(), 3.0 + 2.0)
                assert hello.hello.capacity == 3   # t-slow still holds a slot
                moved_after_s = loop.time() - frozen_at
                assert 2.0 <= moved_after_s <= 3.0 + 0.5, moved_after_s   # the last pong came < 1 s before
                assert (await b.next("result")).result.task_id == "t-quick"   # re-sent
                assert (await b.next("heartbeat")).heartbeat.task_id == "t-slow"   # at once on the new stream
                release.set()
                assert (await b.next("result")).result.task_id == "t-slow"
                for task_id in ("t-quick", "t-slow"):
                    b.push(pb.ServerMessage(result_ack=pb.ResultAck(task_id=task_id, accepted=True)))
                await wait_until(lambda: not w._unacked)
                assert w.current_endpoint == endpoint_b
                assert (w.stats.reconnects, w.stats.resent, w.stats.received) == (1, 1, 2)
                assert endpoint_a not in w._channels   # should it come back to a: a new connection
            assert a.streams == 1

    asyncio.run(scenario())


def test_a_node_that_never_answers_pings_is_not_left() -> None:
    """A node older than pings ignores them: the worker keeps pinging and never holds it to the
    deadline, however quiet it is."""
    async def scenario() -> None:
        async with scripted_node(answers_pings=False) as (old, endpoint), scripted_node() as (_, other):
            w = Worker(endpoints=[endpoint, other], handlers=[echo], node_timeout_s=0.2)
            async with w:
                await old.next()   # hello
                await asyncio.sleep(1.2)   # six deadlines
                assert old.pings >= 5   # a ping every third of the deadline
                assert (old.streams, w.current_endpoint, w.stats.reconnects) == (1, endpoint, 0)
                old.push(pushed("t-1", "echo"))
                assert (await old.next("result")).result.task_id == "t-1"
                old.push(pb.ServerMessage(result_ack=pb.ResultAck(task_id="t-1", accepted=True)))
                await wait_until(lambda: not w._unacked)

    asyncio.run(scenario())


def test_a_worker_whose_own_loop_was_held_does_not_leave_a_healthy_node() -> None:
    """A handler that blocks the worker's event loop for longer than the deadline holds back the
    worker's reading, not the node: the silence is counted afresh, and the node's pong, read late,
    keeps the stream."""
    @task("hog")
    async def hog(data: dict[str, Any]) -> dict[str, Any]:
        time.sleep(1.0)   # blocks the loop: five deadlines
        return {}

    async def scenario() -> None:
        async with scripted_node() as (a, endpoint), scripted_node() as (b, _):
            w = Worker(endpoints=[endpoint, _], handlers=[hog], node_timeout_s=0.2)
            async with w:
                await a.next()   # hello
                await wait_until(lambda: w._links[0].stream is not None and w._links[0].stream.pongs > 0)
                a.push(pushed("t-1", "hog"))
                assert (await a.next("result")).result.task_id == "t-1"
                a.push(pb.ServerMessage(result_ack=pb.ResultAck(task_id="t-1", accepted=True)))
                await wait_until(lambda: not w._unacked)
                await asyncio.sleep(0.5)
                assert (a.streams, b.streams, w.stats.reconnects) == (1, 0, 0)

    asyncio.run(scenario())


@task("echo")
async def echo(data: dict[str, Any]) -> dict[str, Any]:
    return data


@pytest.mark.parametrize("value", [0, -1.0, True, "3", float("nan")])
def test_node_timeout_must_be_positive_seconds_or_none(value: Any) -> None:
    with pytest.raises(ValueError, match="node_timeout_s"):
        Worker(endpoints=["127.0.0.1:1"], handlers=[echo], node_timeout_s=value)
    assert Worker(endpoints=["127.0.0.1:1"], handlers=[echo], node_timeout_s=None) is not None


# ---------------------------------------------------------------- a real node answers pings


def test_a_node_answers_each_ping_at_once_with_its_sequence_number(node: Any) -> None:
    channel = grpc.insecure_channel(node.endpoint)
    try:
        sent: queue.Queue[pb.WorkerMessage | None] = queue.Queue()
        sent.put(pb.WorkerMessage(hello=pb.WorkerHello(worker_id="pinger", task_types=["nothing_here"], capacity=1)))
        for seq in (7, 8):
            sent.put(pb.WorkerMessage(ping=pb.Ping(seq=seq)))
        replies = pb_grpc.TaskServiceStub(channel).Connect(iter(sent.get, None), timeout=10)
        assert [next(replies).pong.seq for _ in range(2)] == [7, 8]
        sent.put(None)
        replies.cancel()
    finally:
        channel.close()


# ---------------------------------------------------------------- the node's dispatcher: credits during a claim


class SlowClaims:
    """A store whose claims wait until let go, handing out the queued tasks of their type."""

    def __init__(self) -> None:
        self.queued: dict[str, list[str]] = {}
        self.go = asyncio.Event()
        self.claims: list[tuple[str, int]] = []
        self.released: list[str] = []

    async def claim(self, task_type: str, count: int, worker_id: str, now_ms: int, *,
                    records: bool = False) -> list[ClaimedTask]:
        self.claims.append((task_type, count))
        await self.go.wait()
        taken, self.queued[task_type] = self.queued.get(task_type, [])[:count], self.queued.get(task_type, [])[count:]
        return [claimed_task(task_id, task_type) for task_id in taken]

    async def release_task(self, workflow_id: str, task_id: str, *args: Any, **kwargs: Any) -> bool:
        self.released.append(task_id)
        return True


def claimed_task(task_id: str, task_type: str) -> ClaimedTask:
    spec = TaskSpec(task_id=task_id, ref=task_id, kind="SIMPLE", task_type=task_type, attempt=0, seq=0,
                    input={}, scheduled_at_ms=0)
    return ClaimedTask(workflow_id=f"wf-{task_id}", spec=spec, lease_ms=5000)


async def claim_held(store: SlowClaims) -> tuple[Dispatcher, WorkerSession]:
    """A dispatcher on `store` with four tasks of type "a" queued and a worker "w" of four credits,
    once its claim for all four is on its way (held until `store.go` is set)."""
    store.queued = {"a": [f"a{i}" for i in range(4)]}
    dispatcher = Dispatcher(store)   # type: ignore[arg-type]  # a fake: only the calls a Dispatcher makes
    session = WorkerSession("w", frozenset({"a"}), credits=4)
    dispatcher.attach(session)
    await wait_until(lambda: store.claims)
    return dispatcher, session


def pushed_task_ids(session: WorkerSession) -> list[str]:
    """The ids of the tasks pushed to the session's stream so far (taken off it)."""
    pushed = [session.outbox.get_nowait() for _ in range(session.outbox.qsize())]
    return [message.task.task_id for message in pushed if message is not None]


def test_a_claim_holds_its_credits_so_a_worker_is_never_pushed_more_than_it_asked_for() -> None:
    """While a claim for a worker is in flight (a backlog met on connecting, after a failover), the
    pump of its other task type gets no credit that claim may fill; the type turned away is pumped
    as soon as the claim returns credits unused."""
    async def scenario() -> None:
        store = SlowClaims()
        store.queued = {"a": [f"a{i}" for i in range(3)], "b": ["b0", "b1"]}
        dispatcher = Dispatcher(store)   # type: ignore[arg-type]  # a fake: only the claims a Dispatcher makes
        session = WorkerSession("w", frozenset({"a", "b"}), credits=4)
        dispatcher.attach(session)   # pumps both types: the first claim takes all 4 credits
        await wait_until(lambda: store.claims)
        await asyncio.sleep(0.05)
        assert len(store.claims) == 1 and store.claims[0][1] == 4, store.claims   # not one claim per type
        assert session.claiming == 4
        let_go = asyncio.get_running_loop().time()
        store.go.set()
        await wait_until(lambda: session.outbox.qsize() == 4)
        assert asyncio.get_running_loop().time() - let_go < 0.5   # not left to the 1 s sweep
        pushed_ids: list[str] = []
        for _ in range(4):
            pushed = session.outbox.get_nowait()
            assert pushed is not None   # a task, not the end of the stream
            pushed_ids.append(pushed.task.task_id)
        first, second = store.claims[0][0], store.claims[1][0]
        assert {first, second} == {"a", "b"} and len(store.claims) == 2
        # the first claim got what its queue held, the other type the credits left: 4 pushed, as asked
        expected = {"a": ["a0", "a1", "a2"], "b": ["b0", "b1"]}[first]
        assert pushed_ids == [*expected, *{"a": ["a0", "a1", "a2"], "b": ["b0", "b1"]}[second][:4 - len(expected)]]
        assert (session.credits, session.claiming) == (0, 0)
        await dispatcher.stop()

    asyncio.run(scenario())


def test_a_hand_over_during_a_claim_takes_a_held_credit_and_the_claim_gives_back_its_excess() -> None:
    """A claim asks for every free credit and seldom finds as many tasks: a task decided on this node
    meanwhile goes to the worker at once (`reserve` takes a credit the claim holds) rather than to
    the queue; when the claim does come back full, what the worker no longer has credit for goes
    back to its queue, never to the worker: it is pushed no more than it asked for."""
    async def scenario() -> None:
        store = SlowClaims()
        dispatcher, session = await claim_held(store)
        assert store.claims == [("a", 4)] and session.claiming == 4
        assert dispatcher.reserve("a") == "w"   # a hand-over: one of the credits the claim holds
        dispatcher.deliver("w", claimed_task("handed", "a"))
        store.go.set()
        await wait_until(lambda: store.released)
        await asyncio.sleep(0.05)
        assert pushed_task_ids(session) == ["handed", "a0", "a1", "a2"]
        assert store.released == ["a3"]   # back to its queue: the worker asked for 4
        assert (session.credits, session.claiming) == (0, 0)
        await dispatcher.stop()

    asyncio.run(scenario())


class RefusesFirstRelease(SlowClaims):
    """SlowClaims whose first release is refused as a write not confirmed by the replicas is
    (`redis_min_replicas`: during a reshard the barrier's slot moved; the release itself was stored)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = ""

    async def release_task(self, workflow_id: str, task_id: str, *args: Any, **kwargs: Any) -> bool:
        if not self.refused:
            self.refused = task_id
            raise StoreUnavailable("the write is stored on the Redis master but not confirmed by 1 replica")
        return await super().release_task(workflow_id, task_id, *args, **kwargs)


def test_the_excess_of_a_claim_is_given_back_task_by_task_past_a_refused_release() -> None:
    """A claim that came back with more than its worker had credit left for gives each of the rest
    back on its own: a release refused (the replicas did not confirm it in time, in a reshard) left
    the tasks after it leased to a worker that never got them, each waiting for its lease to expire
    (the drill's workflows whose first step ended TIMED_OUT, then ran again)."""
    async def scenario() -> None:
        store = RefusesFirstRelease()
        dispatcher, session = await claim_held(store)
        for handed in ("h0", "h1"):   # two hand-overs meanwhile take two of the credits the claim holds
            assert dispatcher.reserve("a") == "w"
            dispatcher.deliver("w", claimed_task(handed, "a"))
        store.go.set()
        await wait_until(lambda: store.released)
        await asyncio.sleep(0.05)
        assert pushed_task_ids(session) == ["h0", "h1", "a0", "a1"]
        assert store.refused == "a2" and store.released == ["a3"]   # the one after the refusal went back too
        await dispatcher.stop()

    asyncio.run(scenario())


def test_the_unsent_tasks_of_a_closed_stream_are_given_back_past_a_refused_release() -> None:
    """The same for what a stream that ended never sent: every task is tried, then the refusal is said."""
    async def scenario() -> None:
        store = RefusesFirstRelease()
        store.go.set()
        dispatcher = Dispatcher(store)   # type: ignore[arg-type]  # a fake: only the calls a Dispatcher makes
        session = WorkerSession("w", frozenset({"a"}), credits=3)
        dispatcher.attach(session)
        for task_id in ("u0", "u1", "u2"):
            assert dispatcher.reserve("a") == "w"
            dispatcher.deliver("w", claimed_task(task_id, "a"))
        with pytest.raises(StoreUnavailable):
            await dispatcher.release_unsent(session)
        assert store.refused == "u0" and store.released == ["u1", "u2"]
        await dispatcher.stop()

    asyncio.run(scenario())
