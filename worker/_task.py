"""The ``@task`` decorator and the handler registry a Worker is built from.

The decorator only records metadata on the function and returns it
unchanged (as ``temporalio.activity.defn`` does), so a handler stays a plain
function that tests can call directly.

Where a handler runs: an ``async def`` one in the worker's event loop; a plain function in the
worker's thread pool, so that a slow or blocking one never holds up the heartbeats, results and
pings of the other tasks; or, with ``@task(..., inline=True)``, a plain function in the event
loop itself, which saves the two thread hand-offs of each run (loop to pool thread and back, a
fifth of a millisecond or more on a busy machine) for a handler that only computes for a few
microseconds and never blocks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

__all__ = ["TaskDefinition", "task", "definition_of", "build_registry", "runs_inline"]

Handler = Callable[[dict[str, Any]], Any]
F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__orchestrator_task__"


@dataclass(frozen=True)
class TaskDefinition:
    """What ``@task`` records on a handler.

    Attributes:
        name: the task type (task definition name) the handler serves.
        inline: a plain (sync) handler runs in the worker's event loop rather than in its
            thread pool (``@task(..., inline=True)``).
    """

    name: str
    inline: bool = False


@overload
def task(name: F) -> F: ...
@overload
def task(name: str | None = None, *, inline: bool = False) -> Callable[[F], F]: ...


def task(name: str | Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
    """Mark a function as the handler of a task type.

    Use ``@task("charge_card")``, or bare ``@task`` to take the function's
    name. The handler receives the task input (a dict) and returns a dict
    (or None); it may be ``async def`` or a plain function, which then runs
    in the worker's thread pool. The function is returned unchanged.

    ``inline=True`` (plain functions only) runs it in the worker's event loop
    instead, without the two thread hand-offs per run. Only for a handler
    that returns within a millisecond or so and never blocks: while it runs,
    nothing else of the worker moves (no heartbeat, result or ping of any other
    task), so one that ran for a third of a lease would cost other tasks theirs.

    Raises:
        TypeError: ``inline=True`` on an ``async def`` handler (it already runs
            in the event loop), or a non-callable.
        ValueError: an invalid task type name.
    """
    if callable(name):
        return _mark(name, name.__name__, inline)

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@task must decorate a callable, got {type(fn).__name__}")
        return _mark(fn, fn.__name__ if name is None else name, inline)

    return decorate


def _mark(fn: F, name: object, inline: bool) -> F:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"a task type must be a non-empty string without surrounding spaces, got {name!r}")
    if not isinstance(inline, bool):
        raise TypeError(f"inline must be True or False, got {inline!r}")
    if inline and inspect.iscoroutinefunction(fn):
        raise TypeError(f"inline=True is for plain functions: {_describe(fn)} is async and already runs in the "
                        "event loop")
    setattr(fn, _ATTRIBUTE, TaskDefinition(name=name, inline=inline))
    return fn


def runs_inline(handler: object) -> bool:
    """Whether ``handler`` is a plain function marked ``@task(..., inline=True)``."""
    definition = getattr(handler, _ATTRIBUTE, None)
    return isinstance(definition, TaskDefinition) and definition.inline


def definition_of(handler: object) -> TaskDefinition | None:
    """Return the metadata ``@task`` recorded on ``handler`` (bound methods
    included), or None for an undecorated callable."""
    definition = getattr(handler, _ATTRIBUTE, None)
    return definition if isinstance(definition, TaskDefinition) else None


def build_registry(handlers: Iterable[Callable[..., Any]]) -> dict[str, Handler]:
    """Map task type -> handler, failing fast on anything a Worker cannot run.

    Raises:
        TypeError: a handler is not decorated with ``@task`` or does not
            accept exactly one positional argument.
        ValueError: no handlers, or two handlers for one task type.
    """
    registry: dict[str, Handler] = {}
    for handler in handlers:
        definition = definition_of(handler)
        if definition is None:
            raise TypeError(f"{_describe(handler)} is not decorated with @task")
        _check_signature(handler)
        if definition.name in registry:
            raise ValueError(
                f"two handlers for task type {definition.name!r}: "
                f"{_describe(registry[definition.name])} and {_describe(handler)}"
            )
        registry[definition.name] = handler
    if not registry:
        raise ValueError("a Worker needs at least one @task handler")
    return registry


def _check_signature(handler: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return
    try:
        signature.bind({})
    except TypeError:
        raise TypeError(
            f"{_describe(handler)} must accept exactly one positional argument (the task input dict); "
            f"its signature is {signature}"
        ) from None


def _describe(handler: object) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)
