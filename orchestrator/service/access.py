"""Who calls, in which namespace, and what each use case needs: the one table every door and every
service call is checked by.

Every door says who calls and in which namespace before it calls a service: the gRPC interceptor,
and the HTTP port's gate (console and Conductor API alike) for the request (`calling_as`,
`acting_in`; `task_calls_as` and `task_acts_in` for a stream's task of its own). The services read
them (`current_principal`, `request_namespace`, `seen_here`).

`METHOD_ROLES` says the role each use case needs, by the name the gRPC API gives it (a use case not
listed needs admin); `CLUSTER_WIDE` those that act on every namespace at once, which a token
confined to one may not call, whatever its role. Each service call checks it itself, as its first
statement (`allowed`), so no door can forget it; the doors check first where they can (the
interceptor before a message is read, the HTTP routes before a body is), but no door is trusted
to: a call with no caller named at all is refused too. HTTP routes mark the rule they check
(`with_rule`), and the app refuses a route that carries none (`rule_marked`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..core.auth import Principal
from ..core.namespaces import namespace_of
from .errors import Refused

__all__ = ["CLUSTER_WIDE", "METHOD_ROLES", "OPEN", "Rule", "acting_in", "allowed", "authorize", "calling_as",
           "current_principal", "refusal", "request_namespace", "rule_marked", "rule_of", "seen_here",
           "task_acts_in", "task_calls_as", "with_rule"]

_READ, _OPERATE, _WORK, _ADMIN = "reader", "operator", "worker", "admin"
# Who may call what: the role each use case needs (core/auth.py says what each role is). A use case
# missing here needs admin, so a new one is closed until someone decides who may call it.
METHOD_ROLES: dict[str, dict[str, str]] = {
    "MetadataService": {"RegisterTaskDef": _ADMIN, "RegisterWorkflowDef": _ADMIN, "GetTaskDef": _READ,
                        "ListTaskDefs": _READ, "ValidateWorkflowDef": _READ, "GetWorkflowDef": _READ,
                        "ListWorkflowDefs": _READ},
    "WorkflowService": {"StartWorkflow": _OPERATE, "StartWorkflows": _OPERATE, "ExecuteWorkflow": _OPERATE,
                        "GetWorkflow": _READ, "WatchWorkflow": _READ, "SearchWorkflows": _READ,
                        "TerminateWorkflow": _OPERATE, "PauseWorkflow": _OPERATE, "ResumeWorkflow": _OPERATE,
                        "RetryWorkflow": _OPERATE, "RestartWorkflow": _OPERATE, "RerunWorkflow": _OPERATE,
                        "SkipTask": _OPERATE, "SignalTask": _OPERATE},
    "TaskService": {"Connect": _WORK},
    "ClusterService": {"GetClusterStatus": _READ, "StepDown": _ADMIN},
    "EventService": {"PublishEvent": _OPERATE, "PublishEvents": _OPERATE, "ReadEvents": _READ,
                     "ConfigureTopic": _ADMIN, "GetTopic": _READ, "RegisterEventHandler": _ADMIN,
                     "ListEventHandlers": _READ, "RemoveEventHandler": _ADMIN, "ReceiveEvents": _WORK,
                     "AckEvents": _WORK},
}
# What acts on the whole cluster, every namespace at once: moving the leadership fails every team's
# work over. A token confined to a namespace is its team's, admin or not, and may not.
CLUSTER_WIDE = frozenset({"ClusterService/StepDown"})


@dataclass(frozen=True)
class Rule:
    """What a use case needs: a role (None: open to anyone) and, when `cluster_wide`, a token
    confined to no namespace. `what` names it in refusals."""

    role: str | None
    what: str
    cluster_wide: bool = False


OPEN = Rule(None, "open")


@cache
def rule_of(method: str) -> Rule:
    """The rule of use case "Service/Method" (one not in the table: admin)."""
    service, _, name = method.partition("/")
    return Rule(METHOD_ROLES.get(service, {}).get(name, _ADMIN), name or method, method in CLUSTER_WIDE)


@dataclass(frozen=True)
class _Caller:
    principal: Principal | None
    tokens: bool   # False: the node runs without tokens, and anyone may do anything


_CALLER: contextvars.ContextVar[_Caller | None] = contextvars.ContextVar("caller", default=None)
_NAMESPACE: contextvars.ContextVar[str] = contextvars.ContextVar("namespace", default="")


@contextmanager
def calling_as(principal: Principal | None, *, tokens: bool) -> Iterator[None]:
    """Handle what runs inside as a request of `principal` (None: nobody known) on a node that
    requires tokens (`tokens`) or not. Every door says so before it calls a service."""
    token = _CALLER.set(_Caller(principal, tokens))
    try:
        yield
    finally:
        _CALLER.reset(token)


def task_calls_as(principal: Principal | None, *, tokens: bool) -> None:
    """The rest of the running task (a stream's own) is a request of `principal`."""
    _CALLER.set(_Caller(principal, tokens))


def current_principal() -> Principal | None:
    """Who makes the request being handled (None on a node without tokens, or nobody known)."""
    caller = _CALLER.get()
    return caller.principal if caller is not None else None


def refusal(rule: Rule) -> Refused | None:
    """Why the request being handled may not do what `rule` guards; None when it may."""
    if rule.role is None:
        return None
    caller = _CALLER.get()
    if caller is None:   # a path into the services that did not say who calls: refused, not trusted
        return Refused("UNAUTHENTICATED", f"{rule.what}: no caller was named for this request (an internal "
                                          "path that skipped authentication)")
    if not caller.tokens:
        return None
    principal = caller.principal
    if principal is None:
        return Refused("UNAUTHENTICATED", "a token is required: send `authorization: Bearer <token>` "
                                          "(or X-Authorization on HTTP)")
    if not principal.may(rule.role):
        return Refused("PERMISSION_DENIED", f"{principal.name} ({', '.join(sorted(principal.roles))}) may not "
                                            f"call {rule.what}: it needs the {rule.role} role")
    if principal.namespace is not None:
        if rule.cluster_wide:
            return Refused("PERMISSION_DENIED", f"{rule.what} acts on the whole cluster, every namespace at once; "
                                                f"{principal.name} is confined to namespace "
                                                f"'{principal.namespace or '(default)'}' and may not")
        if _NAMESPACE.get() != principal.namespace:
            return Refused("PERMISSION_DENIED", f"{principal.name} may act only in namespace "
                                                f"'{principal.namespace or '(default)'}', not in "
                                                f"'{_NAMESPACE.get() or '(default)'}'")
    return None


def authorize(rule: Rule) -> None:
    """Raise Refused unless the request being handled may do what `rule` guards."""
    refused = refusal(rule)
    if refused is not None:
        raise refused


def allowed(method: str) -> None:
    """Raise Refused unless the request being handled may call use case "Service/Method": the
    first statement of every service call."""
    authorize(rule_of(method))


def with_rule(endpoint: Any, rule: Rule) -> Any:
    """Mark an HTTP route's endpoint with the rule it checks (the app refuses to be built with a
    route that carries none: `rule_marked`)."""
    endpoint._rule = rule
    return endpoint


def rule_marked(endpoint: Any) -> Rule | None:
    """The rule an endpoint was marked with (`with_rule`); None for one that checks nothing."""
    rule = getattr(endpoint, "_rule", None)
    return rule if isinstance(rule, Rule) else None


def request_namespace() -> str:
    """The namespace the request being handled acts in ("" = the default one)."""
    return _NAMESPACE.get()


def seen_here(stored_name: str) -> bool:
    """Whether what is stored under this (qualified) name belongs to the request's namespace."""
    return namespace_of(stored_name) == _NAMESPACE.get()


def task_acts_in(namespace: str) -> None:
    """The rest of the running task (one call's or one request's own) acts in `namespace`."""
    _NAMESPACE.set(namespace)


@contextmanager
def acting_in(namespace: str) -> Iterator[None]:
    """Handle what runs inside as a request of `namespace`."""
    token = _NAMESPACE.set(namespace)
    try:
        yield
    finally:
        _NAMESPACE.reset(token)
