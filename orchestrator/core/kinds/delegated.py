"""Conductor's other task types that need I/O (message brokers, databases, model providers):
this version runs none of them itself. Each is a worker task whose task type is the type's
name: a worker that serves "KAFKA_PUBLISH" runs every KAFKA_PUBLISH task (its input is the task's
inputParameters, as Conductor would read them; its output becomes the task's)."""

from __future__ import annotations

from typing import Any

from .base import Checker, Kind, always
from .checks import keep_sink
from .steps import run_on_worker

DELEGATED_KINDS = (
    "KAFKA_PUBLISH", "JDBC", "PULL_WORKFLOW_MESSAGES",
    "LLM_TEXT_COMPLETE", "LLM_CHAT_COMPLETE", "LLM_GENERATE_EMBEDDINGS", "LLM_GET_EMBEDDINGS",
    "LLM_STORE_EMBEDDINGS", "LLM_SEARCH_INDEX", "LLM_INDEX_DOCUMENT", "LLM_INDEX_TEXT", "GET_DOCUMENT",
    "GENERATE_IMAGE", "GENERATE_AUDIO", "GENERATE_VIDEO", "GENERATE_PDF", "LIST_MCP_TOOLS", "CALL_MCP_TOOL",
    "GET_AGENT_CARD")


def validate(checker: Checker, task: dict[str, Any], out: dict[str, Any], *_: Any) -> None:
    kind = out["type"]
    checker.warn(f"{kind} tasks are not run by this version: each runs on a worker that serves task type "
                 f"'{kind}' (its input is the task's inputParameters, its output the worker's result)")
    keep_sink(checker, task, out)


KIND = Kind(names=DELEGATED_KINDS, role="worker", fields=frozenset({"sink"}), validate=validate,
            decide=run_on_worker, needs_every_task_def=always)   # a task definition of its name is optional
