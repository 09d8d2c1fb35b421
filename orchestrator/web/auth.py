"""Tokens on the HTTP port: the console, /metrics and Conductor's REST API under /api.

An ASGI middleware in front of the whole app: it finds the token (`Authorization: Bearer`,
Conductor's `X-Authorization`, or the console's cookie set by /login), decides the role the
request needs from its method and path, and refuses before the route runs: 401 (no or unknown
token; the console redirects a browser to /login instead) or 403. Open: /healthz, /static,
/favicon.ico, /login and Conductor's /api/token exchange. The principal is left in the ASGI scope
(`scope["principal"]`) for routes that check more (a polling worker's task type).

The same gate settles the namespace the request acts in (header `X-Namespace`, limited by a
confined token: `core.auth.namespace_for`; 400 / 403 otherwise) and runs the route in it
(`handlers.acting_in`). Without a tokens file it does only that.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.auth import Principal, Tokens, namespace_for
from ..handlers import acting_in

COOKIE = "orchestrator_token"
_WRITE = ("POST", "PUT", "PATCH", "DELETE")


def _open(path: str) -> bool:
    return path in ("/healthz", "/login", "/api/token", "/favicon.ico") or path.startswith("/static/")


def needed_role(method: str, path: str) -> str:
    """The role a request needs (see core/auth.py for what each role is)."""
    if path.startswith("/api/metadata"):
        return "admin" if method in _WRITE else "reader"
    if path.startswith("/cluster/") and method in _WRITE:
        return "admin"   # the cluster's membership, as stepping the leader down
    if path.startswith("/api/tasks"):
        if method == "POST" and len(path.rstrip("/").split("/")) == 6:   # /api/tasks/{workflow}/{ref}/{status}
            return "operator"   # completes whichever attempt runs: an operator's act, as a signal is
        return "reader" if method == "GET" and not path.startswith("/api/tasks/poll") else "worker"
    return "operator" if method in _WRITE else "reader"   # workflows and console pages: read, or operate


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def presented_token(scope: Scope) -> str:
    headers = _headers(scope)
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    if headers.get("x-authorization"):
        return headers["x-authorization"].strip()
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value.strip()
    return ""


class TokenGate:
    """`tokens` None: a node without authentication (only the namespace is settled)."""

    def __init__(self, app: ASGIApp, tokens: Tokens | None) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _open(scope["path"]):
            await self.app(scope, receive, send)
            return
        principal: Principal | None = None
        if self.tokens is not None:
            principal = self.tokens.find(presented_token(scope))
            role = needed_role(scope["method"], scope["path"])
            if principal is None:
                await self._unauthenticated(scope, send)
                return
            if not principal.may(role):
                await _reply(send, 403, {"status": 403, "message": f"{principal.name} may not do this: it needs "
                                                                    f"the {role} role", "error": "PERMISSION_DENIED"})
                return
            if principal.namespace is not None and scope["path"] == "/metrics":
                await _reply(send, 403, {"status": 403, "message": "/metrics is the cluster's (every namespace's "
                                                                    "task types); a token confined to a namespace "
                                                                    "may not read it", "error": "PERMISSION_DENIED"})
                return
            scope["principal"] = principal
        try:
            namespace = namespace_for(principal, _headers(scope).get("x-namespace", "").strip())
        except ValueError as exc:
            await _reply(send, 400, {"status": 400, "message": str(exc), "error": "INVALID_ARGUMENT"})
            return
        except PermissionError as exc:
            await _reply(send, 403, {"status": 403, "message": str(exc), "error": "PERMISSION_DENIED"})
            return
        with acting_in(namespace):
            await self.app(scope, receive, send)

    async def _unauthenticated(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if not path.startswith("/api/") and path != "/metrics" and scope["method"] == "GET":
            target = path + (("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else "")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", f"/login?next={quote(target, safe='')}".encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        await _reply(send, 401, {"status": 401, "message": "a token is required: Authorization: Bearer <token> "
                                                           "(or X-Authorization)", "error": "INVALID_TOKEN"})


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
