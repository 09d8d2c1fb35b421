"""What every route of the Conductor REST API shares: the node's parts it runs on, reading
query strings and bodies the way Conductor's clients write them, and errors as JSON.

The routes call the services (orchestrator/service), as the gRPC API and the console do, so a
request is validated, stored and decided exactly as it would be through gRPC; a refusal comes
back with the API's status mapped to HTTP and Conductor's error body (`status`, `message`).

Each route is a module-level handler of the node's parts and the request (`Handler`), bound to the
parts when the routes are built (`route`). It follows the rule of the gRPC method it stands for
(`guarded`), checked before it reads its body; the services it calls check theirs again (a start
that carries a definition registers it, which needs what RegisterWorkflowDef needs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.auth import Tokens
from ..core.errors import OrchestratorError
from ..core.payloads import PayloadLimit
from ..service.access import Rule, refusal, rule_marked, rule_of, with_rule
from ..service.errors import Refused, internal_error, refused
from ..service.http import bounded_body
from ..service.metadata import Metadata
from ..service.tasks import Tasks
from ..service.workflows import Workflows
from ..store import StoreUnavailable

log = logging.getLogger(__name__)

ABSENT = ("", "None", "null")   # conductor-python writes a missing query value as "None" on POST, "" on GET


@dataclass
class RestParts:
    """The node's parts the REST API runs on (handed over by `orchestrator.node`)."""

    workflows: Workflows
    tasks: Tasks
    metadata: Metadata
    limit: PayloadLimit
    tokens: Tokens | None = None      # None: the node runs without authentication


# What a retry of the same request can fix: the node or what it needs was busy or away for a moment
# (the store or etcd did not answer: 503; a gateway's 502 and 504), a timeout (408), a rate limit
# (429), a conflict with a concurrent change (ABORTED). Not: a refusal (4xx: the request or the
# target's state does not allow it, and the same request gets the same answer), what is not served
# (501) or a fault of the node (500), which Conductor's SDKs would otherwise repeat for as long as
# they retry.
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
RETRYABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED"})


def refuse(status: int, message: str, *, retryable: bool | None = None) -> JSONResponse:
    """Conductor's error body; `retryable` follows from the status unless given."""
    retry = status in RETRYABLE_STATUSES if retryable is None else retryable
    return JSONResponse({"status": status, "message": message, "retryable": retry}, status_code=status)


Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[RestParts, Request], Awaitable[Response]]


def answering_errors(handler: Handler) -> Handler:
    """Refusals and an unreachable store as Conductor's error bodies; never a stack trace."""
    async def wrapped(parts: RestParts, request: Request) -> Response:
        try:
            return await handler(parts, request)
        except (Refused, OrchestratorError) as exc:   # a core error as the API names it
            refusal = refused(exc)
            return refuse(refusal.http_status, refusal.message, retryable=refusal.code in RETRYABLE_CODES)
        except StoreUnavailable as exc:
            return refuse(503, f"the state store is unavailable ({exc}); retry")
        except Exception as exc:   # a bug: logged with its trace, answered in Conductor's shape, nothing else hurt
            log.exception("%s %s failed", request.method, request.url.path)
            return refuse(500, internal_error(type(exc).__name__))
    wrapped.__name__ = handler.__name__
    return wrapped


def guarded(rule: Rule | str) -> Callable[[Handler], Handler]:
    """A handler that refuses, before it reads anything, a caller `rule` does not allow: a Rule, or
    the gRPC method ("Service/Method") whose rule it follows."""
    wanted = rule_of(rule) if isinstance(rule, str) else rule

    def decorate(handler: Handler) -> Handler:
        async def checked(parts: RestParts, request: Request) -> Response:
            refused = refusal(wanted)
            if refused is not None:
                return refuse(refused.http_status, refused.message, retryable=False)
            return await handler(parts, request)
        checked.__name__ = handler.__name__
        return with_rule(checked, wanted)  # type: ignore[no-any-return]
    return decorate


def route(parts: RestParts, path: str, handler: Handler, methods: list[str]) -> Route:
    """A route serving `handler` with the node's `parts` (marked with the rule the handler checks)."""
    async def endpoint(request: Request) -> Response:
        return await handler(parts, request)
    endpoint.__name__ = handler.__name__
    rule = rule_marked(handler)
    return Route(path, with_rule(endpoint, rule) if rule is not None else endpoint, methods=methods)


def flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name, "")
    if value in ABSENT:
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise Refused("INVALID_ARGUMENT", f"query parameter {name} must be true or false, got {value[:40]!r}")


def text(request: Request, name: str, default: str = "") -> str:
    value = request.query_params.get(name, "")
    return default if value in ABSENT else value


def number(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = text(request, name)
    if not value:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise Refused("INVALID_ARGUMENT",
                      f"query parameter {name} must be a whole number, got {value[:40]!r}") from None
    if not low <= parsed <= high:
        raise Refused("INVALID_ARGUMENT", f"query parameter {name} must be from {low} to {high}, got {parsed}")
    return parsed


async def body_bytes(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) past `max_bytes` without reading the rest."""
    return await bounded_body(request.headers.get("content-length", ""), request.stream(), max_bytes,
                              "the request body")


async def json_body(request: Request, max_bytes: int, what: str, *, empty: Any = None) -> Any:
    raw = await body_bytes(request, max_bytes)
    if not raw.strip():
        if empty is None:
            raise Refused("INVALID_ARGUMENT", f"the request body must be {what}")
        return empty
    try:
        return json.loads(raw)
    except RecursionError:
        raise Refused("INVALID_ARGUMENT", "the request body is nested too deeply") from None
    except ValueError as exc:
        raise Refused("INVALID_ARGUMENT", f"the request body is not valid JSON ({exc}); it must be {what}") from None


def object_body(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refused("INVALID_ARGUMENT", f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def plain(value: str) -> Response:
    return Response(value, media_type="text/plain")
