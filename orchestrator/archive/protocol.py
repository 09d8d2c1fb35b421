"""What the node asks of an archive of finished workflows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ArchivedPage:
    workflows: list[dict[str, Any]]   # archived records, newest end first
    next_cursor: str | None


class Archive(Protocol):
    async def put(self, records: list[dict[str, Any]]) -> None:
        """Store finished workflows (each a record with at least `workflow_id`, `name`, `status`,
        `correlation_id`, `created_at_ms` and `ended_at_ms`). Durable when it returns; storing a
        record twice is harmless (the later copy wins when found)."""

    async def get(self, workflow_id: str) -> dict[str, Any] | None:
        """The archived record of `workflow_id`, or None."""

    async def search(self, *, name: str, status: str, correlation_id: str, created_from_ms: int,
                     created_to_ms: int, cursor: str, limit: int, text: str = "", namespace: str = "") -> ArchivedPage:
        """Archived workflows of `namespace` matching every filter given (`name` qualified, as
        stored), newest first, paged by an opaque cursor."""
