"""One orchestrator node: builds the parts and runs them; no logic of its own.

Every node serves the whole gRPC API, dispatches tasks to its workers and decides the
events it stores. The election (`cluster.election.Candidacy`, on this event loop) tells
the node when it leads; only then does it run the clocks (`LeaderLoop`). Safety
decisions, each in one place:
- on_deposed (lease not renewed in time, resigned, closing): cancel the clocks at once;
- the clocks stop by themselves when a write is fenced off, the local deadline passed or Redis
  did not let a pass complete within `leader_redis_timeout_s`, and the node then resigns so the
  election is settled by etcd, not by us (after the last, it stands again once Redis answers it);
- a stop ends within STOP_WITHIN_S whatever etcd and Redis do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from . import api, rest, service, web
from .archive import DirectoryArchive
from .cluster.clock_sync import ClockSync
from .cluster.deciding import Decider
from .cluster.retention import Retention
from .cluster.dispatch import DRAIN_S, Dispatcher
from .cluster.http_tasks import HttpTaskRunner
from .cluster.election import Candidacy
from .cluster.events import EventConsumers
from .cluster.etcd import EtcdClient, EtcdError
from .cluster.event_loop import awaiting, set_aside_long_lived_objects
from .cluster.leader_loop import LeaderLoop, LeadershipLost, StoreUnresponsive
from .cluster.leader_watch import LeaderWatch
from .cluster.logs import log_fields
from .cluster.notify import Notifier
from .cluster.tls import TlsError, TlsFiles, is_loopback
from .cluster.tracing import Tracing
from .config import MAX_PORT, NodeConfig
from .core import state as m
from .core import statuses as st
from .core.auth import Tokens, TokensError, jwt_key_file
from .core.decider import Decision
from .core.errors import FailedPrecondition, Unavailable
from .store import Store, StoreUnavailable
from .store.redis import RedisAccess, RedisStore
from .store.redis.adapter import IDEMPOTENCY_TTL_S

log = logging.getLogger(__name__)

STOP_WITHIN_S = 4.0   # a stop ends within this, whatever etcd and Redis do (see Node.stop)
STORE_RECHECK_S = 0.5  # how often a node that resigned for want of Redis asks whether it answers again
STORE_PROBE_S = 0.5   # whether Redis answers, asked as a stop begins
LEFTOVER_S = 0.5      # then what is left is cancelled and given this long to end
HARD_EXIT_S = STOP_WITHIN_S + 3.0   # past this after SIGTERM the process exits anyway (status 1)

SERVICE_NAMES = [pb.DESCRIPTOR.services_by_name[name].full_name
                 for name in ("MetadataService", "WorkflowService", "TaskService", "ClusterService",
                              "EventService")]


class Backoff:
    """`first_s`, then `then_s` doubling to `max_s` while trouble repeats; back to the start
    once a minute passed without it."""

    def __init__(self, *, first_s: float, then_s: float, max_s: float) -> None:
        self.first_s, self.then_s, self.max_s = first_s, then_s, max_s
        self._count = 0
        self._last = 0.0

    def next_delay(self) -> float:
        now = time.monotonic()
        if now - self._last > 60.0:
            self._count = 0
        self._last = now
        self._count += 1
        if self._count == 1:
            return self.first_s
        return float(min(self.then_s * 2.0 ** (self._count - 2), self.max_s))


def etcd_credentials(config: NodeConfig) -> grpc.ChannelCredentials | None:
    """TLS to etcd when its CA (and this node's client certificate) are configured."""
    if not (config.etcd_tls_ca_file or config.etcd_tls_cert_file):
        return None
    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None
    return grpc.ssl_channel_credentials(root_certificates=read(config.etcd_tls_ca_file),
                                        private_key=read(config.etcd_tls_key_file),
                                        certificate_chain=read(config.etcd_tls_cert_file))


class NodeStartError(Exception):
    """The node cannot start (its port is taken, ...); the message says what to change."""


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store: Store
        # A start's idempotency key is kept as long as its workflow (its retention), at most 7 days.
        idempotency_ttl_s = max(1, int(min(IDEMPOTENCY_TTL_S, config.retention_s)))
        access = RedisAccess(username=config.redis_username or None, password=config.redis_password(),
                             ca_file=config.redis_tls_ca_file, cert_file=config.redis_tls_cert_file,
                             key_file=config.redis_tls_key_file)
        # acknowledged writes wait for this many replicas (store/redis/replication.py); the connections'
        # timeouts, the pool of blocking reads and the namespaces' quotas (store/redis/adapter.py)
        durability: dict[str, Any] = {"min_replicas": config.redis_min_replicas,
                                      "replica_timeout_ms": config.redis_replica_timeout_ms,
                                      "links": config.redis_links(), "quotas": config.quotas()}
        if config.redis_cluster:
            self.store = RedisStore.from_cluster(config.redis_cluster, prefix=config.redis_prefix,
                                                 max_value_bytes=config.max_payload_bytes,
                                                 idempotency_ttl_s=idempotency_ttl_s, access=access, **durability)
        elif config.redis_sentinels:
            self.store = RedisStore.from_sentinels(config.redis_sentinels, config.redis_master,
                                                   prefix=config.redis_prefix, max_value_bytes=config.max_payload_bytes,
                                                   idempotency_ttl_s=idempotency_ttl_s, access=access,
                                                   **durability)
        else:
            self.store = RedisStore.from_url(config.redis_url, prefix=config.redis_prefix,
                                             max_value_bytes=config.max_payload_bytes,
                                             idempotency_ttl_s=idempotency_ttl_s, access=access, **durability)
        self.tracing = Tracing.from_settings(config.node_id, config.cluster, config.trace_file)
        self.dispatcher = Dispatcher(self.store, tracing=self.tracing)
        self.notifier = Notifier(self.store)
        self.clock_sync = ClockSync(self.store)
        self.decider = Decider(self.store, hand_over=self.dispatcher, on_applied=self._after_decision,
                               node_id=config.node_id)
        self.dispatcher.on_claimed = self.decider.claimed   # a claimed task's result needs no reload
        self.event_consumers = EventConsumers(self.store, config.node_id, on_workflows=self.decider.soon,
                                              start_decided=self.decider.start,
                                              max_payload_bytes=config.max_payload_bytes)
        self.archive = DirectoryArchive(Path(config.archive_dir) / config.cluster, writer=config.node_id)
        self.http_tasks = HttpTaskRunner(self.store, self.dispatcher, config.node_id,
                                         api.PayloadLimit(config.max_payload_bytes),
                                         concurrency=config.http_task_concurrency,
                                         protected=config.infrastructure, on_result=self.decider.soon,
                                         allow_cidrs=config.http_task_allow_cidrs)
        self.retention = Retention(self.store, self.archive, config.retention_s)
        self.server: grpc.aio.Server | None = None
        self.etcd = EtcdClient(config.etcd_endpoints, credentials=etcd_credentials(config))
        self.election: Candidacy | None = None
        self._resigning: asyncio.Task[None] | None = None
        self._leader_watch: asyncio.Task[None] | None = None
        self.engine: LeaderLoop | None = None
        self._engine_task: asyncio.Task[None] | None = None
        self._backoff = Backoff(first_s=0.0, then_s=0.5, max_s=30.0)
        self.counters = service.NodeCounters()
        self.console: web.ConsoleServer | None = None
        self.leader_watch: LeaderWatch | None = None
        self.tokens: Tokens | None = None
        self.tls: TlsFiles | None = None
        self.stop_left_behind: list[str] = []   # steps of the stop that did not finish in time

    async def start(self) -> None:
        self.tokens = self._load_tokens()
        self.tls = self._load_tls()
        self.console = self._bind_console()
        await self._prepare_store()
        await self.clock_sync.start()   # on Redis's clock before any time is stored or compared
        await self.dispatcher.start()
        await self.http_tasks.start()
        await self.notifier.start()
        self.server = self._build_server()
        await self.server.start()
        await self.event_consumers.start()
        log.info("node %s serving gRPC on %s", self.config.node_id, self.config.listen)
        self.election = Candidacy(
            self.etcd, node_id=self.config.node_id, address=self.config.advertise,
            prefix=self.config.election_prefix, ttl=self.config.lease_ttl_s,
            on_elected=self._on_elected, on_deposed=self._on_deposed)
        self.election.start()
        self.leader_watch = LeaderWatch(self.election, self.etcd,
                                        self.tls.channel_credentials() if self.tls is not None else None)
        self._leader_watch = asyncio.create_task(self.leader_watch.run())
        if self.console is not None:
            conductor = rest.conductor_api(rest.RestParts(
                workflows=self.workflows, tasks=self.tasks, metadata=self.metadata,
                limit=api.PayloadLimit(self.config.max_payload_bytes), tokens=self.tokens))
            await self.console.start(web.build_app(self._console_parts(self.console.bound), conductor,
                                                   tokens=self.tokens,
                                                   secure_cookies=self.config.console_secure_cookies))
            log.info("node %s serving the console and /metrics on %s://%s/", self.config.node_id,
                     "https" if self.tls is not None else "http", self.console.bound)

    def _build_server(self) -> grpc.aio.Server:
        limit = api.PayloadLimit(self.config.max_payload_bytes)
        options = [("grpc.max_receive_message_length", self.config.max_message_bytes),
                   ("grpc.max_send_message_length", self.config.max_message_bytes),
                   ("grpc.keepalive_time_ms", 10_000),
                   ("grpc.keepalive_permit_without_calls", 1),
                   ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                   # gRPC shares a port with SO_REUSEPORT by default: two nodes (even of two
                   # clusters) would both "listen" on 50051 and split the clients between them.
                   ("grpc.so_reuseport", 0)]
        server = grpc.aio.server(options=options, interceptors=[api.TokenInterceptor(self.tokens)])
        self.workflows = service.Workflows(self.store, limit, self.notifier, self.decider, self.archive)
        self.metadata = service.Metadata(self.store)
        self.tasks = service.Tasks(self.store, self.dispatcher, limit, self.decider)
        tasks = self.task_service = api.TaskService(self.tasks, self.dispatcher)
        self.item_streams = api.ItemStreams()   # StartWorkflows and PublishEvents, ended first when stopping
        # an event published here is read for this node's handlers in the same call (cluster/events.py)
        events = service.Events(self.store, limit, local=self.event_consumers)
        services: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]] = [
            (pb_grpc.add_MetadataServiceServicer_to_server, api.MetadataService(self.metadata)),
            (pb_grpc.add_WorkflowServiceServicer_to_server, api.WorkflowService(self.workflows, self.item_streams)),
            (pb_grpc.add_TaskServiceServicer_to_server, tasks),
            (pb_grpc.add_ClusterServiceServicer_to_server, api.ClusterService(service.Cluster(self))),
            (pb_grpc.add_EventServiceServicer_to_server, api.EventService(events, self.item_streams))]
        for add_to_server, servicer in services:
            add_to_server(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in ("", *SERVICE_NAMES):
            asyncio.get_running_loop().create_task(
                health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING))
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        try:
            bound = (server.add_secure_port(self.config.listen, self.tls.server_credentials()) if self.tls is not None
                     else server.add_insecure_port(self.config.listen))
        except RuntimeError:
            bound = 0
        if not bound:
            raise NodeStartError(f"cannot listen on {self.config.listen}: the address is in use (another node or "
                                 "program serves it) or not an address of this host; choose another `listen`")
        return server

    def _load_tokens(self) -> Tokens | None:
        """The tokens every call must carry one of, when a tokens file is configured."""
        if not self.config.tokens_file:
            return None
        path = Path(self.config.tokens_file)
        try:
            document = yaml.safe_load(path.read_text())
            key_file = jwt_key_file(document)
            key = (path.parent / key_file).read_bytes() if key_file else None   # relative to the tokens file
            tokens = Tokens.from_document(document, key)
        except (OSError, yaml.YAMLError, TokensError) as exc:
            raise NodeStartError(f"cannot use the tokens file {self.config.tokens_file}: {exc}") from None
        log.info("node %s requires a token on every call (%d tokens known%s)", self.config.node_id, len(tokens),
                 ", and JWTs" if tokens.jwt_rules is not None else "")
        return tokens

    def _load_tls(self) -> TlsFiles | None:
        """The node's certificate, or None; refuses plaintext beyond loopback unless allowed."""
        config = self.config
        if config.tls_cert_file:
            try:
                return TlsFiles.load(config.tls_cert_file, config.tls_key_file, config.tls_ca_file)
            except TlsError as exc:
                raise NodeStartError(str(exc)) from None
        exposed = [a for a in (config.listen, config.http_listen or "127.0.0.1:0") if not is_loopback(a)]
        if exposed and not config.allow_plaintext:
            raise NodeStartError(f"{', '.join(exposed)} is reachable beyond this host and no TLS is configured: give "
                                 "tls_cert_file and tls_key_file (--tls-cert, --tls-key), or allow_plaintext: true "
                                 "(--allow-plaintext) if something else encrypts the traffic")
        if exposed:
            log.warning("node %s serves plaintext on %s (allow_plaintext is set)", config.node_id, ", ".join(exposed))
        return None

    def _bind_console(self) -> web.ConsoleServer | None:
        """The port of the web console and /metrics (`http_listen`), bound before anything starts so
        that a taken port stops the node at once, with what to change."""
        address = self.config.http_listen
        if not address:
            port = self.config.listen.rpartition(":")[2]
            why = (f"; its default, the gRPC port + 1000, would be beyond {MAX_PORT}: set http_listen to serve one"
                   if port.isdigit() and int(port) + 1000 > MAX_PORT else "")
            log.info("node %s serves no console (http_listen is empty%s)", self.config.node_id, why)
            return None
        console = web.ConsoleServer(address, tls=self.tls)
        try:
            console.bind()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise NodeStartError(f"cannot serve the console on {address}: {why} (another node or program "
                                 "serves it, or it is not an address of this host); choose another `http_listen` "
                                 "(--http-listen), or \"\" to serve no console") from None
        return console

    def _console_parts(self, console_address: str) -> web.ConsoleParts:
        return web.ConsoleParts(
            node_id=self.config.node_id, cluster=self.config.cluster, grpc_address=self.config.advertise,
            etcd_endpoints=list(self.config.etcd_endpoints), workflows=self.workflows, metadata=self.metadata,
            overview=service.NodeOverview(self._node_parts()), console_address=console_address)

    def _node_parts(self) -> service.NodeParts:
        """What the console's overview and /metrics read of this node."""
        return service.NodeParts(
            node_id=self.config.node_id, cluster=self.config.cluster, grpc_address=self.config.advertise,
            store=self.store, dispatcher=self.dispatcher, decider=self.decider,
            started_by_api=self.workflows.started,
            tasks_sent=self.task_service.sent, task_results=self.task_service.results, counters=self.counters,
            election=lambda: self.election, engine=lambda: self.engine,
            revoked=lambda: self.leader_watch.revoked if self.leader_watch else 0)

    def _after_decision(self, state: m.WorkflowState, decision: Decision) -> None:
        """Right after a decision is stored: decide the workflows it started, ended or woke.
        (What it queued went to this node's workers in the same step, or was broadcast.)"""
        self.counters.on_decision(state, decision)
        self.tracing.on_decision(state, decision)
        if decision.status in st.TERMINAL_WORKFLOW:   # a start-and-wait call on this node returns now
            self.notifier.ended_here(state.workflow_id)
        others = [w.workflow_id for w in decision.start_workflows]
        others += [workflow_id for workflow_id, _ in decision.terminate_workflows]
        if decision.status in st.TERMINAL_WORKFLOW and state.parent:
            others.append(state.parent.split("|", 1)[0])
        if others:
            self.decider.soon(others)

    # ------------------------------------------------------------- leadership

    def _on_elected(self, epoch: int) -> None:
        self._cancel_engine()
        assert self.election is not None
        self.counters.on_elected(epoch, self.engine)
        self.engine = LeaderLoop(self.store, self.decider, epoch, self.election.leadership_valid,
                                 retention=self.retention, store_timeout_s=self.config.leader_redis_timeout_s)
        with log_fields(epoch=epoch):   # the clocks' log lines carry their epoch
            self._engine_task = asyncio.get_running_loop().create_task(self._run_engine(self.engine))
        log.info("node %s leads with epoch %d", self.config.node_id, epoch, extra={"epoch": epoch})

    def _on_deposed(self, reason: str) -> None:
        log.warning("node %s stopped leading: %s", self.config.node_id, reason)
        self._cancel_engine()

    def _cancel_engine(self) -> None:
        if self._engine_task and not self._engine_task.done():
            self._engine_task.cancel()

    async def _prepare_store(self) -> None:
        """Settle the state's layout (its number of partitions) before anything is served: a node
        that wrote with another number would put workflows where no other node looks. Waits for a
        Redis that does not answer yet; a layout it cannot use stops the node with the reason."""
        pause = 0.2
        while True:
            try:
                await self.store.prepare(self.config.redis_partitions)
                return
            except FailedPrecondition as exc:
                raise NodeStartError(str(exc)) from None
            except StoreUnavailable as exc:
                log.warning("waiting for Redis before serving (%s); trying again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _run_engine(self, engine: LeaderLoop) -> None:
        """Run the clocks for this term. Safety decisions, each in one place:
        - fenced off (a newer term wrote to the store): resign, and wait longer before standing
          again each time it repeats, so a cluster that keeps being fenced cannot storm;
        - Redis did not let a pass complete within `leader_redis_timeout_s` (this node's link to it
          may be cut while its etcd lease lives on): resign so that the next node's clocks run, and
          stand again only once Redis answers this node;
        - a crash (a bug): keep the term and restart the clocks after a growing pause; handing
          the same bug to the next leader would only move the crash around the cluster."""
        try:
            await engine.run()
        except LeadershipLost as exc:
            log.warning("clocks stopped: %s; resigning so that etcd settles who leads", exc)
            # Not awaited here: resigning deposes, and deposing cancels this very task.
            self._resigning = asyncio.create_task(self._resign_and_rejoin(self._backoff.next_delay()))
        except StoreUnresponsive as exc:
            log.warning("clocks stopped: %s; resigning so that a node that reaches Redis leads (standing again once "
                        "it answers this one)", exc)
            self._resigning = asyncio.create_task(self._resign_until_store_answers())
        except asyncio.CancelledError:
            log.info("clocks stopped")
            raise
        except Exception:
            delay = self._backoff.next_delay()
            log.exception("the clocks crashed (a bug); restarting them in %.1f s", delay)
            await asyncio.sleep(delay)
            if self.election is not None and self.election.leadership_valid():
                self._on_elected(engine.epoch)

    async def _resign_and_rejoin(self, delay_s: float = 0.0) -> None:
        """Give up this term at once; stand again after `delay_s` (the new candidacy queues
        behind the others)."""
        if self.election is None:
            return
        await self.election.resign(rejoin=delay_s <= 0)
        if delay_s > 0:
            log.info("standing for election again in %.1f s", delay_s)
            await asyncio.sleep(delay_s)
            self.election.campaign()

    async def _resign_until_store_answers(self) -> None:
        """Give up this term now; stand again once Redis answers this node (after the back-off
        shared with fenced terms, so that a Redis too slow for every node cannot make them take
        turns forever)."""
        if self.election is None:
            return
        await self.election.resign(rejoin=False)
        away_since = time.monotonic()
        while not await self._store_answers(self.config.leader_redis_timeout_s):
            await asyncio.sleep(STORE_RECHECK_S)
        delay = self._backoff.next_delay()
        log.info("Redis answers this node again (after %.1f s); standing for election again%s",
                 time.monotonic() - away_since, f" in {delay:.1f} s" if delay else "")
        await asyncio.sleep(delay)
        self.election.campaign()

    # ------------------------------------------------------------- cluster view (for ClusterService)

    async def cluster_status(self) -> pb.ClusterStatus:
        """Who leads and who is there, as etcd says now."""
        assert self.election is not None
        try:
            leader = await self.election.leader()
            roster = await self.election.roster()
        except EtcdError as exc:
            raise Unavailable(f"etcd did not answer: {exc}") from exc
        leader_id = leader.node_id if leader else ""
        members = [pb.Member(node_id=m.node_id, address=m.address, state="UP", since_ms=m.since_ms,
                             role="LEADER" if m.node_id == leader_id else "FOLLOWER")
                   for m in sorted(roster.members, key=lambda m: m.node_id)]
        gone = [pb.Member(node_id=g.node_id, address=g.address, role="DOWN", state="DOWN", since_ms=g.since_ms,
                          detail=g.detail) for g in roster.gone]
        return pb.ClusterStatus(
            node_id=self.config.node_id, role="LEADER" if leader_id == self.config.node_id else "FOLLOWER",
            leader_id=leader_id, leader_address=leader.address if leader else "",
            epoch=leader.epoch if leader else 0, elected_at_ms=leader.elected_at_ms if leader else 0,
            members=members, gone=gone, first_decision_at_ms=self._first_decision_ms())

    def _first_decision_ms(self) -> int:
        engine = self.engine
        if engine is None or self.election is None or not self.election.is_leader:
            return 0
        return engine.first_decision_ms or 0

    async def step_down(self) -> str:
        assert self.election is not None
        if not self.election.is_leader:
            try:
                leader = await self.election.leader()
            except EtcdError as exc:
                raise Unavailable(f"etcd did not answer: {exc}") from exc
            where = f"; the leader is {leader.node_id} at {leader.address}" if leader else "; no leader right now"
            raise FailedPrecondition(f"node {self.config.node_id} is not the leader{where}")
        epoch = self.election.epoch
        self._cancel_engine()
        await self._resign_and_rejoin()
        return f"node {self.config.node_id} resigned leadership of epoch {epoch}"

    # ------------------------------------------------------------- lifecycle

    async def stop(self, grace_s: float = 2.0) -> None:
        """Graceful stop (SIGTERM): engine first, then hand leadership over, then drain the
        workers, then the API, then the rest. Ends within STOP_WITHIN_S whatever etcd and Redis do
        (gone, or frozen so that every call hangs): each step gets its share of that time and one
        that has not finished by then is logged and left behind (a lease left in etcd expires by
        itself; a task not given back is re-queued when its lease expires)."""
        started = time.monotonic()
        deadline = started + STOP_WITHIN_S
        self._cancel_engine()
        for task in (self._resigning, self._leader_watch):
            if task is not None:
                task.cancel()
        store_answers = asyncio.ensure_future(self._store_answers(STORE_PROBE_S))
        if self.election is not None and await self._stop_step(
                "handing over leadership (etcd)", self.election.close(), min(deadline - time.monotonic() - 2.0, 1.5)):
            log.info("leadership released in %.0f ms", (time.monotonic() - started) * 1000)
        # Without Redis, waiting is pointless: a worker's stream and an API call end only once
        # their Redis calls do, so the drain and the server's grace get only a moment.
        redis_away = not await store_answers
        if redis_away:
            log.warning("stopping without Redis (it did not answer within %.1f s): workers and calls still waiting "
                        "for it are cut off; their tasks come back when their leases expire", STORE_PROBE_S)
        # before the server cuts the workers' streams: each worker reads every task sent to it,
        # then moves to another node, which keeps the leases of what it runs (cluster/dispatch.py)
        drain_s = max(0.1, min(deadline - time.monotonic() - 1.5, 0.5 if redis_away else 2 * DRAIN_S))
        await self._stop_step("draining the workers", self.dispatcher.drain(local=[self.http_tasks.session],
                                                                            timeout_s=drain_s / 2),
                              drain_s)
        if self.server is not None:   # streams of starts and publishes move on now, not after the grace
            self.item_streams.close()
        serving = [("closing the etcd client", self.etcd.close())]
        if self.console is not None:
            serving.append(("stopping the console", self.console.stop()))
        if self.server is not None:
            grace = max(0.0, min(0.5 if redis_away else grace_s, deadline - time.monotonic() - 1.0))
            serving.append(("stopping the gRPC server", self.server.stop(grace)))
        await self._stop_steps(serving, deadline - time.monotonic() - 0.6)
        await self._stop_steps([("stopping the event consumers", self.event_consumers.stop()),
                                ("stopping the decider", self.decider.stop()),
                                ("stopping the HTTP tasks", self.http_tasks.stop()),
                                ("stopping the notifier", self.notifier.stop()),
                                ("stopping the clock sync", self.clock_sync.stop())],
                               deadline - time.monotonic() - 0.4)
        await self._stop_step("stopping the dispatcher", self.dispatcher.stop(), deadline - time.monotonic() - 0.2)
        await self._stop_step("closing the Redis connections", self.store.close(),
                              max(0.2, deadline - time.monotonic()))
        self.tracing.shutdown()
        if self.stop_left_behind:
            log.warning("stopped in %.1f s; not finished: %s", time.monotonic() - started,
                        "; ".join(self.stop_left_behind))

    async def _store_answers(self, within_s: float) -> bool:
        try:
            await asyncio.wait_for(self.store.server_time_ms(), within_s)
        except (TimeoutError, StoreUnavailable):
            return False
        return True

    async def _stop_steps(self, steps: list[tuple[str, Coroutine[Any, Any, Any]]], within_s: float) -> None:
        """Run stop steps side by side, each bounded by `within_s`."""
        await asyncio.gather(*(self._stop_step(what, step, within_s) for what, step in steps))

    async def _stop_step(self, what: str, step: Coroutine[Any, Any, Any], within_s: float) -> bool:
        """Run one step of the stop for at most `within_s` (at least 0.1 s): True if it finished. One
        that did not is cancelled and named in the log; one that failed is logged; the stop goes on."""
        task = asyncio.ensure_future(step)
        within_s = max(0.1, within_s)
        done, _ = await asyncio.wait({task}, timeout=within_s)
        if not done:
            task.cancel()
            self.stop_left_behind.append(what)
            log.warning("stopping: %s did not finish within %.1f s (etcd or Redis not answering?); left behind",
                        what, within_s)
            return False
        if not task.cancelled() and task.exception() is not None:
            log.warning("stopping: %s failed: %r", what, task.exception())
            return False
        return True

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT; a node that cannot start logs why and exits with status 2.
        A stop ends within STOP_WITHIN_S (see `stop`); should anything still hold the process
        after HARD_EXIT_S (a task that ignores cancellation, a thread stuck in a call), it logs
        what and exits with status 1 instead of waiting for a SIGKILL."""
        try:
            await self.start()
        except NodeStartError as exc:
            log.error("node %s cannot start: %s", self.config.node_id, exc)
            await self.stop()
            raise SystemExit(2) from None
        log.debug("%d long-lived objects set aside from the garbage collector", set_aside_long_lived_objects())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, _log_what_tasks_await)
        await stop.wait()
        log.info("node %s stopping", self.config.node_id)
        _exit_if_still_running_after(HARD_EXIT_S, loop)
        await self.stop()
        await _end_leftover_tasks(LEFTOVER_S)


def _log_what_tasks_await() -> None:
    """SIGUSR1: an operator asking a node that seems stuck what it is waiting on."""
    log.warning("SIGUSR1: the node's tasks and what each awaits:\n%s", awaiting())


async def _end_leftover_tasks(within_s: float) -> None:
    """Cancel the tasks the stop left (asyncio.Runner would wait for them without a bound) and
    wait `within_s` for them; if some ignore it, log which and exit now (status 0: the node did stop)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within_s)
    if pending:
        log.warning("exiting with %d task(s) that did not end when cancelled: %s", len(pending),
                    ", ".join(sorted(_describe(t) for t in pending))[:2000])
        logging.shutdown()
        os._exit(0)


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()} ({name})"


def _exit_if_still_running_after(seconds: float, loop: asyncio.AbstractEventLoop) -> None:
    """A watchdog thread: if the process is still here `seconds` from now, log what the event loop
    was still running and exit with status 1."""
    def watch() -> None:
        time.sleep(seconds)
        try:
            running = ", ".join(sorted(_describe(t) for t in asyncio.all_tasks(loop)))[:2000]
        except RuntimeError:   # the set changed while we read it from this thread
            running = "(could not be listed)"
        log.error("the stop did not end within %.0f s; exiting now. Tasks still running: %s", seconds,
                  running or "none (a thread or the interpreter's exit held it)")
        logging.shutdown()
        os._exit(1)
    threading.Thread(target=watch, name="stop-watchdog", daemon=True).start()
