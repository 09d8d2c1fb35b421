"""What a task kind is: the parts each kind module provides, and what the drivers hand them.

A kind (SIMPLE, WAIT, SWITCH, DO_WHILE, ...) lives in one module of this package and is one
`Kind` value: the type names it answers to, the fields a task of it may carry, how the
validator checks and normalises such a task (`validate`), how the decider advances it
(`decide`), which of its fields hold nested task lists (`children`) and how the console draws
it (`graph`, pure data: the core does not import the web), and what a run of one of its tasks
needs beyond the task itself: the task and workflow definitions it names (or that it may name
only at run time, so the run must see every one), the workflow definitions written inside it,
the event topics it waits on, whether it runs user code (`runs_user_code`). Those parts default
to "nothing", so a kind that needs nothing declares none of them.

The drivers (`definitions.py` validates and says what a run needs, `decider/walk.py` decides,
`web/graph.py` draws) find a task's kind through the registry (`kinds.kind_of`) and call its parts. A kind reaches the
drivers only through what it is handed, a `Checker` when validating and the `Walk` when
deciding, never by import: the drivers import the registry, so the kinds cannot import them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .. import statuses as st
from ..schema import WorkflowTask

if TYPE_CHECKING:
    from ..decider.walk import Walk

Role = Literal["worker", "system", "container"]
"""Where a kind runs: on workers, in the decider itself, or as a container of other tasks."""


class Checker(Protocol):
    """What the validator offers a kind's `validate` (`definitions._Validator`)."""

    problems: list[str]            # each makes the definition invalid
    conductor: bool                # read as Conductor reads it (the definition declares `schemaVersion`)
    workflow_defs: Mapping[str, Any]   # the registered workflow definitions it may name (None: not registered)
    refs: set[str]                 # the task references met so far
    all_refs: set[str]             # every task reference of the definition

    def warn(self, text: str) -> None:
        """Report what has no effect here or differs from Conductor (once)."""

    def sequence(self, tasks: Any, where: str, known: set[str]) -> list[dict[str, Any]]:
        """Validate a nested task list; `known` grows with each reference."""

    def template(self, template: Any, where: str, known: set[str]) -> None:
        """Check the `${...}` of a template: each parses and names only tasks in `known`."""

    def task_def_exists(self, name: str, where: str) -> None:
        """Report a task definition that is not registered."""

    def check_definition(self, raw: Any) -> tuple[Any, list[str], list[str]]:
        """Check a workflow definition written inside a task: (normalised, problems, warnings)."""

    def is_task_type(self, name: Any) -> bool:
        """Whether `name` is the type name of a kind."""


Validate = Callable[[Checker, dict[str, Any], dict[str, Any], str, set[str], "dict[str, Any] | None"], None]
"""validate(checker, task as written, task normalised so far, where, known references, previous task):
report problems and warnings through the checker and fill in the normalised task's fields."""


@dataclass(frozen=True)
class Outcome:
    """How far a node or a list of nodes got. DONE lets the walk go on."""

    kind: str                                  # DONE, BLOCKED, FAILED or TERMINATE
    reason: str = ""
    status: str = st.FAILED                     # the workflow status a failure or TERMINATE asks for
    output: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.kind == "DONE"


DONE = Outcome("DONE")
BLOCKED = Outcome("BLOCKED")


def failure(reason: str, status: str = st.FAILED) -> Outcome:
    return Outcome("FAILED", reason, status)


Decide = Callable[["Walk", WorkflowTask, str, "WorkflowTask | None"], Outcome]
"""decide(walk, node, key suffix, the node before it in its list): advance the node's instance
(the key is its reference plus the suffix of the loop iterations around it)."""


@dataclass(frozen=True)
class NestedTasks:
    """A field that holds tasks: `branches` a list of task lists (forkTasks), `cases` an object
    of task lists (decisionCases), `list` one task list (defaultCase, loopOver)."""

    field: str
    form: Literal["branches", "cases", "list"]

    def lists(self, task: Mapping[str, Any]) -> Iterator[tuple[Any, list[Any]]]:
        """(position, task list) for each task list this field of a (possibly invalid) task
        holds: the position is the branch's index, the case's name, or None."""
        value = task.get(self.field)
        if self.form == "branches" and isinstance(value, list):
            yield from ((index, branch) for index, branch in enumerate(value) if isinstance(branch, list))
        elif self.form == "cases" and isinstance(value, dict):
            yield from ((case, branch) for case, branch in value.items() if isinstance(branch, list))
        elif self.form == "list" and isinstance(value, list):
            yield None, value

    def path(self, position: Any) -> str:
        """The path suffix of the task list at `position`: `.forkTasks[0]`, `.decisionCases['a']`, `.loopOver`."""
        if self.form == "branches":
            return f".{self.field}[{position}]"
        if self.form == "cases":
            return f".{self.field}[{position!r}]"
        return f".{self.field}"


@dataclass(frozen=True)
class Box:
    """Drawn as one box."""

    title: str


@dataclass(frozen=True)
class Lanes:
    """Drawn as a box over lanes side by side, each a labelled task list, that meet again below."""

    title: str
    lanes: list[tuple[str, list[Any]]]


@dataclass(frozen=True)
class Loop:
    """Drawn as a box over its body, with an edge from the body's end back to the box."""

    title: str
    body: list[Any]


Shape = Box | Lanes | Loop
Graph = Callable[[Mapping[str, Any]], Shape]
"""graph(task of a normalised definition): how the console draws it."""


def type_title(task: Mapping[str, Any]) -> str:
    """A task's type, as a box's title."""
    return str(task.get("type", "SIMPLE"))


def titled_by_type(task: Mapping[str, Any]) -> Shape:
    """The usual shape: one box titled with the task's type."""
    return Box(type_title(task))


TaskTest = Callable[[Mapping[str, Any]], bool]
"""A question about one task of a (possibly invalid) definition: it may hold anything."""
TaskNames = Callable[[Mapping[str, Any]], Iterable[str]]
WorkflowRefs = Callable[[Mapping[str, Any]], Iterable[tuple[str, int]]]
"""(name, version) of registered workflow definitions; version 0 is the latest."""
InlineWorkflows = Callable[[Mapping[str, Any]], Iterable[Mapping[str, Any]]]


def never(_task: Mapping[str, Any]) -> bool:
    """The default of a yes-or-no part: no."""
    return False


def always(_task: Mapping[str, Any]) -> bool:
    """Yes, for every task of the kind."""
    return True


def nothing(_task: Mapping[str, Any]) -> tuple[()]:
    """The default of a part that lists what a task names: nothing."""
    return ()


@dataclass(frozen=True)
class Kind:
    names: tuple[str, ...]             # the type names it answers to (several when they behave alike)
    role: Role
    fields: frozenset[str]             # what a task of it may carry besides the fields every task has
    validate: Validate
    decide: Decide
    graph: Graph = titled_by_type
    children: tuple[NestedTasks, ...] = ()
    also_on_workers: bool = False      # a system kind some of whose tasks workers run (EVENT to another broker)
    loops: bool = False                # its inputs may name itself (resolved again for each condition) and
    #                                    `${ref.iteration}` is its current iteration
    # What a run of a task of it needs (`definitions.py` asks, for the store's snapshot of definitions, for
    # registration and for the node that decides). Each is given a task as written, valid or not.
    runs_user_code: bool = False       # runs JavaScript or jq, or is given tasks only at run time that may
    task_defs_named: TaskNames = nothing       # names of the task definitions it runs under or starts
    needs_every_task_def: TaskTest = never     # names one only at run time, or may run under none or another's
    workflows_named: WorkflowRefs = nothing    # registered workflow definitions it starts by a name written in it
    needs_every_workflow_def: TaskTest = never  # may start one whose name (or version) is known only at run time
    inline_workflows: InlineWorkflows = nothing  # the workflow definitions written inside it
    topics: TaskNames = nothing        # the event topics it waits on (in a normalised definition)

    @property
    def runs_on_workers(self) -> bool:
        """Whether its tasks (some of them) are queued for workers."""
        return self.role == "worker" or self.also_on_workers
