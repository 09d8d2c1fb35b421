"""Conductor's REST API, the part its SDKs use, served under /api on every node's HTTP port.

Conductor users keep their SDK workers and clients: conductor-python's `TaskHandler` polls and
updates tasks here, its clients register definitions and start, read, search and operate
workflows. Every route runs through the same handlers and atomic store calls as the gRPC API,
so a task polled here and a task pushed to a gRPC worker come from one queue, and any node
answers for the whole cluster. What differs from Conductor, and why, is in the README.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from . import metadata, tasks, workflows
from .common import RestParts, refuse

__all__ = ["RestParts", "conductor_api"]


async def _token(request: Request) -> Response:
    """conductor-python asks for a token when given a key and secret; a 404 here is how a
    Conductor server says it runs without authentication, and the SDK then sends none."""
    return refuse(404, "this cluster issues no tokens: its Conductor API runs without authentication")


def conductor_api(parts: RestParts) -> list[BaseRoute]:
    return [Mount("/api", routes=[Route("/token", _token, methods=["POST"]), *metadata.routes(parts),
                                  *workflows.routes(parts), *tasks.routes(parts)])]
