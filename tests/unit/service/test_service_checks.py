"""Every door reaches a service call that checks the caller itself (issue 20).

The doors check first (the gRPC interceptor, each HTTP route's `guarded`/`guard`), but no door is
trusted to: each service call checks the caller by the one table (`service.access.allowed`). Here
the doors' own checks are switched off, every gRPC method, every Conductor route and every console
route (the cluster page, /metrics and forgetting a member too) is called by a caller too weak for
it (or by nobody), and each must be refused by a service's check: one records every check a service makes, and the
request must have been refused by one of them, for the use case the route stands for. A route that
reaches no checking service call, or one that checks another use case, fails here.

The routes are read from the app the node builds, so a new route is walked without being listed;
the few that call no service are listed below with why (each answers the same to everyone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from orchestrator.core.auth import Principal, Tokens
from orchestrator.service import NodeOverview, access
from orchestrator.service.access import METHOD_ROLES, Rule, acting_in, rule_of
from orchestrator.service.errors import Refused
from orchestrator_api.v1 import orchestrator_pb2 as pb

import unwired
from unwired import LIMIT, refusal_of

WEAKEST = {"admin": "operator", "operator": "reader", "reader": "worker", "worker": "reader"}
TOKENS = {role: f"checks-{role}-token-0123456789" for role in ("admin", "operator", "reader", "worker")}
# Routes that call no service, and why that is right: each answers the same to everyone who passes
# its door, reading and changing nothing.
NO_SERVICE = {
    ("GET", "/"): "a redirect to /cluster",
    ("GET", "/api/tasks/{task_id}"): "501: tasks are looked up through their workflow",
    ("DELETE", "/api/metadata/workflow/{name}/{version}"): "405: definitions are never removed",
    ("DELETE", "/api/metadata/taskdefs/{name}"): "405: definitions are never removed",
}


@dataclass
class Checks:
    """What the services checked during one request: (use case, refused)."""

    made: list[tuple[str, bool]] = field(default_factory=list)

    def refused(self) -> list[str]:
        return [what for what, refused in self.made if refused]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Checks]:
    """Every check a service makes is recorded; the HTTP doors' own checks let everyone through."""
    record = Checks()
    real = access.authorize

    def authorize(rule: Rule) -> None:
        try:
            real(rule)
        except Refused:
            record.made.append((rule.what, True))
            raise
        record.made.append((rule.what, False))
    monkeypatch.setattr(access, "authorize", authorize)
    from orchestrator.rest import common
    from orchestrator.web import app
    monkeypatch.setattr(common, "refusal", lambda rule: None)
    monkeypatch.setattr(app, "refusal", lambda rule: None)
    yield record


# ---------------------------------------------------------------- gRPC

def test_every_grpc_method_is_refused_by_the_service_it_calls(checks: Checks) -> None:
    """No interceptor at all, no caller named: each method is refused by its own use case's check."""
    async def walk() -> list[str]:
        wrong = []
        servicers = unwired.servicers()
        for service_descriptor in pb.DESCRIPTOR.services_by_name.values():
            for method in service_descriptor.methods:
                checks.made.clear()
                got = await refusal_of(servicers[service_descriptor.name], method)
                if got != "UNAUTHENTICATED" or checks.refused() != [method.name]:
                    wrong.append(f"{service_descriptor.name}/{method.name}: {got or 'answered'}, "
                                 f"services refused {checks.refused()}")
        return wrong
    assert asyncio.run(walk()) == []


def test_the_table_names_every_grpc_method() -> None:
    declared = {f"{s.name}/{m.name}" for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods}
    listed = {f"{s}/{m}" for s, methods in METHOD_ROLES.items() for m in methods}
    assert declared == listed


# ---------------------------------------------------------------- HTTP: the Conductor API and the console

def _app() -> Any:
    from orchestrator.rest import RestParts, conductor_api
    from orchestrator.web import build_app
    services = unwired.services()
    rest = conductor_api(RestParts(workflows=services["workflows"], tasks=services["tasks"],
                                   metadata=services["metadata"], limit=LIMIT))
    parts = SimpleNamespace(node_id="n", cluster="c", grpc_address="", workflows=services["workflows"],
                            metadata=services["metadata"], overview=NodeOverview(None))  # type: ignore[arg-type]
    tokens = Tokens.from_document({"tokens": [{"name": role, "roles": [role], "token": token}
                                              for role, token in TOKENS.items()]})
    return build_app(parts, rest, tokens=tokens)  # type: ignore[arg-type]  # parts: a stand-in, what the app reads


def _routes(app: Any) -> list[tuple[str, str, Rule]]:
    """(method, path, the rule its door checks) of every route the HTTP port serves."""
    from starlette.routing import Mount, Route
    found: list[tuple[str, str, Rule]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount) and route.routes:
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                rule = access.rule_marked(route.endpoint)
                assert rule is not None, route.path
                found.extend((method, prefix + route.path, rule) for method in sorted(route.methods or {"GET"})
                             if method != "HEAD")
    while not hasattr(app, "routes"):
        app = app.app
    walk(app.routes, "")
    return found


FILL = {"{workflow_id}": "wf-1", "{name}": "flow", "{version}": "1", "{version:int}": "1", "{ref}": "wait",
        "{status}": "COMPLETED", "{task_type}": "work", "{task_id}": "task-1", "{node_id}": "gone"}
BODIES: dict[str, Any] = {
    "/api/metadata/workflow": {"name": "flow", "tasks": [{"name": "work", "taskReferenceName": "w"}]},
    "/api/metadata/taskdefs": [{"name": "work"}],
    "/api/workflow": {"name": "flow", "input": {}},
    "/api/tasks": {"taskId": "t", "workflowInstanceId": "wf-1", "workerId": "w", "status": "COMPLETED"},
    "/api/tasks/update-v2": {"taskId": "t", "workflowInstanceId": "wf-1", "workerId": "w", "status": "COMPLETED"},
}


def _requests(method: str, template: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, httpx keyword arguments) of the requests that walk a route."""
    path = template
    for key, value in FILL.items():
        path = path.replace(key, value)
    if template == "/executions/{workflow_id}/{op}":
        from orchestrator.web.operations import OPERATIONS
        return [(path.replace("{op}", op), {"data": {"output": "{}", "task": "wait"}}) for op in OPERATIONS]
    if template == "/executions/{workflow_id}/confirm/{op}":
        return [(path.replace("{op}", "pause"), {})]
    if method in ("POST", "PUT") and template.startswith("/api/"):
        body = BODIES.get(template, {})
        if template == "/api/metadata/workflow" and method == "PUT":
            body = [body]
        return [(path, {"json": body})]
    if method == "POST":
        return [(path, {"data": {"input": "{}"}})]
    return [(path, {})]


def _weaker_than(rule: Rule) -> str:
    """A role that may not do what `rule` guards."""
    assert rule.role is not None
    return WEAKEST[rule.role]


def test_every_http_route_is_refused_by_the_service_it_calls(checks: Checks) -> None:
    """The routes' own checks switched off, a caller too weak for each route is refused by a
    service call the route makes, and nothing is answered but a refusal."""
    app = _app()

    async def walk() -> list[str]:
        wrong = []
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)   # a bug answers 500
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            for method, template, rule in _routes(app):
                if rule.role is None or (method, template) in NO_SERVICE:
                    continue
                token = TOKENS[_weaker_than(rule)]
                for path, arguments in _requests(method, template):
                    checks.made.clear()
                    form = "data" in arguments
                    if form:   # a console form carries its session's token
                        page = await client.get("/login")
                        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                        arguments = {"data": {**arguments["data"], "csrf": csrf}}
                    headers = {"Authorization": f"Bearer {token}"}
                    answer = await client.request(method, path, headers=headers, **arguments)
                    refused = checks.refused()
                    if answer.status_code < 400 or not refused:   # (a page may fail after the refusal:
                        # the services run on no store here, and a refused form re-renders its page)
                        wrong.append(f"{method} {path}: {answer.status_code}, services refused {refused}")
        return wrong
    assert asyncio.run(walk()) == []


def test_the_routes_left_out_of_the_walk_are_still_served() -> None:
    """NO_SERVICE names routes the node serves (a renamed route is walked, not skipped)."""
    app = _app()
    served = {(method, path) for method, path, _ in _routes(app)}
    assert served >= set(NO_SERVICE)


def test_a_service_call_with_no_caller_named_is_refused() -> None:
    """A path into the services that said nobody's name (no door at all) is refused, not trusted."""
    workflows = unwired.services()["workflows"]
    with pytest.raises(Refused) as refused:
        asyncio.run(workflows.pause("wf-1"))
    assert refused.value.code == "UNAUTHENTICATED"
    with acting_in("team-a"), access.calling_as(Principal("a", frozenset({"admin"}), namespace="team-b"),
                                                tokens=True):
        with pytest.raises(Refused) as elsewhere:
            asyncio.run(workflows.pause("wf-1"))
    assert elsewhere.value.code == "PERMISSION_DENIED"
    assert rule_of("WorkflowService/PauseWorkflow").role == "operator"
