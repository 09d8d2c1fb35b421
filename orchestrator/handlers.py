"""Kept only for `orchestrator node` (cli.py imports `serving_as` from here): the services
(orchestrator/service) replaced the in-process calls of the gRPC handlers this module served.
Delete it once cli.py imports `orchestrator.service.errors.serving_as`."""

from __future__ import annotations

from .service.errors import serving_as

__all__ = ["serving_as"]
