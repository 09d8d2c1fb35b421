from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DefinitionSource(_message.Message):
    __slots__ = ("definition", "document")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    definition: _struct_pb2.Struct
    document: str
    def __init__(self, definition: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., document: _Optional[str] = ...) -> None: ...

class TaskDef(_message.Message):
    __slots__ = ("name", "definition")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    definition: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., definition: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class WorkflowDef(_message.Message):
    __slots__ = ("name", "version", "definition")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    definition: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., definition: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RegisterTaskDefRequest(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: DefinitionSource
    def __init__(self, source: _Optional[_Union[DefinitionSource, _Mapping]] = ...) -> None: ...

class GetTaskDefRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTaskDefsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTaskDefsResponse(_message.Message):
    __slots__ = ("task_defs",)
    TASK_DEFS_FIELD_NUMBER: _ClassVar[int]
    task_defs: _containers.RepeatedCompositeFieldContainer[TaskDef]
    def __init__(self, task_defs: _Optional[_Iterable[_Union[TaskDef, _Mapping]]] = ...) -> None: ...

class RegisterWorkflowDefRequest(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: DefinitionSource
    def __init__(self, source: _Optional[_Union[DefinitionSource, _Mapping]] = ...) -> None: ...

class ValidateWorkflowDefResponse(_message.Message):
    __slots__ = ("valid", "errors", "normalised", "warnings")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    NORMALISED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    errors: _containers.RepeatedScalarFieldContainer[str]
    normalised: WorkflowDef
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, valid: _Optional[bool] = ..., errors: _Optional[_Iterable[str]] = ..., normalised: _Optional[_Union[WorkflowDef, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class GetWorkflowDefRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListWorkflowDefsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListWorkflowDefsResponse(_message.Message):
    __slots__ = ("workflow_defs",)
    WORKFLOW_DEFS_FIELD_NUMBER: _ClassVar[int]
    workflow_defs: _containers.RepeatedCompositeFieldContainer[WorkflowDef]
    def __init__(self, workflow_defs: _Optional[_Iterable[_Union[WorkflowDef, _Mapping]]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "reference_name", "task_type", "kind", "status", "attempt", "input", "output", "reason", "worker_id", "scheduled_at_ms", "started_at_ms", "ended_at_ms", "key", "sub_workflow_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SUB_WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reference_name: str
    task_type: str
    kind: str
    status: str
    attempt: int
    input: _struct_pb2.Struct
    output: _struct_pb2.Struct
    reason: str
    worker_id: str
    scheduled_at_ms: int
    started_at_ms: int
    ended_at_ms: int
    key: str
    sub_workflow_id: str
    def __init__(self, task_id: _Optional[str] = ..., reference_name: _Optional[str] = ..., task_type: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., attempt: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., reason: _Optional[str] = ..., worker_id: _Optional[str] = ..., scheduled_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., ended_at_ms: _Optional[int] = ..., key: _Optional[str] = ..., sub_workflow_id: _Optional[str] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("workflow_id", "name", "version", "status", "correlation_id", "input", "output", "reason", "created_at_ms", "updated_at_ms", "ended_at_ms", "tasks", "variables", "parent_workflow_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    PARENT_WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    name: str
    version: int
    status: str
    correlation_id: str
    input: _struct_pb2.Struct
    output: _struct_pb2.Struct
    reason: str
    created_at_ms: int
    updated_at_ms: int
    ended_at_ms: int
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    variables: _struct_pb2.Struct
    parent_workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[str] = ..., correlation_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., reason: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., ended_at_ms: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., variables: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parent_workflow_id: _Optional[str] = ...) -> None: ...

class StartWorkflowRequest(_message.Message):
    __slots__ = ("name", "version", "input", "correlation_id", "idempotency_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    input: _struct_pb2.Struct
    correlation_id: str
    idempotency_key: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., correlation_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StartWorkflowResponse(_message.Message):
    __slots__ = ("workflow_id", "created")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    created: bool
    def __init__(self, workflow_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class StartWorkflowsRequest(_message.Message):
    __slots__ = ("starts",)
    STARTS_FIELD_NUMBER: _ClassVar[int]
    starts: _containers.RepeatedCompositeFieldContainer[StartItem]
    def __init__(self, starts: _Optional[_Iterable[_Union[StartItem, _Mapping]]] = ...) -> None: ...

class StartItem(_message.Message):
    __slots__ = ("id", "start")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    id: int
    start: StartWorkflowRequest
    def __init__(self, id: _Optional[int] = ..., start: _Optional[_Union[StartWorkflowRequest, _Mapping]] = ...) -> None: ...

class StartWorkflowsResponse(_message.Message):
    __slots__ = ("started",)
    STARTED_FIELD_NUMBER: _ClassVar[int]
    started: _containers.RepeatedCompositeFieldContainer[StartedItem]
    def __init__(self, started: _Optional[_Iterable[_Union[StartedItem, _Mapping]]] = ...) -> None: ...

class StartedItem(_message.Message):
    __slots__ = ("id", "workflow_id", "created", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    workflow_id: str
    created: bool
    code: int
    message: str
    def __init__(self, id: _Optional[int] = ..., workflow_id: _Optional[str] = ..., created: _Optional[bool] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "include_tasks")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TASKS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    include_tasks: bool
    def __init__(self, workflow_id: _Optional[str] = ..., include_tasks: _Optional[bool] = ...) -> None: ...

class SearchWorkflowsRequest(_message.Message):
    __slots__ = ("name", "status", "correlation_id", "limit", "page_token", "created_from_ms", "created_to_ms", "text")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_TO_MS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    correlation_id: str
    limit: int
    page_token: str
    created_from_ms: int
    created_to_ms: int
    text: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., correlation_id: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., created_from_ms: _Optional[int] = ..., created_to_ms: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class SearchWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "next_page_token")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    next_page_token: str
    def __init__(self, workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TerminateWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "reason", "compensate")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COMPENSATE_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    reason: str
    compensate: bool
    def __init__(self, workflow_id: _Optional[str] = ..., reason: _Optional[str] = ..., compensate: _Optional[bool] = ...) -> None: ...

class TerminateWorkflowResponse(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: Workflow
    def __init__(self, workflow: _Optional[_Union[Workflow, _Mapping]] = ...) -> None: ...

class ExecuteWorkflowRequest(_message.Message):
    __slots__ = ("start", "wait_seconds")
    START_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    start: StartWorkflowRequest
    wait_seconds: float
    def __init__(self, start: _Optional[_Union[StartWorkflowRequest, _Mapping]] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class WorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class RestartWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "use_latest_definition")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    USE_LATEST_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    use_latest_definition: bool
    def __init__(self, workflow_id: _Optional[str] = ..., use_latest_definition: _Optional[bool] = ...) -> None: ...

class RerunWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "task_reference_name", "task_input")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_REFERENCE_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_INPUT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_reference_name: str
    task_input: _struct_pb2.Struct
    def __init__(self, workflow_id: _Optional[str] = ..., task_reference_name: _Optional[str] = ..., task_input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SkipTaskRequest(_message.Message):
    __slots__ = ("workflow_id", "task_reference_name")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_REFERENCE_NAME_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_reference_name: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_reference_name: _Optional[str] = ...) -> None: ...

class SignalTaskRequest(_message.Message):
    __slots__ = ("workflow_id", "task_reference_name", "task_id", "failed", "output", "reason")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_REFERENCE_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_reference_name: str
    task_id: str
    failed: bool
    output: _struct_pb2.Struct
    reason: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_reference_name: _Optional[str] = ..., task_id: _Optional[str] = ..., failed: _Optional[bool] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class WorkerHello(_message.Message):
    __slots__ = ("worker_id", "task_types", "capacity", "batches", "resends")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    RESENDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    task_types: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    batches: bool
    resends: bool
    def __init__(self, worker_id: _Optional[str] = ..., task_types: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., batches: _Optional[bool] = ..., resends: _Optional[bool] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("workflow_id", "task_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("workflow_id", "task_id", "status", "output_json", "reason")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[TaskResult.Status]
        COMPLETED: _ClassVar[TaskResult.Status]
        FAILED: _ClassVar[TaskResult.Status]
        FAILED_TERMINAL: _ClassVar[TaskResult.Status]
    STATUS_UNSPECIFIED: TaskResult.Status
    COMPLETED: TaskResult.Status
    FAILED: TaskResult.Status
    FAILED_TERMINAL: TaskResult.Status
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_id: str
    status: TaskResult.Status
    output_json: bytes
    reason: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., status: _Optional[_Union[TaskResult.Status, str]] = ..., output_json: _Optional[bytes] = ..., reason: _Optional[str] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("workflow_id", "task_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class WorkerBatch(_message.Message):
    __slots__ = ("results", "releases", "heartbeats", "credits")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    releases: _containers.RepeatedCompositeFieldContainer[Release]
    heartbeats: _containers.RepeatedCompositeFieldContainer[Heartbeat]
    credits: int
    def __init__(self, results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., releases: _Optional[_Iterable[_Union[Release, _Mapping]]] = ..., heartbeats: _Optional[_Iterable[_Union[Heartbeat, _Mapping]]] = ..., credits: _Optional[int] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("hello", "credit", "heartbeat", "result", "release", "ping", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: WorkerHello
    credit: Credit
    heartbeat: Heartbeat
    result: TaskResult
    release: Release
    ping: Ping
    batch: WorkerBatch
    def __init__(self, hello: _Optional[_Union[WorkerHello, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., release: _Optional[_Union[Release, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., batch: _Optional[_Union[WorkerBatch, _Mapping]] = ...) -> None: ...

class TaskAssignment(_message.Message):
    __slots__ = ("workflow_id", "task_id", "task_type", "reference_name", "attempt", "input_json", "lease_ms", "idempotency_key", "traceparent")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    task_id: str
    task_type: str
    reference_name: str
    attempt: int
    input_json: bytes
    lease_ms: int
    idempotency_key: str
    traceparent: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., task_type: _Optional[str] = ..., reference_name: _Optional[str] = ..., attempt: _Optional[int] = ..., input_json: _Optional[bytes] = ..., lease_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("task_id", "accepted", "detail", "retry")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    accepted: bool
    detail: str
    retry: bool
    def __init__(self, task_id: _Optional[str] = ..., accepted: _Optional[bool] = ..., detail: _Optional[str] = ..., retry: _Optional[bool] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("task_id", "alive", "lease_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    alive: bool
    lease_ms: int
    def __init__(self, task_id: _Optional[str] = ..., alive: _Optional[bool] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class ServerBatch(_message.Message):
    __slots__ = ("tasks", "result_acks", "heartbeat_acks")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACKS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskAssignment]
    result_acks: _containers.RepeatedCompositeFieldContainer[ResultAck]
    heartbeat_acks: _containers.RepeatedCompositeFieldContainer[HeartbeatAck]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskAssignment, _Mapping]]] = ..., result_acks: _Optional[_Iterable[_Union[ResultAck, _Mapping]]] = ..., heartbeat_acks: _Optional[_Iterable[_Union[HeartbeatAck, _Mapping]]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("task", "result_ack", "heartbeat_ack", "drain", "pong", "batch")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    task: TaskAssignment
    result_ack: ResultAck
    heartbeat_ack: HeartbeatAck
    drain: Drain
    pong: Pong
    batch: ServerBatch
    def __init__(self, task: _Optional[_Union[TaskAssignment, _Mapping]] = ..., result_ack: _Optional[_Union[ResultAck, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., batch: _Optional[_Union[ServerBatch, _Mapping]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("node_id", "address", "role", "state", "since_ms", "detail")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    role: str
    state: str
    since_ms: int
    detail: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., state: _Optional[str] = ..., since_ms: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("node_id", "role", "leader_id", "leader_address", "epoch", "elected_at_ms", "members", "first_decision_at_ms", "gone")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ELECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    FIRST_DECISION_AT_MS_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: str
    leader_id: str
    leader_address: str
    epoch: int
    elected_at_ms: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    first_decision_at_ms: int
    gone: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[str] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., epoch: _Optional[int] = ..., elected_at_ms: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., first_decision_at_ms: _Optional[int] = ..., gone: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StepDownRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StepDownResponse(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "topic", "payload", "key", "published_at_ms", "deliveries")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    topic: str
    payload: _struct_pb2.Struct
    key: str
    published_at_ms: int
    deliveries: int
    def __init__(self, event_id: _Optional[str] = ..., topic: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., key: _Optional[str] = ..., published_at_ms: _Optional[int] = ..., deliveries: _Optional[int] = ...) -> None: ...

class PublishEventRequest(_message.Message):
    __slots__ = ("topic", "payload", "key")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: _struct_pb2.Struct
    key: str
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class PublishEventResponse(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class PublishEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[PublishItem]
    def __init__(self, events: _Optional[_Iterable[_Union[PublishItem, _Mapping]]] = ...) -> None: ...

class PublishItem(_message.Message):
    __slots__ = ("id", "event")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    id: int
    event: PublishEventRequest
    def __init__(self, id: _Optional[int] = ..., event: _Optional[_Union[PublishEventRequest, _Mapping]] = ...) -> None: ...

class PublishEventsResponse(_message.Message):
    __slots__ = ("published",)
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    published: _containers.RepeatedCompositeFieldContainer[PublishedItem]
    def __init__(self, published: _Optional[_Iterable[_Union[PublishedItem, _Mapping]]] = ...) -> None: ...

class PublishedItem(_message.Message):
    __slots__ = ("id", "event_id", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    event_id: str
    code: int
    message: str
    def __init__(self, id: _Optional[int] = ..., event_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ReadEventsRequest(_message.Message):
    __slots__ = ("topic", "after", "limit")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    after: str
    limit: int
    def __init__(self, topic: _Optional[str] = ..., after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ReadEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class ConfigureTopicRequest(_message.Message):
    __slots__ = ("topic", "max_len", "max_age_s")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    topic: str
    max_len: int
    max_age_s: int
    def __init__(self, topic: _Optional[str] = ..., max_len: _Optional[int] = ..., max_age_s: _Optional[int] = ...) -> None: ...

class TopicInfo(_message.Message):
    __slots__ = ("topic", "max_len", "length", "max_age_s")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    topic: str
    max_len: int
    length: int
    max_age_s: int
    def __init__(self, topic: _Optional[str] = ..., max_len: _Optional[int] = ..., length: _Optional[int] = ..., max_age_s: _Optional[int] = ...) -> None: ...

class ReceiveEventsRequest(_message.Message):
    __slots__ = ("topic", "group", "consumer", "max_events", "wait_ms", "redeliver_after_ms", "max_deliveries")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    REDELIVER_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    topic: str
    group: str
    consumer: str
    max_events: int
    wait_ms: int
    redeliver_after_ms: int
    max_deliveries: int
    def __init__(self, topic: _Optional[str] = ..., group: _Optional[str] = ..., consumer: _Optional[str] = ..., max_events: _Optional[int] = ..., wait_ms: _Optional[int] = ..., redeliver_after_ms: _Optional[int] = ..., max_deliveries: _Optional[int] = ...) -> None: ...

class ReceiveEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class AckEventsRequest(_message.Message):
    __slots__ = ("topic", "group", "event_ids")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    group: str
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topic: _Optional[str] = ..., group: _Optional[str] = ..., event_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AckEventsResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    def __init__(self, acknowledged: _Optional[int] = ...) -> None: ...

class GetTopicRequest(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class EventHandler(_message.Message):
    __slots__ = ("name", "definition")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    definition: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., definition: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RegisterEventHandlerRequest(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: _struct_pb2.Struct
    def __init__(self, definition: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListEventHandlersRequest(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class ListEventHandlersResponse(_message.Message):
    __slots__ = ("handlers",)
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    handlers: _containers.RepeatedCompositeFieldContainer[EventHandler]
    def __init__(self, handlers: _Optional[_Iterable[_Union[EventHandler, _Mapping]]] = ...) -> None: ...

class RemoveEventHandlerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveEventHandlerResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...
