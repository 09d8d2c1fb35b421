"""The web console and /metrics, served by every node on an HTTP port of its own.

At the same level as `orchestrator.api`: it reads and writes only through the services
(orchestrator/service) the node hands to it, the ones the gRPC API runs on, and renders what
they answer.
`app.build_app` makes the Starlette app; `server.ConsoleServer` runs it with uvicorn on the
node's own event loop.
"""

from .app import build_app
from .parts import ConsoleParts
from .server import ConsoleServer

__all__ = ["ConsoleParts", "ConsoleServer", "build_app"]
