"""Every door into a node asks what gRPC asks (issue 22, items 1 and 7), in-process, with no door
at all: each handler refuses a caller its method's role does not cover, a caller confined to
another namespace, and a call that says nobody's name; and every route of the HTTP port
(enumerated from the Starlette app) is in tests/roles_table.py, so a new route cannot be
forgotten. The same table walked on a real node with tokens:
tests/integration/security/test_roles_every_path.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from orchestrator.core.auth import Principal
import unwired
from roles_table import CONSOLE, REST, ROLE_OF, SERVICES, may
from unwired import refusal_of


async def _answer(servicer: Any, method: Any) -> str:
    """The status a handler answers an empty request with ("" when it ran and answered)."""
    try:
        return await refusal_of(servicer, method)
    except Exception as exc:   # what a handler does with None for its store, once it was let through
        return type(exc).__name__


def test_each_handler_enforces_the_table_whoever_calls_it() -> None:
    """No door at all: the handlers the console and the Conductor API call in-process refuse by
    the same table, so a path that forgets to check cannot skip it."""
    from orchestrator.service.access import acting_in, calling_as

    async def walk() -> list[str]:
        wrong = []
        servicers = unwired.servicers()
        for service_name, service in SERVICES.items():
            for method in service.methods:
                where = f"{service_name}/{method.name}"
                nobody = await _answer(servicers[service_name], method)
                if nobody != "UNAUTHENTICATED":
                    wrong.append(f"{where} with no caller: {nobody or 'answered'}")
                for who in ROLE_OF:
                    principal = Principal(who, frozenset({ROLE_OF[who]}),
                                          namespace="team-a" if who == "confined_admin" else None)
                    namespace = principal.namespace or ""
                    with acting_in(namespace), calling_as(principal, tokens=True):
                        got = await _answer(servicers[service_name], method)
                    refused = got in ("PERMISSION_DENIED", "UNAUTHENTICATED")
                    if refused == may(who, where):
                        wrong.append(f"{where} as {who}: {got or 'answered'}")
                    if who == "confined_admin":   # the same token, acting in another namespace
                        with acting_in("team-b"), calling_as(principal, tokens=True):
                            got = await _answer(servicers[service_name], method)
                        if got != "PERMISSION_DENIED":
                            wrong.append(f"{where} as {who} in team-b: {got or 'answered'}")
                with calling_as(None, tokens=False):   # a node without tokens: anyone, anything
                    got = await _answer(servicers[service_name], method)
                if got in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                    wrong.append(f"{where} on an open node: {got}")
        return wrong

    assert asyncio.run(walk()) == []


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the node's HTTP port serves, read from the app it builds."""
    from starlette.routing import Mount, Route

    from orchestrator.rest import RestParts, conductor_api
    from orchestrator.web import build_app
    rest = conductor_api(RestParts(workflows=None, tasks=None, metadata=None,  # type: ignore[arg-type]  # routes only
                                   limit=unwired.LIMIT))
    gate = build_app(SimpleNamespace(node_id="n"), rest, tokens=None)  # type: ignore[arg-type]  # a stand-in node
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount) and route.routes:
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Mount):
                found.append(("GET", prefix + route.path))   # static files
            elif isinstance(route, Route):
                found.extend((method, prefix + route.path) for method in sorted(route.methods or {"GET"})
                             if method != "HEAD")
    app: Any = gate   # each middleware holds the next in .app, down to the Starlette app's routes
    while not hasattr(app, "routes"):
        app = app.app
    walk(app.routes, "")
    return found


def test_every_route_of_the_http_port_is_walked() -> None:
    """A route tests/roles_table.py does not know is a route nobody checked: it fails here until it is added
    to REST or CONSOLE with the gRPC methods it stands for."""
    served = set(app_routes())
    known = set(REST) | set(CONSOLE)
    assert served - known == set(), "routes nobody walked"
    assert known - served == set(), "walked routes the node does not serve"
