"""Workflows: start, execute, read, watch, search and operate them.

Every change is an event this node decides at once: a start in the script that creates it (its first
tasks pushed to this node's workers before the answer), operations and signals before answering (the
answer shows their effect). A caller sees only
the workflows of its namespace: another namespace's workflow is NOT_FOUND by id and absent from
searches (core/namespaces.py). A workflow that left the store after its retention is still found,
in the archive, as its record (`core.records`: an `Archived` dict)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ..archive import Archive
from ..cluster.deciding import Decider
from ..cluster.notify import Notifier
from ..core import free_text
from ..core import state as m
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.definitions import iter_nodes
from ..core.errors import FailedPrecondition, InvalidArgument, NotFound
from ..core.namespaces import qualified, relative
from ..core.payloads import PayloadLimit, encode
from ..core.schema import WorkflowDef
from ..store import FirstDecision, Store, StoreUnavailable
from ..store import Started as StoreStarted
from .access import allowed, request_namespace, seen_here

MAX_ID_LENGTH = 256
ARCHIVE_CURSOR = "archive:"   # a page token that goes on in the archive
MAX_REASON_LENGTH = 4096
MAX_SEARCH_LIMIT = 1000
MAX_WAIT_S = 300.0
RESTARTABLE = sorted(st.TERMINAL_WORKFLOW)
MAX_COUNTED = 1000    # workflows counted per status for a correlation id (read one by one: see `counts`)
MAX_COUNT_PAGES = 10  # search pages read per status for them (each a bounded scan)

Archived = dict[str, Any]            # an archived workflow's record (core/records.py)
Found = m.WorkflowState | Archived   # a workflow as it is found: stored, or archived


@dataclass(frozen=True)
class StartRequest:
    name: str
    version: int = 0              # 0: the latest
    input: dict[str, Any] = field(default_factory=dict)
    correlation_id: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True)
class Started:
    workflow_id: str
    created: bool                 # False: the idempotency key had started it already


@dataclass(frozen=True)
class SearchQuery:
    name: str = ""
    status: str = ""
    correlation_id: str = ""
    created_from_ms: int = 0
    created_to_ms: int = 0
    text: str = ""
    limit: int = 0                # 0: 50
    page_token: str = ""


@dataclass(frozen=True)
class SearchPage:
    workflows: list[Found]
    next_page_token: str


@dataclass(frozen=True)
class Signal:
    workflow_id: str
    task_reference_name: str = ""
    task_id: str = ""             # "": the latest waiting task of that reference
    output: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    reason: str = ""


class _Filters(TypedDict):
    name: str
    status: str
    correlation_id: str
    created_from_ms: int
    created_to_ms: int
    text: str
    namespace: str


class Workflows:
    def __init__(self, store: Store, limit: PayloadLimit, notifier: Notifier, decider: Decider,
                 archive: Archive | None = None) -> None:
        self.store = store
        self.limit = limit
        self.notifier = notifier
        self.decider = decider
        self.archive = archive   # where finished workflows go after their retention: still found
        self.started: Counter[str] = Counter()   # workflows this service created, by name (metrics)

    async def start(self, request: StartRequest) -> Started:
        allowed("WorkflowService/StartWorkflow")
        return await self._start(request)

    def open_start_stream(self) -> None:
        """Before a stream of starts (StartWorkflows) is read: each start on it is `start`, checked as
        such too."""
        allowed("WorkflowService/StartWorkflows")

    async def _start(self, request: StartRequest, *, expect_end: bool = False, workflow_id: str = "") -> Started:
        if not request.name:
            raise InvalidArgument("name (the workflow definition to start) is required")
        if request.version < 0:
            raise InvalidArgument("version must be 0 (latest) or a positive version number")
        for name, value in (("correlation_id", request.correlation_id), ("idempotency_key", request.idempotency_key)):
            if len(value) > MAX_ID_LENGTH:
                raise InvalidArgument(f"{name} is longer than {MAX_ID_LENGTH} characters")
        self.limit.check("workflow input", encode(request.input, "workflow input"))
        namespace = request_namespace()
        name = qualified(namespace, request.name)
        idempotency_key = _idempotency_key(namespace, request)
        workflow_id, started_at = workflow_id or self.store.new_workflow_id(idempotency_key), now_ms()

        def begin(decide: FirstDecision) -> Awaitable[StoreStarted]:
            return self.store.start_by_name(name, request.version, workflow_id, request.input,
                                            request.correlation_id, idempotency_key, started_at,
                                            expect_end=expect_end, decide=decide)

        # created and decided in one script (the decider pushes its first tasks), answered after it
        started = await self.decider.start(begin)
        if started.state is not None:
            self.started[name] += 1
        return Started(started.workflow_id, started.created)

    async def execute(self, request: StartRequest, wait_seconds: float = 0.0) -> m.WorkflowState:
        """Start, then wait up to `wait_seconds` (0: 30) for the workflow to end; as it is then."""
        allowed("WorkflowService/ExecuteWorkflow")
        wait_s = wait_seconds or 30.0
        if not 0 < wait_s <= MAX_WAIT_S:
            raise InvalidArgument(f"wait_seconds must be above 0 and at most {MAX_WAIT_S:g}")
        # Heard before it exists: its end, decided here or broadcast to this node (`expect_end`),
        # cannot come first, so nothing is read until it is heard.
        fresh_id = self.store.new_workflow_id(_idempotency_key(request_namespace(), request))
        with self.notifier.waiting(fresh_id) as heard:
            started = await self._start(request, expect_end=True, workflow_id=fresh_id)
            workflow_id = started.workflow_id

            async def ended() -> bool:
                return await self.store.status(workflow_id) in st.TERMINAL_WORKFLOW

            if started.created:   # the workflow is `fresh_id`, heard since before it existed
                await self.notifier.wait_heard(workflow_id, heard, wait_s, ended, read_first=False)
                # ended by this node's own step: as that step read it back, no round trip of its own
                found = await self.store.ended_state(workflow_id)
                if found is not None and seen_here(found.name):
                    return found
            else:   # a repeated idempotency key: the workflow of the first start, perhaps ended
                await self.notifier.wait_done(workflow_id, wait_s, ended)
        return await self._load(workflow_id)

    async def get(self, workflow_id: str) -> Found:
        """The workflow as stored, else as archived; NotFound when neither is of the caller's namespace."""
        allowed("WorkflowService/GetWorkflow")
        workflow_id = checked_id(workflow_id)
        state = await self.store.load(workflow_id)
        if state is not None and seen_here(state.name):
            return state
        record = await self.archive.get(workflow_id) if self.archive is not None and state is None else None
        if record is None or not seen_here(str(record.get("name", ""))):
            raise NotFound(f"no workflow with id '{workflow_id}'")
        return record

    async def find(self, workflow_id: str) -> m.WorkflowState | None:
        """The stored workflow if it is one of the caller's namespace, else None (no id checks: what
        a page shows for any id it is given)."""
        allowed("WorkflowService/GetWorkflow")
        state = await self.store.load(workflow_id)
        return state if state is not None and seen_here(state.name) else None

    async def watch(self, workflow_id: str) -> AsyncIterator[m.WorkflowState]:
        """The workflow's changes, from its next one until it ends (NotFound at once when it is not
        one of the caller's namespace)."""
        allowed("WorkflowService/WatchWorkflow")
        await self._load(workflow_id)
        return self._changes(workflow_id)

    async def _changes(self, workflow_id: str) -> AsyncIterator[m.WorkflowState]:
        last_revision = -1
        async for _ in self.notifier.changes(workflow_id):
            state = await self._load(workflow_id)
            if state.revision != last_revision:
                last_revision = state.revision
                yield state
            if state.status in st.TERMINAL_WORKFLOW:
                return

    async def search(self, query: SearchQuery) -> SearchPage:
        """Newest first: the store's workflows, then (a page token starting ARCHIVE_CURSOR) the archive's."""
        allowed("WorkflowService/SearchWorkflows")
        limit = query.limit or 50
        if not 0 < limit <= MAX_SEARCH_LIMIT:
            raise InvalidArgument(f"limit must be from 1 to {MAX_SEARCH_LIMIT}, got {query.limit}")
        if query.status and query.status not in st.WORKFLOW_STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(st.WORKFLOW_STATUSES)}, got '{query.status}'")
        if query.created_from_ms < 0 or query.created_to_ms < 0 or (
                query.created_to_ms and query.created_from_ms > query.created_to_ms):
            raise InvalidArgument("created_from_ms and created_to_ms must be epoch milliseconds, from <= to")
        try:
            free_text.words(query.text)
        except ValueError as exc:
            raise InvalidArgument(f"text: {exc}") from None
        namespace = request_namespace()
        filters = _Filters(name=qualified(namespace, query.name) if query.name else "", status=query.status,
                           correlation_id=query.correlation_id, created_from_ms=query.created_from_ms,
                           created_to_ms=query.created_to_ms, text=query.text, namespace=namespace)
        try:
            return await self._search(filters, query.page_token, limit)
        except ValueError:
            raise InvalidArgument("page_token is not one this API returned; pass next_page_token as is") from None

    async def _search(self, filters: _Filters, token: str, limit: int) -> SearchPage:
        found: list[Found] = []
        if not token.startswith(ARCHIVE_CURSOR):   # the store first, newest first; then the archive
            page = await self.store.search(cursor=token, limit=limit, **filters)
            found = [s for s in await self.store.load_many(page.workflow_ids) if s]
            token = page.next_cursor or ARCHIVE_CURSOR
        if token.startswith(ARCHIVE_CURSOR) and len(found) < limit and self.archive is not None:
            archived = await self.archive.search(cursor=token[len(ARCHIVE_CURSOR):], limit=limit - len(found),
                                                 **filters)
            seen = {workflow_id(w) for w in found}
            found += [r for r in archived.workflows if r["workflow_id"] not in seen]
            token = ARCHIVE_CURSOR + archived.next_cursor if archived.next_cursor else ""
        elif token.startswith(ARCHIVE_CURSOR) and self.archive is None:
            token = ""
        return SearchPage(found, token)

    async def counts(self, *, name: str, correlation_id: str, created_from_ms: int,
                     created_to_ms: int) -> dict[str, int | str]:
        """How many stored workflows of the caller's namespace have each status (`name` as stored). A
        correlation id's index holds every namespace's workflows of that id (and the store's counts
        read it whole), so those are counted from the namespace's own search, up to MAX_COUNTED per
        status ("1000+" past it)."""
        allowed("WorkflowService/SearchWorkflows")
        namespace = request_namespace()
        if not correlation_id:
            return dict(await self.store.status_counts(name=name, created_from_ms=created_from_ms,
                                                       created_to_ms=created_to_ms, namespace=namespace))
        counts: dict[str, int | str] = {}
        for status in st.WORKFLOW_STATUSES:
            found, cursor = 0, ""
            for _ in range(MAX_COUNT_PAGES):
                page = await self.store.search(name=name, status=status, correlation_id=correlation_id,
                                               cursor=cursor, limit=MAX_COUNTED - found + 1, namespace=namespace)
                found += len(page.workflow_ids)
                cursor = page.next_cursor or ""
                if not cursor or found > MAX_COUNTED:
                    break
            counts[status] = f"{min(found, MAX_COUNTED)}+" if found > MAX_COUNTED or cursor else found
        return counts

    async def terminate(self, workflow_id: str, reason: str = "", *, compensate: bool = False) -> m.WorkflowState:
        allowed("WorkflowService/TerminateWorkflow")
        if len(reason) > MAX_REASON_LENGTH:
            raise InvalidArgument(f"reason is longer than {MAX_REASON_LENGTH} characters")
        await self._load(workflow_id)   # one of the caller's namespace
        await self.store.terminate(checked_id(workflow_id), reason or "terminated by request", now_ms(),
                                   compensate=compensate)
        await self._decide(workflow_id)
        return await self._load(workflow_id)

    async def pause(self, workflow_id: str) -> m.WorkflowState:
        allowed("WorkflowService/PauseWorkflow")
        return await self._operate(await self._load(workflow_id), allowed=[st.RUNNING], new_status=st.PAUSED)

    async def resume(self, workflow_id: str) -> m.WorkflowState:
        allowed("WorkflowService/ResumeWorkflow")
        return await self._operate(await self._load(workflow_id), allowed=[st.PAUSED], new_status=st.RUNNING)

    async def retry(self, workflow_id: str) -> m.WorkflowState:
        allowed("WorkflowService/RetryWorkflow")
        return await self._operate(await self._load(workflow_id), allowed=[st.FAILED, st.TIMED_OUT],
                                   new_status=st.RUNNING, command={"op": "retry"})

    async def restart(self, workflow_id: str, *, use_latest_definition: bool = False) -> m.WorkflowState:
        allowed("WorkflowService/RestartWorkflow")
        command: dict[str, Any] = {"op": "restart"}
        state = await self._load(workflow_id)
        if state.definition.get("restartable") is False:
            raise FailedPrecondition(f"workflow '{state.workflow_id}' cannot be restarted: its definition "
                                     f"'{relative(state.name)}' says restartable: false")
        if use_latest_definition:
            latest = await self.store.get_workflow_def(state.name)
            if latest is None:
                raise FailedPrecondition(f"workflow definition '{relative(state.name)}' is no longer registered")
            command["snapshot"] = await self.store.snapshot(latest)
        return await self._operate(state, allowed=RESTARTABLE, new_status=st.RUNNING, command=command)

    async def rerun(self, workflow_id: str, key: str, task_input: dict[str, Any] | None = None) -> m.WorkflowState:
        """Run task `key` (a reference, with __<n> inside loops) again, with `task_input` if given."""
        allowed("WorkflowService/RerunWorkflow")
        state = await self._load(workflow_id)
        if not key or not any(t.spec.key == key for t in state.tasks):
            raise InvalidArgument(f"task_reference_name '{shown(key)}' names no task that ran in workflow "
                                  f"'{state.workflow_id}'; use its reference (with __<n> inside loops)")
        command: dict[str, Any] = {"op": "rerun", "key": key}
        if task_input is not None:
            command["input"] = task_input
            self.limit.check("task input", encode(command["input"], "task input"))
        return await self._operate(state, allowed=[st.RUNNING, st.PAUSED, *RESTARTABLE],
                                   new_status=st.RUNNING, command=command)

    async def skip(self, workflow_id: str, key: str) -> m.WorkflowState:
        allowed("WorkflowService/SkipTask")
        state = await self._load(workflow_id)
        if not key or key.split("__", 1)[0] not in _references(state.definition):
            raise InvalidArgument(f"task_reference_name '{shown(key)}' is not a task of workflow "
                                  f"'{relative(state.name)}'")
        return await self._operate(state, allowed=[st.RUNNING, st.PAUSED], command={"op": "skip", "key": key})

    async def signal(self, signal: Signal) -> m.WorkflowState:
        """Complete (or fail) a WAIT or HUMAN task that waits for a signal."""
        allowed("WorkflowService/SignalTask")
        state = await self._load(signal.workflow_id)
        task_id = signal.task_id
        if not task_id:
            waiting = [t for t in state.tasks if t.spec.ref == signal.task_reference_name
                       and t.runtime.status == st.IN_PROGRESS]
            if not signal.task_reference_name or not waiting:
                raise FailedPrecondition(f"workflow '{shown(signal.workflow_id)}' has no WAIT or HUMAN task "
                                         f"'{signal.task_reference_name}' waiting for a signal")
            task_id = waiting[-1].task_id
        output = encode(signal.output, "signal output")
        self.limit.check("signal output", output)
        status = st.TASK_FAILED if signal.failed else st.TASK_COMPLETED
        await self.store.signal_task(signal.workflow_id, task_id, status, output, signal.reason, now_ms())
        await self._decide(signal.workflow_id)
        return await self._load(signal.workflow_id)

    async def _operate(self, state: m.WorkflowState, **kwargs: Any) -> m.WorkflowState:
        """Store an operation on `state`'s workflow, read through `_load` (so the caller's)."""
        workflow_id = state.workflow_id
        await self.store.operate(workflow_id, now_ms=now_ms(), **kwargs)
        await self._decide(workflow_id)
        return await self._load(workflow_id)

    async def _decide(self, workflow_id: str) -> None:
        """The operation is stored; deciding it here is only quicker than the leader's sweep."""
        try:
            await self.decider.decide([workflow_id])
        except StoreUnavailable:
            pass

    async def _load(self, workflow_id: str) -> m.WorkflowState:
        """The workflow, if it is one of the caller's namespace; NotFound otherwise."""
        state = await self.store.load(checked_id(workflow_id))
        if state is None or not seen_here(state.name):
            raise NotFound(f"no workflow with id '{workflow_id}'")
        return state


def workflow_id(found: Found) -> str:
    return found.workflow_id if isinstance(found, m.WorkflowState) else str(found["workflow_id"])


def checked_id(workflow_id: str) -> str:
    """A workflow id fit to look up (and to echo in an answer)."""
    if not workflow_id:
        raise InvalidArgument("workflow_id is required")
    if len(workflow_id) > MAX_ID_LENGTH:
        raise InvalidArgument(f"workflow_id is {len(workflow_id)} characters long; ids have at most "
                              f"{MAX_ID_LENGTH}")
    return workflow_id


def shown(text: str, limit: int = 120) -> str:
    """An id or a name echoed in a message, cut so that an answer never grows with the input."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _references(definition: WorkflowDef) -> set[str]:
    return {t["taskReferenceName"] for t in iter_nodes(definition["tasks"])}


def _idempotency_key(namespace: str, request: StartRequest) -> str:
    """A start's idempotency key as stored: its namespace's (another team's same key is another start)."""
    return qualified(namespace, request.idempotency_key) if request.idempotency_key else ""
