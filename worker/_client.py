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

Every round through all the endpoints is followed by a short back-off (50 ms
doubling to 1 s). The watch stream fails over the same way: broken with
UNAVAILABLE, it is reopened on the next endpoint (see ``watch_workflow``).
Payloads are plain dicts: Struct numbers come back as ints when they are
integral (see ``_codec``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ._codec import message_to_dict, to_struct
from ._endpoints import CHANNEL_OPTIONS, Backoff, EndpointRing
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

    Raises:
        TypeError, ValueError: at once, for an invalid configuration.

    Every method raises :class:`ClientError` (with the gRPC status code name
    and the server's message) when the call fails. Use as a context manager,
    or call ``close()``.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 10.0, token: str | None = None,
                 namespace: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
        self._ring = EndpointRing(endpoints)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self._metadata = auth_metadata(token, namespace)
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        self._timeout_s = float(timeout_s)
        self._attempt_timeout_s = self._timeout_s / len(self._ring)
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, Callable[[grpc.Channel], Any]], Any] = {}

    def close(self) -> None:
        """Close the channels. The client must not be used afterwards."""
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
        subscribers and handlers is at-least-once anyway, so they dedupe by id."""
        request = pb.PublishEventRequest(topic=topic, payload=to_struct(payload), key=key)
        return str(self._call(pb_grpc.EventServiceStub, "PublishEvent", request).event_id)

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
        """
        request = pb.StartWorkflowRequest(
            name=name,
            version=version,
            input=to_struct(input),
            correlation_id=correlation_id,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        response = self._call(pb_grpc.WorkflowServiceStub, "StartWorkflow", request, repeatable=True)
        return str(response.workflow_id)

    def get_workflow(self, workflow_id: str, include_tasks: bool = True) -> dict[str, Any]:
        """Return a workflow (with its task attempts when ``include_tasks``)."""
        request = pb.GetWorkflowRequest(workflow_id=workflow_id, include_tasks=include_tasks)
        return message_to_dict(self._call(pb_grpc.WorkflowServiceStub, "GetWorkflow", request, repeatable=True))

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
        return [message_to_dict(item) for item in response.workflows], response.next_page_token

    def terminate_workflow(self, workflow_id: str, reason: str = "", *, compensate: bool = False) -> dict[str, Any]:
        """Terminate a running workflow; return it as it is afterwards.

        With ``compensate`` the completed steps that name a compensation are undone first
        (the workflow is COMPENSATING, then COMPENSATED or COMPENSATION_FAILED)."""
        request = pb.TerminateWorkflowRequest(workflow_id=workflow_id, reason=reason, compensate=compensate)
        response = self._call(pb_grpc.WorkflowServiceStub, "TerminateWorkflow", request)
        return message_to_dict(response.workflow)

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
        return message_to_dict(self._call(pb_grpc.WorkflowServiceStub, "ExecuteWorkflow", request,
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
        reconnects = _Reconnects(self._ring, self._timeout_s, "WatchWorkflow")
        last: dict[str, Any] | None = None
        while True:
            endpoint = self._ring.current
            call = self._stub(endpoint, pb_grpc.WorkflowServiceStub).WatchWorkflow(request)
            try:
                for message in call:
                    reconnects.reset()
                    state = message_to_dict(message)
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
        return message_to_dict(self._call(pb_grpc.WorkflowServiceStub, method, request))

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
        timeout_s: float | None = None,
    ) -> Any:
        """Invoke ``method`` with failover. ``repeatable`` marks calls that are
        safe to repeat after a timeout (reads and keyed starts)."""
        total_s = timeout_s or self._timeout_s
        deadline = time.monotonic() + total_s
        backoff = Backoff(_RETRY_INITIAL_S, _RETRY_MAX_S)
        failures = 0
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
            self._ring.advance()
            failures += 1
            pause = backoff.next() if failures % len(self._ring) == 0 else 0.0
            if time.monotonic() + pause >= deadline:
                message = f"no endpoint answered {method} within {total_s:g} s; last, {endpoint}: {details}"
                raise ClientError(code.name, message, endpoint)
            time.sleep(pause)

    def _stub(self, endpoint: str, stub_type: Callable[[grpc.Channel], Any]) -> Any:
        key = (endpoint, stub_type)
        stub = self._stubs.get(key)
        if stub is None:
            channel = self._channels.get(endpoint)
            if channel is None:
                options = list(CHANNEL_OPTIONS)
                channel = self._channels[endpoint] = (
                    grpc.secure_channel(endpoint, self._credentials, options=options)
                    if self._credentials is not None else grpc.insecure_channel(endpoint, options=options))
            stub = self._stubs[key] = stub_type(channel)
        return stub


class _Reconnects:
    """When a server stream broke: the next endpoint after UNAVAILABLE, a back-off after each
    round through them all, and :class:`ClientError` once none has delivered for ``limit_s``."""

    def __init__(self, ring: EndpointRing, limit_s: float, method: str) -> None:
        self._ring = ring
        self._limit_s = limit_s
        self._method = method
        self._backoff = Backoff(_RETRY_INITIAL_S, _RETRY_MAX_S)
        self._failures = 0
        self._failing_since = 0.0

    def reset(self) -> None:
        """A message arrived: the stream works."""
        self._failures = 0
        self._backoff.reset()

    def after(self, err: grpc.RpcError, endpoint: str) -> None:
        """Move on to the next endpoint (pausing as due), or raise :class:`ClientError`."""
        code: grpc.StatusCode = err.code()
        details: str = err.details() or ""
        if code != grpc.StatusCode.UNAVAILABLE:
            raise ClientError(code.name, details, endpoint) from None
        if self._failures == 0:
            self._failing_since = time.monotonic()
        self._failures += 1
        pause = self._backoff.next() if self._failures % len(self._ring) == 0 else 0.0
        if time.monotonic() + pause - self._failing_since >= self._limit_s:
            message = f"no endpoint served {self._method} for {self._limit_s:g} s; last, {endpoint}: {details}"
            raise ClientError(code.name, message, endpoint) from None
        following = self._ring.advance()
        log.info("%s on %s broke with %s: %s; reopening it on %s", self._method, endpoint, code.name, details,
                 following)
        time.sleep(pause)


def _same_state(state: dict[str, Any], last: dict[str, Any] | None) -> bool:
    """The same workflow state: the same update time and, since two writes may share a
    millisecond, the same content."""
    return last is not None and state.get("updated_at_ms") == last.get("updated_at_ms") and state == last


def _retryable(code: grpc.StatusCode, repeatable: bool) -> bool:
    return code == grpc.StatusCode.UNAVAILABLE or (repeatable and code == grpc.StatusCode.DEADLINE_EXCEEDED)


def _source(defn: Definition) -> pb.DefinitionSource:
    if isinstance(defn, str):
        return pb.DefinitionSource(document=defn)
    if isinstance(defn, Mapping):
        return pb.DefinitionSource(definition=to_struct(defn))
    raise TypeError(f"a definition is a dict or a JSON/YAML document string, got {type(defn).__name__}")
