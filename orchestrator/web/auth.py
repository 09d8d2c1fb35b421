"""Tokens on the HTTP port: the console, /metrics and Conductor's REST API under /api.

An ASGI middleware in front of the whole app. It finds the token (`Authorization: Bearer`,
Conductor's `X-Authorization`, or, outside /api, the console's cookie set by /login) and refuses
a request without a known one before the route runs: 401 (a browser asking for a console page is
sent to /login instead). Open: /healthz, /static, /favicon.ico, /login, /logout and Conductor's
/api/token exchange. What a known caller may do is not decided here but by the rule of each
route (the gRPC method it stands for, `service.access.Rule`), checked by the route before it
reads anything, and again by the service it calls (`service.access.allowed`); the caller is handed
on for that (`service.access.calling_as`) and left in the ASGI scope (`scope["principal"]`) for
routes that check more (a polling worker's task type).

The same gate settles the namespace the request acts in (header `X-Namespace`, limited by a
confined token: `core.auth.namespace_for`; 400 / 403 otherwise) and runs the route in it
(`service.access.acting_in`). Without a tokens file it does only that (and what follows).

Before anyone is known, bodies are capped: the open routes' bodies are read here, at most
OPEN_BODY_BYTES (413 past it, declared or not: a chunked upload has no Content-Length), and a
request that needs a token and has none is refused without reading its body at all.

The console's sessions (`Sessions`): each browser gets a random session id in an HttpOnly,
SameSite=Strict cookie, and its forms carry a token derived from that id (an HMAC under a key of
this process), so a form token is good for one browser session only, and the open login page
shows only the visitor's own. /api never takes the console's cookie: a program sends its token in
a header, which no other site can make a browser add, so a page elsewhere cannot make a
signed-in browser call the API (a "simple" cross-site POST of text/plain JSON needed nothing more).
Every answer carries X-Frame-Options, a Content-Security-Policy, nosniff and a Referrer-Policy;
pages are not cached. Cookies are Secure when the node serves https, or when
`console_secure_cookies` says a TLS-terminating proxy does.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import json
import secrets
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.auth import Principal, Tokens, namespace_for
from ..service.access import acting_in, calling_as

COOKIE = "orchestrator_token"
SESSION_COOKIE = "orchestrator_session"
OPEN_PATHS = ("/healthz", "/login", "/logout", "/api/token", "/favicon.ico")
OPEN_BODY_BYTES = 64 * 1024   # a sign-in form or a key exchange; read before anyone is known
# After refusing a body, what more is read (and dropped) before the connection is closed, so that
# the refusal reaches the client: closed with unread data, the connection is reset, and the reset
# can beat the answer (nginx's "lingering close"). Nothing of it is kept.
LINGER_BYTES = 4 * 1024 * 1024
LINGER_S = 1.0
SESSION_ID_CHARS = 32
SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                 b"frame-ancestors 'none'"),
)
_SESSIONLESS = ("/healthz", "/metrics", "/favicon.ico")

_FORM_TOKEN: contextvars.ContextVar[str] = contextvars.ContextVar("form_token", default="")


def form_token() -> str:
    """The form token of the browser session the request being handled belongs to ("" outside one)."""
    return _FORM_TOKEN.get()


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


def _api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookie(scope: Scope, name: str) -> str:
    for part in _headers(scope).get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    return ""


def presented_token(scope: Scope) -> str:
    """The token a request carries: a header, or (outside /api) the console's cookie."""
    headers = _headers(scope)
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    if headers.get("x-authorization"):
        return headers["x-authorization"].strip()
    if _api(scope["path"]):
        return ""   # the console's cookie is the console's: see the module's notes
    value = _cookie(scope, COOKIE)
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


class Sessions:
    """The console's browser sessions: ids, the form token of each, and their cookies."""

    def __init__(self, secure_cookies: bool = False) -> None:
        self._key = secrets.token_bytes(32)
        self.secure_cookies = secure_cookies

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(24)[:SESSION_ID_CHARS]

    @staticmethod
    def valid(session_id: str) -> bool:
        return len(session_id) == SESSION_ID_CHARS and all(c.isalnum() or c in "-_" for c in session_id)

    def form_token(self, session_id: str) -> str:
        digest = hmac.new(self._key, b"form:" + session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def secure(self, scope: Scope) -> bool:
        return self.secure_cookies or scope.get("scheme") == "https"

    def cookie(self, scope: Scope, name: str, value: str, *, forget: bool = False) -> bytes:
        """A Set-Cookie value: HttpOnly, SameSite=Strict, for the whole site; `forget` removes it."""
        parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if forget:
            parts += ["Max-Age=0", "Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
        if self.secure(scope):
            parts.append("Secure")
        return "; ".join(parts).encode("latin-1")


class TokenGate:
    """`tokens` None: a node without authentication (the namespace is settled, bodies of the open
    routes capped, sessions and headers given all the same)."""

    def __init__(self, app: ASGIApp, tokens: Tokens | None, sessions: Sessions | None = None) -> None:
        self.app = app
        self.tokens = tokens
        self.sessions = sessions or Sessions()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        new_session = ""
        session_id = _cookie(scope, SESSION_COOKIE)
        if not _api(path) and not self.sessions.valid(session_id):
            session_id = ""
            if path not in _SESSIONLESS and not path.startswith("/static/"):
                session_id = new_session = self.sessions.new_id()
        scope["session"] = session_id
        send = self._answering(scope, send, new_session)
        principal: Principal | None = None
        if self.tokens is not None:
            principal = self.tokens.find(presented_token(scope))
            if principal is None and not _open(path):
                await self._unauthenticated(scope, receive, send)
                return
            if principal is not None:
                scope["principal"] = principal
        if _open(path):
            replay = await _capped_body(scope, receive, send, OPEN_BODY_BYTES)
            if replay is None:
                return
            receive = replay
        try:
            namespace = namespace_for(principal, _headers(scope).get("x-namespace", "").strip())
        except ValueError as exc:
            await _reply(send, 400, {"status": 400, "message": str(exc), "error": "INVALID_ARGUMENT"})
            return
        except PermissionError as exc:
            await _reply(send, 403, {"status": 403, "message": str(exc), "error": "PERMISSION_DENIED"})
            return
        form = _FORM_TOKEN.set(self.sessions.form_token(session_id) if session_id else "")
        try:
            with acting_in(namespace), calling_as(principal, tokens=self.tokens is not None):
                await self.app(scope, receive, send)
        finally:
            _FORM_TOKEN.reset(form)

    def _answering(self, scope: Scope, send: Send, new_session: str) -> Send:
        """`send`, adding the security headers (and a new session's cookie) to the answer's head."""
        static = scope["path"].startswith("/static/") or scope["path"] == "/favicon.ico"

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in SECURITY_HEADERS if name not in names]
                if b"cache-control" not in names and not static:
                    headers.append((b"cache-control", b"no-store"))
                sets_session = any(name.lower() == b"set-cookie" and value.startswith(SESSION_COOKIE.encode() + b"=")
                                   for name, value in headers)
                if new_session and not sets_session:
                    headers.append((b"set-cookie", self.sessions.cookie(scope, SESSION_COOKIE, new_session)))
                message = {**message, "headers": headers}
            await send(message)
        return answer

    async def _unauthenticated(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if not _api(path) and path != "/metrics" and scope["method"] == "GET":
            target = path + (("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else "")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", f"/login?next={quote(target, safe='')}".encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        refusal = {"status": 401, "message": "a token is required: Authorization: Bearer <token> (or X-Authorization)",
                   "error": "INVALID_TOKEN"}
        if _has_body(scope):   # refused unread: what follows is dropped, not read into anything
            await _refuse_body(receive, send, 401, refusal)
        else:
            await _reply(send, 401, refusal)


def _has_body(scope: Scope) -> bool:
    headers = _headers(scope)
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


async def _capped_body(scope: Scope, receive: Receive, send: Send, limit: int) -> Receive | None:
    """Read the request's body here, at most `limit` bytes, and hand a `receive` that replays it;
    None once a 413 was answered (the rest is never read: the connection is closed)."""
    declared = _headers(scope).get("content-length", "")
    too_large = {"status": 413, "message": f"the request body is larger than {limit} bytes", "error": "TOO_LARGE"}
    if declared.isdigit() and int(declared) > limit:
        await _refuse_body(receive, send, 413, too_large)
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":   # the client left: the app hears it as it would have
            pending: list[Message] = [message]
            break
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            await _refuse_body(receive, send, 413, too_large)
            return None
        chunks.append(body)
        if not message.get("more_body", False):
            pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
            break

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()
    return replay


async def _reply(send: Send, status: int, body: dict[str, Any], *, close: bool = False, more: bool = False) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _refuse_body(receive: Receive, send: Send, status: int, body: dict[str, Any]) -> None:
    """Answer `status` to a request whose body is not wanted, then close its connection once the
    client had the answer: what it goes on sending meanwhile is dropped, at most LINGER_BYTES for
    at most LINGER_S (see LINGER_BYTES)."""
    await _reply(send, status, body, close=True, more=True)
    loop = asyncio.get_running_loop()
    deadline, dropped = loop.time() + LINGER_S, 0
    while dropped <= LINGER_BYTES and (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            break
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
        dropped += len(message.get("body", b""))
    await send({"type": "http.response.body", "body": b"", "more_body": False})
