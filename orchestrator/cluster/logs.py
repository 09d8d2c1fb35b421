"""A node's log lines: text (the default) or JSON, one object per line (`log_format: json`).

A JSON line has `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message` and
`node`; `workflow_id`, `task_id` and `epoch` when known, and `exception` with the traceback
when there is one. What is known comes from the log call (`extra={"workflow_id": ...}`) or
from the context the code runs in (`log_fields(...)`: a context variable, so it follows
asyncio tasks created inside it, such as the leader's clocks, which carry their epoch).
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
FIELDS = ("workflow_id", "task_id", "epoch")

_fields: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar("orchestrator_log_fields",
                                                                                      default=())


class log_fields:   # named as the function it replaced: `with log_fields(workflow_id=...)`
    """Log lines written inside this block (and by asyncio tasks created in it) carry `fields`.

    A class, not a @contextmanager generator: every decision of a node runs in one, and the
    generator's machinery cost more than the fields themselves."""

    __slots__ = ("_given", "_token")

    def __init__(self, **fields: Any) -> None:
        self._given = fields

    def __enter__(self) -> None:
        given = {k: v for k, v in self._given.items() if v is not None and v != ""}
        outer = _fields.get()
        self._token = _fields.set(tuple({**dict(outer), **given}.items()) if outer else tuple(given.items()))

    def __exit__(self, *exc: object) -> None:
        _fields.reset(self._token)


class ContextFields(logging.Filter):
    """Puts the fields of the current context on each record (a field given with `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields.get():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(), "node": self.node_id}
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None and value != "":
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(node_id: str, level: str = "INFO", log_format: str = "text") -> None:
    """The node's logging: one handler on stderr for the root logger, in `log_format`."""
    if log_format not in FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(ContextFields())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
