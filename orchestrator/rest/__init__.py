"""Conductor's REST API, the part its SDKs use, served under /api on every node's HTTP port.

Conductor users keep their SDK workers and clients: conductor-python's `TaskHandler` polls and
updates tasks here, its clients register definitions and start, read, search and operate
workflows. Every route runs through the same services and atomic store calls as the gRPC API,
so a task polled here and a task pushed to a gRPC worker come from one queue, and any node
answers for the whole cluster. What differs from Conductor, and why, is in the README.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount

from ..service.access import OPEN
from ..service.errors import Refused
from . import metadata, tasks, workflows
from .common import RestParts, body_bytes, guarded, refuse, route

__all__ = ["RestParts", "conductor_api"]

MAX_TOKEN_REQUEST_BYTES = 16 * 1024   # a key id and a secret


@guarded(OPEN)
async def token(parts: RestParts, request: Request) -> Response:
    """conductor-python exchanges a key id and secret for the token it then sends as
    X-Authorization: here the key id is a token's name and the secret the token itself. Without
    tokens, a 404 is how a Conductor server says it runs open, and the SDK then sends none."""
    if parts.tokens is None:
        return refuse(404, "this cluster issues no tokens: its Conductor API runs without authentication")
    try:   # read before anyone is known: capped (the gate caps it too)
        body = json.loads(await body_bytes(request, MAX_TOKEN_REQUEST_BYTES) or b"{}")
    except Refused as exc:
        return refuse(exc.http_status, exc.message)
    except ValueError:
        body = {}
    key, secret = (str(body.get(k) or "") if isinstance(body, dict) else "" for k in ("keyId", "keySecret"))
    if parts.tokens.named(key, secret) is None:
        return JSONResponse({"status": 401, "message": "unknown key id or secret", "error": "INVALID_TOKEN"},
                            status_code=401)
    return JSONResponse({"token": secret})


def conductor_api(parts: RestParts) -> list[BaseRoute]:
    return [Mount("/api", routes=[route(parts, "/token", token, ["POST"]), *metadata.routes(parts),
                                  *workflows.routes(parts), *tasks.routes(parts)])]
