"""WorkflowClient: a typed, failover-aware client of the unary API (blocking).

Failover policy, per call, within one overall deadline (``timeout_s``):

* UNAVAILABLE (the node is down or unreachable) -> try the next endpoint.
  All calls retry on it; the client stays on an endpoint that works.
* DEADLINE_EXCEEDED -> try the next endpoint, but only for reads and for
  StartWorkflow. Each of their attempts gets ``timeout_s / len(endpoints)``,
  so that a frozen node cannot eat the whole budget. Other writes get the
  whole remaining budget and are not retried after a timeout, since they may
  have taken effect.
* StartWorkflow always carries an idempotency key - the caller's, or a
  fresh uuid4 - so that a retried start cannot create a second workflow.
* Any other status raises :class:`ClientError` at once.
* After UNAVAILABLE the endpoint is looked at (a TCP connect and a TLS hello, at most half a
  second): a client without TLS that reaches a node serving TLS (or the other way round) can
  never get an answer there, and nothing listening (connection refused) is no transient
  hiccup either. When every endpoint is such a case the call fails at once with what was found
  (for refused connections only with ``fail_fast``, as the CLI asks: a program's client may
  rather wait out a restart), instead of retrying for ``timeout_s`` to say "Socket closed".

Every round through all the endpoints is followed by a short back-off (50 ms
doubling to 1 s). The watch stream fails over the same way: broken with
UNAVAILABLE, it is reopened on the next endpoint (see ``watch_workflow``).
Payloads are plain dicts: Struct numbers come back as ints when they are
integral (see ``_codec``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ._codec import message_to_dict, to_struct
from ._endpoints import CHANNEL_OPTIONS, Backoff, EndpointRing
from ._item_stream import ItemStream, StreamBroken
from .errors import ClientError

__all__ = ["WorkflowClient", "auth_metadata", "channel_credentials"]

log = logging.getLogger("worker.client")

Definition = Mapping[str, Any] | str

_RETRY_INITIAL_S = 0.05
_RETRY_MAX_S = 1.0


def channel_credentials(ca_file: str | None = None, cert_file: str | None = None,
                        key_file: str | None = None) -> grpc.ChannelCredentials | None:
    """TLS for a cluster that serves it: the CA that signed the nodes' certificates, and this
    client's own certificate and key when the cluster asks for them (mutual TLS). Defaults:
    $ORCHESTRATOR_TLS_CA, $ORCHESTRATOR_TLS_CERT, $ORCHESTRATOR_TLS_KEY; None = plaintext."""
    ca = ca_file or os.environ.get("ORCHESTRATOR_TLS_CA", "")
    cert = cert_file or os.environ.get("ORCHESTRATOR_TLS_CERT", "")
    key = key_file or os.environ.get("ORCHESTRATOR_TLS_KEY", "")
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ValueError("give both a TLS certificate and its key, or neither")

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as handle:
            return handle.read()
    return grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key),
                                        certificate_chain=read(cert))


def auth_metadata(token: str | None, namespace: str | None = None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries a token and the namespace to act in (`ORCHESTRATOR_TOKEN`
    and `ORCHESTRATOR_NAMESPACE` when none is given)."""
    token = token if token is not None else os.environ.get("ORCHESTRATOR_TOKEN", "")
    namespace = namespace if namespace is not None else os.environ.get("ORCHESTRATOR_NAMESPACE", "")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    if namespace:
        metadata.append(("namespace", namespace))
    return tuple(metadata)


class WorkflowClient:
    """A blocking client of the orchestrator's unary API with failover.

    Args:
        endpoints: the nodes' "host:port" addresses; any node serves any call.
        timeout_s: the overall deadline of one call, failover included.
        token: the bearer token a cluster with a tokens file asks for (default: the
            ORCHESTRATOR_TOKEN environment variable; none on an open cluster).
        namespace: the namespace whose definitions, workflows and topics the calls address
            (default: ORCHESTRATOR_NAMESPACE, else the token's, else the default one).
        tls_ca, tls_cert, tls_key: files for a cluster that serves TLS (see
            ``channel_credentials``); default: the ORCHESTRATOR_TLS_* variables, else plaintext.
        fail_fast: raise at once when nothing listens at any endpoint (every connection refused)
            instead of retrying for ``timeout_s`` in case a node comes back (what a person at a
            terminal wants; a service waiting out a restart does not).
        streams: how starts and publishes travel. None (the default): on the client's stream of
            them to its node while four or more of the same kind are on their way already (calls
            that crowd share messages and the node's cost of a call), as calls of their own
            otherwise (a call answers sooner: no hand-over between threads). True: always on the
            stream; False: never.

    Raises:
        TypeError, ValueError: at once, for an invalid configuration.

    Every method raises :class:`ClientError` (with the gRPC status code name
    and the server's message) when the call fails. Use as a context manager,
    or call ``close()``.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 10.0, token: str | None = None,
                 namespace: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, fail_fast: bool = False, streams: bool | None = None) -> None:
        self._ring = EndpointRing(endpoints)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self._metadata = auth_metadata(token, namespace)
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        self._fail_fast = fail_fast
        self._timeout_s = float(timeout_s)
        self._attempt_timeout_s = self._timeout_s / len(self._ring)
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, Callable[[grpc.Channel], Any]], Any] = {}
        self._streams: dict[str, ItemStream] = {}   # by kind: _STARTS, _PUBLISHES
        self._streams_lock = threading.Lock()
        self._streams_wanted = streams
        self.stream_calls = streams is not False   # False too once a node said it has no such streams
        self.streamed_starts = 0     # starts a stream answered (the others went as unary calls)
        self.streamed_publishes = 0  # the same for publishes
        self._counted = threading.Lock()
        self._on_their_way = {_STARTS: 0, _PUBLISHES: 0}   # calls of each kind being made now

    def close(self) -> None:
        """Close the channels. The client must not be used afterwards."""
        with self._streams_lock:
            streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.close()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()

    def __enter__(self) -> WorkflowClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ metadata

    def register_task_def(self, defn: Definition) -> dict[str, Any]:
        """Register (or replace) a task definition, given as a dict or as a
        JSON/YAML document; return the stored, normalised ``{name, definition}``."""
        request = pb.RegisterTaskDefRequest(source=_source(defn))
        return message_to_dict(self._call(pb_grpc.MetadataServiceStub, "RegisterTaskDef", request))

    def register_workflow_def(self, defn: Definition) -> dict[str, Any]:
        """Register a workflow definition (dict or JSON/YAML document); return
        the stored ``{name, version, definition}``."""
        request = pb.RegisterWorkflowDefRequest(source=_source(defn))
        return message_to_dict(self._call(pb_grpc.MetadataServiceStub, "RegisterWorkflowDef", request))

    def validate_workflow_def(self, defn: Definition) -> tuple[bool, list[str]]:
        """Check a workflow definition without registering it: ``(valid, errors)``."""
        request = pb.RegisterWorkflowDefRequest(source=_source(defn))
        response = self._call(pb_grpc.MetadataServiceStub, "ValidateWorkflowDef", request, repeatable=True)
        return response.valid, list(response.errors)

    def get_task_def(self, name: str) -> dict[str, Any]:
        """Return the task definition ``{name, definition}`` called ``name``."""
        request = pb.GetTaskDefRequest(name=name)
        return message_to_dict(self._call(pb_grpc.MetadataServiceStub, "GetTaskDef", request, repeatable=True))

    def get_workflow_def(self, name: str, version: int = 0) -> dict[str, Any]:
        """Return a workflow definition ``{name, version, definition}``; version 0 is the latest."""
        request = pb.GetWorkflowDefRequest(name=name, version=version)
        return message_to_dict(self._call(pb_grpc.MetadataServiceStub, "GetWorkflowDef", request, repeatable=True))

    def list_task_defs(self) -> list[dict[str, Any]]:
        """Return every task definition."""
        response = self._call(pb_grpc.MetadataServiceStub, "ListTaskDefs", pb.ListTaskDefsRequest(), repeatable=True)
        return [message_to_dict(item) for item in response.task_defs]

    def list_workflow_defs(self, name: str = "") -> list[dict[str, Any]]:
        """Return the versions of workflow ``name``, or the latest version of
        every workflow when ``name`` is empty."""
        request = pb.ListWorkflowDefsRequest(name=name)
        response = self._call(pb_grpc.MetadataServiceStub, "ListWorkflowDefs", request, repeatable=True)
        return [message_to_dict(item) for item in response.workflow_defs]

    # ------------------------------------------------------------ the event bus

    def publish_event(self, topic: str, payload: Mapping[str, Any] | None = None, *, key: str = "") -> str:
        """Publish an event on ``topic``; returns its id ("<ms>-<n>", ordered per topic).

        Not repeated after a timeout (that could publish it twice); delivery to
        subscribers and handlers is at-least-once anyway, so they dedupe by id.

        While the client's threads publish several at once it goes on the client's
        ``PublishEvents`` stream to its current node (see ``streams``); one the stream
        cannot answer is made again as a ``PublishEvent`` call when the stream broke (as
        a call is after UNAVAILABLE), never after a timeout."""
        request = pb.PublishEventRequest(topic=topic, payload=to_struct(payload), key=key)
        began = time.monotonic()
        with self._making(_PUBLISHES) as on_stream:
            item = self._streamed(_PUBLISHES, request, repeatable=False) if on_stream else None
            if item is not None:
                with self._counted:
                    self.streamed_publishes += 1
                return str(item.event_id)
            return str(self._call(pb_grpc.EventServiceStub, "PublishEvent", request,
                                  spent_s=time.monotonic() - began).event_id)

    def read_events(self, topic: str, after: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """The events of ``topic`` after the id ``after`` ("" = the oldest kept), oldest first."""
        request = pb.ReadEventsRequest(topic=topic, after=after, limit=limit)
        response = self._call(pb_grpc.EventServiceStub, "ReadEvents", request, repeatable=True)
        return [message_to_dict(event) for event in response.events]

    def configure_topic(self, topic: str, *, max_len: int = 0, max_age_s: int = 0) -> dict[str, Any]:
        """Set a topic's retention: at most ``max_len`` events (0 = the default, 100,000) and
        none older than ``max_age_s`` seconds (0 = no age limit). Returns the topic's info."""
        request = pb.ConfigureTopicRequest(topic=topic, max_len=max_len, max_age_s=max_age_s)
        return message_to_dict(self._call(pb_grpc.EventServiceStub, "ConfigureTopic", request, repeatable=True))

    def get_topic(self, topic: str) -> dict[str, Any]:
        """A topic's retention and length."""
        request = pb.GetTopicRequest(topic=topic)
        return message_to_dict(self._call(pb_grpc.EventServiceStub, "GetTopic", request, repeatable=True))

    def register_event_handler(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Register (or replace) an event handler (Conductor's shape: name, event, condition, actions)."""
        request = pb.RegisterEventHandlerRequest(definition=to_struct(definition))
        return message_to_dict(self._call(pb_grpc.EventServiceStub, "RegisterEventHandler", request,
                                          repeatable=True))

    def list_event_handlers(self, topic: str = "") -> list[dict[str, Any]]:
        request = pb.ListEventHandlersRequest(topic=topic)
        response = self._call(pb_grpc.EventServiceStub, "ListEventHandlers", request, repeatable=True)
        return [message_to_dict(handler) for handler in response.handlers]

    def remove_event_handler(self, name: str) -> bool:
        request = pb.RemoveEventHandlerRequest(name=name)
        return bool(self._call(pb_grpc.EventServiceStub, "RemoveEventHandler", request, repeatable=True).removed)

    def receive_events(self, topic: str, group: str, *, consumer: str, max_events: int = 16, wait_ms: int = 0,
                       redeliver_after_ms: int = 0, max_deliveries: int = 0) -> list[dict[str, Any]]:
        """Events for consumer group ``group`` (a subscription; see ``Subscriber``): first those
        other consumers received and did not acknowledge within ``redeliver_after_ms``, else new
        ones, waiting up to ``wait_ms``. Acknowledge each with ``ack_events`` once handled."""
        request = pb.ReceiveEventsRequest(topic=topic, group=group, consumer=consumer, max_events=max_events,
                                          wait_ms=wait_ms, redeliver_after_ms=redeliver_after_ms,
                                          max_deliveries=max_deliveries)
        response = self._call(pb_grpc.EventServiceStub, "ReceiveEvents", request, repeatable=True,
                              timeout_s=self._timeout_s + wait_ms / 1000)
        return [message_to_dict(event) for event in response.events]

    def ack_events(self, topic: str, group: str, event_ids: Sequence[str]) -> int:
        """Acknowledge handled events of a subscription; they are not delivered again."""
        request = pb.AckEventsRequest(topic=topic, group=group, event_ids=list(event_ids))
        return int(self._call(pb_grpc.EventServiceStub, "AckEvents", request, repeatable=True).acknowledged)

    # ------------------------------------------------------------ workflows

    def start_workflow(
        self,
        name: str,
        input: Mapping[str, Any] | None = None,
        *,
        version: int = 0,
        correlation_id: str = "",
        idempotency_key: str = "",
    ) -> str:
        """Start a workflow and return its id.

        Without an ``idempotency_key`` a fresh uuid4 is used, so that the
        client's own retries (after a node failure or timeout) return the same
        workflow instead of starting a second one. Pass your own key to make
        *your* retries safe too: a start with a key seen before returns the
        first workflow's id.

        While the client's threads start several at once it goes on the client's
        ``StartWorkflows`` stream to its current node (see ``streams``); what that
        stream cannot answer (it broke, timed out, or the node's store was
        unavailable) is made again as a ``StartWorkflow`` call, which fails over as
        every call does.
        """
        request = pb.StartWorkflowRequest(
            name=name,
            version=version,
            input=to_struct(input),
            correlation_id=correlation_id,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        began = time.monotonic()
        with self._making(_STARTS) as on_stream:
            item = self._streamed(_STARTS, request, repeatable=True) if on_stream else None
            if item is not None:
                with self._counted:   # `+=` from several threads can lose a count
                    self.streamed_starts += 1
                return str(item.workflow_id)
            response = self._call(pb_grpc.WorkflowServiceStub, "StartWorkflow", request, repeatable=True,
                                  spent_s=time.monotonic() - began)
            return str(response.workflow_id)

    @contextlib.contextmanager
    def _making(self, kind: str) -> Iterator[bool]:
        """Count a call of `kind` as on its way while it is made; whether it goes on the stream (see
        ``streams``). Why not always (the bench's cluster, 2026-12-08, side by side): one at a time, a
        publish on the stream reached its first task 3.58 - 3.74 ms after it was made against 3.36 -
        3.44 as a call (the hand-overs between the caller's, gRPC's and the reader's threads); and
        a stream for any overlap read lower at 8 workflows in flight over 3 clients in two pairs of
        runs (210.1 vs 229.4, 211.7 vs 243.9 a second), higher at 32 and 128."""
        with self._counted:
            crowded = self._on_their_way[kind] >= _STREAM_FROM
            self._on_their_way[kind] += 1
        try:
            yield self.stream_calls and (crowded or self._streams_wanted is True)
        finally:
            with self._counted:
                self._on_their_way[kind] -= 1

    def _streamed(self, kind: str, request: Message, *, repeatable: bool) -> Any | None:
        """The answer to `request` on the client's stream of `kind`; None when the stream could not
        tell and the call may be made as a unary call (which fails over). ClientError for a call the
        node refused, and for one that timed out on the stream unless it is `repeatable` (it may
        have been done: a unary call would not be repeated either)."""
        try:
            stream = self._open_stream(kind)
            item = stream.submit(request).result(timeout=self._attempt_timeout_s)
        except StreamBroken as broken:
            if broken.code in _NO_STREAM:   # an older node, or a caller it does not let stream
                self.stream_calls = False
            elif broken.code == grpc.StatusCode.UNAVAILABLE:
                self._leave(stream.endpoint)
            return None
        except FutureTimeout:   # a node that stopped answering (frozen, cut off): the next call fails over
            self._leave(stream.endpoint)
            if not repeatable:
                raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED.name, f"no answer from {stream.endpoint} "
                                  f"within {self._attempt_timeout_s:g} s", stream.endpoint) from None
            return None
        if item.code == grpc.StatusCode.OK.value[0]:
            return item
        code = _status_code(item.code)
        if _retryable(code, repeatable):
            return None
        raise ClientError(code.name, item.message, stream.endpoint)

    def _open_stream(self, kind: str) -> ItemStream:
        """The stream of `kind` to the current endpoint, opened now if there is none that works."""
        with self._streams_lock:
            stream = self._streams.get(kind)
            endpoint = self._ring.current
            if stream is not None and stream.broken is None and stream.endpoint == endpoint:
                return stream
            if stream is not None:
                stream.close()
            stream = self._streams[kind] = ItemStream(self._channel(endpoint), endpoint, self._metadata,
                                                      *_STREAM_KINDS[kind])
            return stream

    def _leave(self, endpoint: str) -> None:
        """After a stream to `endpoint` failed: the next call goes elsewhere (once, however many of
        its calls saw it fail)."""
        with self._streams_lock:
            if self._ring.current == endpoint:
                self._ring.advance()

    def get_workflow(self, workflow_id: str, include_tasks: bool = True) -> dict[str, Any]:
        """Return a workflow (with its task attempts when ``include_tasks``)."""
        request = pb.GetWorkflowRequest(workflow_id=workflow_id, include_tasks=include_tasks)
        return _workflow(self._call(pb_grpc.WorkflowServiceStub, "GetWorkflow", request, repeatable=True))

    def search_workflows(
        self,
        name: str = "",
        status: str = "",
        correlation_id: str = "",
        limit: int = 50,
        page_token: str = "",
        created_from_ms: int = 0,
        created_to_ms: int = 0,
        text: str = "",
    ) -> tuple[list[dict[str, Any]], str]:
        """Search workflows (newest first; filters combine with AND; times in epoch ms).

        ``text``: free-text words, each found (ignoring case) in the id, correlation id, input,
        output, variables or reason. Returns ``(workflows, next_page_token)``; the token is empty
        on the last page (a free-text page may be short and still have a token: go on with it).
        """
        request = pb.SearchWorkflowsRequest(
            name=name, status=status, correlation_id=correlation_id, limit=limit, page_token=page_token,
            created_from_ms=created_from_ms, created_to_ms=created_to_ms, text=text,
        )
        response = self._call(pb_grpc.WorkflowServiceStub, "SearchWorkflows", request, repeatable=True)
        return [_workflow(item) for item in response.workflows], response.next_page_token

    def terminate_workflow(self, workflow_id: str, reason: str = "", *, compensate: bool = False) -> dict[str, Any]:
        """Terminate a running workflow; return it as it is afterwards.

        With ``compensate`` the completed steps that name a compensation are undone first
        (the workflow is COMPENSATING, then COMPENSATED or COMPENSATION_FAILED)."""
        request = pb.TerminateWorkflowRequest(workflow_id=workflow_id, reason=reason, compensate=compensate)
        response = self._call(pb_grpc.WorkflowServiceStub, "TerminateWorkflow", request)
        return _workflow(response.workflow)

    def execute_workflow(
        self,
        name: str,
        input: Mapping[str, Any] | None = None,
        *,
        wait_s: float = 30.0,
        version: int = 0,
        correlation_id: str = "",
        idempotency_key: str = "",
    ) -> dict[str, Any]:
        """Start a workflow and wait for its end (at most ``wait_s``); return it with its tasks.

        If the wait ends first the workflow comes back RUNNING. Retried safely like a start."""
        start = pb.StartWorkflowRequest(name=name, version=version, input=to_struct(input),
                                        correlation_id=correlation_id,
                                        idempotency_key=idempotency_key or uuid.uuid4().hex)
        request = pb.ExecuteWorkflowRequest(start=start, wait_seconds=wait_s)
        return _workflow(self._call(pb_grpc.WorkflowServiceStub, "ExecuteWorkflow", request,
                                    repeatable=True, timeout_s=wait_s + self._timeout_s))

    def watch_workflow(self, workflow_id: str, include_tasks: bool = False) -> Iterator[dict[str, Any]]:
        """Yield the workflow each time it changes, until it ends (a server stream, with failover).

        When the stream breaks with UNAVAILABLE (its node went away) it is reopened on the next
        endpoint, with the back-off of the unary calls after each round through them all. A new
        stream starts with the workflow as it is now: a state equal to the last one yielded (same
        ``updated_at_ms``, same content) is skipped, so the caller never sees the same state twice;
        changes made while no stream was open show up as one state. Any other status raises
        :class:`ClientError` at once, and so does UNAVAILABLE when no endpoint has delivered the
        workflow for ``timeout_s``.
        """
        request = pb.GetWorkflowRequest(workflow_id=workflow_id, include_tasks=include_tasks)
        reconnects = _Reconnects(self._ring, self._timeout_s, "WatchWorkflow", self._judge)
        last: dict[str, Any] | None = None
        while True:
            endpoint = self._ring.current
            call = self._stub(endpoint, pb_grpc.WorkflowServiceStub).WatchWorkflow(request)
            try:
                for message in call:
                    reconnects.reset()
                    state = _workflow(message)
                    if not _same_state(state, last):
                        last = state
                        yield state
                return
            except grpc.RpcError as err:
                reconnects.after(err, endpoint)
            finally:
                call.cancel()   # a no-op once the stream has ended; ends it when the caller stops early

    def pause_workflow(self, workflow_id: str) -> dict[str, Any]:
        """Stop scheduling new tasks (running ones finish and are recorded)."""
        return self._workflow_call("PauseWorkflow", pb.WorkflowRequest(workflow_id=workflow_id))

    def resume_workflow(self, workflow_id: str) -> dict[str, Any]:
        return self._workflow_call("ResumeWorkflow", pb.WorkflowRequest(workflow_id=workflow_id))

    def retry_workflow(self, workflow_id: str) -> dict[str, Any]:
        """Run a FAILED or TIMED_OUT workflow on from the tasks that failed, with fresh retries."""
        return self._workflow_call("RetryWorkflow", pb.WorkflowRequest(workflow_id=workflow_id))

    def restart_workflow(self, workflow_id: str, *, use_latest_definition: bool = False) -> dict[str, Any]:
        """Run an ended workflow again from its first task, with the same input."""
        request = pb.RestartWorkflowRequest(workflow_id=workflow_id, use_latest_definition=use_latest_definition)
        return self._workflow_call("RestartWorkflow", request)

    def rerun_workflow(self, workflow_id: str, task_reference_name: str,
                       task_input: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Forget everything from that task on and run again from it (with new input if given)."""
        request = pb.RerunWorkflowRequest(workflow_id=workflow_id, task_reference_name=task_reference_name)
        if task_input is not None:
            request.task_input.CopyFrom(to_struct(task_input))
        return self._workflow_call("RerunWorkflow", request)

    def skip_task(self, workflow_id: str, task_reference_name: str) -> dict[str, Any]:
        """Mark a task SKIPPED (if not yet done); the flow goes on past it."""
        request = pb.SkipTaskRequest(workflow_id=workflow_id, task_reference_name=task_reference_name)
        return self._workflow_call("SkipTask", request)

    def signal_task(self, workflow_id: str, task_reference_name: str = "", *, output: Mapping[str, Any] | None = None,
                    failed: bool = False, reason: str = "", task_id: str = "") -> dict[str, Any]:
        """Complete (or fail) a waiting WAIT or HUMAN task with ``output``; return the workflow."""
        request = pb.SignalTaskRequest(workflow_id=workflow_id, task_reference_name=task_reference_name,
                                       task_id=task_id, failed=failed, output=to_struct(output), reason=reason)
        return self._workflow_call("SignalTask", request)

    def _workflow_call(self, method: str, request: Message) -> dict[str, Any]:
        return _workflow(self._call(pb_grpc.WorkflowServiceStub, method, request))

    # ------------------------------------------------------------ cluster

    def cluster_status(self) -> dict[str, Any]:
        """Return the answering node's view: role, leader, epoch, members."""
        request = pb.GetClusterStatusRequest()
        return message_to_dict(self._call(pb_grpc.ClusterServiceStub, "GetClusterStatus", request, repeatable=True))

    def step_down(self) -> str:
        """Ask the leader to resign so that another member takes over; return the node's detail."""
        response = self._call(pb_grpc.ClusterServiceStub, "StepDown", pb.StepDownRequest())
        return str(response.detail)

    # ------------------------------------------------------------ plumbing

    def _call(
        self, stub_type: Callable[[grpc.Channel], Any], method: str, request: Message, *, repeatable: bool = False,
        timeout_s: float | None = None, spent_s: float = 0.0,
    ) -> Any:
        """Invoke ``method`` with failover. ``repeatable`` marks calls that are
        safe to repeat after a timeout (reads and keyed starts); ``spent_s``: what
        was spent of the call's time before (a start's try on the stream)."""
        total_s = timeout_s or self._timeout_s
        deadline = time.monotonic() + max(0.0, total_s - spent_s)
        backoff = Backoff(_RETRY_INITIAL_S, _RETRY_MAX_S)
        failures = 0
        hopeless: dict[str, str] = {}   # endpoint -> why no retry there can succeed
        while True:
            endpoint = self._ring.current
            remaining = deadline - time.monotonic()
            # a call that waits on purpose (execute) gets its wait on top of the usual attempt time
            attempt_s = min(remaining, self._attempt_timeout_s + total_s - self._timeout_s) if repeatable \
                else remaining
            try:
                return getattr(self._stub(endpoint, stub_type), method)(request, timeout=attempt_s,
                                                                        metadata=self._metadata)
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()
                details: str = err.details() or ""
                if not _retryable(code, repeatable):
                    raise ClientError(code.name, details, endpoint) from None
            log.debug("%s on %s failed with %s: %s; failing over", method, endpoint, code.name, details)
            if code == grpc.StatusCode.UNAVAILABLE:
                found = self._judge(endpoint, details, deadline, hopeless)
                if len(hopeless) == len(self._ring):
                    raise ClientError(code.name, _hopeless_message(hopeless), endpoint)
                if found:
                    details = f"{details} ({found})"
            self._ring.advance()
            failures += 1
            pause = backoff.next() if failures % len(self._ring) == 0 else 0.0
            if time.monotonic() + pause >= deadline:
                message = f"no endpoint answered {method} within {total_s:g} s; last, {endpoint}: {details}"
                raise ClientError(code.name, message, endpoint)
            time.sleep(pause)

    def _judge(self, endpoint: str, details: str, deadline: float, hopeless: dict[str, str]) -> str | None:
        """After UNAVAILABLE from `endpoint`: what a look at it finds (see `_look_at`), noted in
        `hopeless` when no retry there can succeed (a TLS mismatch; nothing listening, with
        fail_fast), and forgotten there when it may."""
        found = _look_at(endpoint, self._credentials is not None, details,
                         max(0.05, min(_PROBE_S, deadline - time.monotonic())))
        if found is None or (found.startswith(_NOTHING_LISTENS) and not self._fail_fast):
            hopeless.pop(endpoint, None)
        else:
            hopeless[endpoint] = found
        return found

    def _stub(self, endpoint: str, stub_type: Callable[[grpc.Channel], Any]) -> Any:
        key = (endpoint, stub_type)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = stub_type(self._channel(endpoint))
        return stub

    def _channel(self, endpoint: str) -> grpc.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            options = list(CHANNEL_OPTIONS)
            channel = self._channels[endpoint] = (
                grpc.secure_channel(endpoint, self._credentials, options=options)
                if self._credentials is not None else grpc.insecure_channel(endpoint, options=options))
        return channel


class _Reconnects:
    """When a server stream broke: the next endpoint after UNAVAILABLE, a back-off after each
    round through them all, and :class:`ClientError` once none has delivered for ``limit_s``."""

    def __init__(self, ring: EndpointRing, limit_s: float, method: str,
                 judge: Callable[[str, str, float, dict[str, str]], str | None]) -> None:
        self._ring = ring
        self._limit_s = limit_s
        self._method = method
        self._judge = judge
        self._backoff = Backoff(_RETRY_INITIAL_S, _RETRY_MAX_S)
        self._failures = 0
        self._failing_since = 0.0
        self._hopeless: dict[str, str] = {}

    def reset(self) -> None:
        """A message arrived: the stream works."""
        self._failures = 0
        self._backoff.reset()
        self._hopeless.clear()

    def after(self, err: grpc.RpcError, endpoint: str) -> None:
        """Move on to the next endpoint (pausing as due), or raise :class:`ClientError`."""
        code: grpc.StatusCode = err.code()
        details: str = err.details() or ""
        if code != grpc.StatusCode.UNAVAILABLE:
            raise ClientError(code.name, details, endpoint) from None
        if self._failures == 0:
            self._failing_since = time.monotonic()
        self._judge(endpoint, details, self._failing_since + self._limit_s, self._hopeless)
        if len(self._hopeless) == len(self._ring):
            raise ClientError(code.name, _hopeless_message(self._hopeless), endpoint) from None
        self._failures += 1
        pause = self._backoff.next() if self._failures % len(self._ring) == 0 else 0.0
        if time.monotonic() + pause - self._failing_since >= self._limit_s:
            message = f"no endpoint served {self._method} for {self._limit_s:g} s; last, {endpoint}: {details}"
            raise ClientError(code.name, message, endpoint) from None
        following = self._ring.advance()
        log.info("%s on %s broke with %s: %s; reopening it on %s", self._method, endpoint, code.name, details,
                 following)
        time.sleep(pause)


_PROBE_S = 0.5   # the longest a look at an endpoint that failed may take
_HANDSHAKE_TROUBLE = frozenset({"closed", "handshake", "reset"})   # words of gRPC's details that send a hello
_NOTHING_LISTENS = "nothing listens at"
_TLS_FLAGS = ("--tls-ca, or $ORCHESTRATOR_TLS_CA; tls_ca= in WorkflowClient and Worker), and with mutual TLS "
              "a client certificate and its key (--tls-cert, --tls-key)")


def _look_at(endpoint: str, with_tls: bool, details: str, timeout_s: float) -> str | None:
    """Why no call to `endpoint` can succeed, as far as a TCP connect and a TLS hello tell, or
    None: nothing listens there, or it speaks TLS and the client does not (or the other way
    round). The hello is sent only when gRPC's `details` say the connection was closed or its
    handshake failed (not to a node that answered, nor to one that hangs). None also when the
    look itself failed (no answer in time, an address we cannot parse): the usual retries go on
    then."""
    host, _, port = endpoint.rpartition(":")
    host = host.removeprefix("dns:///").strip("[]")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
            tls = _speaks_tls(raw, host) if _HANDSHAKE_TROUBLE.intersection(details.lower().split()) else None
    except ConnectionRefusedError:
        return f"{_NOTHING_LISTENS} {endpoint} (connection refused)"
    except OSError:
        return None
    if tls and not with_tls:
        return f"{endpoint} speaks TLS and this client does not: give the CA of the nodes' certificates ({_TLS_FLAGS}"
    if tls is False and with_tls:
        return f"{endpoint} does not speak TLS and this client does: leave out the TLS files (--tls-ca, --tls-cert, " \
               "--tls-key and $ORCHESTRATOR_TLS_*), or serve TLS on the node"
    return None


def _speaks_tls(raw: socket.socket, host: str) -> bool | None:
    """Whether the peer on `raw` answers a TLS hello in TLS (None: it did not say either way).
    Nothing is verified: the question is only which language the port speaks."""
    hello = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    hello.check_hostname = False
    hello.verify_mode = ssl.CERT_NONE
    hello.set_alpn_protocols(["h2"])
    try:
        with hello.wrap_socket(raw, server_hostname=host):
            return True
    except (ConnectionError, ssl.SSLEOFError):   # it hung up on the hello
        return False
    except ssl.SSLError as exc:   # an alert (e.g. "certificate required") is TLS; garbage in reply is not
        return "ALERT" in str(exc.reason or "").upper()
    except OSError:   # no answer in time
        return None


def _hopeless_message(hopeless: dict[str, str]) -> str:
    """One line for every endpoint found hopeless (the refused ones named together)."""
    refused = [endpoint for endpoint, why in hopeless.items() if why.startswith(_NOTHING_LISTENS)]
    lines = [why for why in hopeless.values() if not why.startswith(_NOTHING_LISTENS)]
    if refused:
        lines.append(f"{_NOTHING_LISTENS} {', '.join(refused)} (connection refused): is the cluster running, "
                     "and are these its nodes' addresses? (--endpoints or $ORCHESTRATOR_ENDPOINTS)")
    return "; ".join(lines)


def _workflow(message: Message) -> dict[str, Any]:
    """A workflow as a dict, with an `output` (and each task with one) whatever its status: the
    API leaves the field out while there is none (FAILED, RUNNING), and `workflow["output"]` should
    not work for a COMPLETED workflow only."""
    workflow = message_to_dict(message)
    workflow.setdefault("output", {})
    for task in workflow.get("tasks") or []:
        task.setdefault("output", {})
    return workflow


def _same_state(state: dict[str, Any], last: dict[str, Any] | None) -> bool:
    """The same workflow state: the same update time and, since two writes may share a
    millisecond, the same content."""
    return last is not None and state.get("updated_at_ms") == last.get("updated_at_ms") and state == last


_STARTS, _PUBLISHES = "starts", "publishes"
_STREAM_FROM = 4   # calls of a kind on their way already, from which the next goes on the stream (`streams`)
# What ItemStream needs for each kind: the method, how requests make a message, the response type,
# and the answers in a response.
_STREAM_KINDS: dict[str, tuple[str, Callable[[list[tuple[int, Any]]], Message], type[Message],
                               Callable[[Any], Any]]] = {
    _STARTS: ("/orchestrator.v1.WorkflowService/StartWorkflows",
              lambda items: pb.StartWorkflowsRequest(starts=[pb.StartItem(id=i, start=r) for i, r in items]),
              pb.StartWorkflowsResponse, lambda response: response.started),
    _PUBLISHES: ("/orchestrator.v1.EventService/PublishEvents",
                 lambda items: pb.PublishEventsRequest(events=[pb.PublishItem(id=i, event=r) for i, r in items]),
                 pb.PublishEventsResponse, lambda response: response.published),
}
# A stream refused with one of these is not tried again by this client: the node has no such streams
# (an older version), or the caller may not use them; unary calls then say what the node thinks of them.
_NO_STREAM = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.UNAUTHENTICATED})
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _status_code(value: int) -> grpc.StatusCode:
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


def _retryable(code: grpc.StatusCode, repeatable: bool) -> bool:
    return code == grpc.StatusCode.UNAVAILABLE or (repeatable and code == grpc.StatusCode.DEADLINE_EXCEEDED)


def _source(defn: Definition) -> pb.DefinitionSource:
    if isinstance(defn, str):
        return pb.DefinitionSource(document=defn)
    if isinstance(defn, Mapping):
        return pb.DefinitionSource(definition=to_struct(defn))
    raise TypeError(f"a definition is a dict or a JSON/YAML document string, got {type(defn).__name__}")
