"""Reading what the command line gives: JSON flags (inline or @file.json), definition files
(JSON or YAML), workflow statuses in any case and times (ago or dates). Bad input is a
UsageError: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ..core.statuses import WORKFLOW_STATUSES
from ..core.timetext import parse_duration_seconds

STATUS_CHOICES = tuple(status.lower() for status in WORKFLOW_STATUSES)


class UsageError(Exception):
    """Bad input from the command line (a flag or a file): one line on stderr, exit code 2."""


def _read(path: Path, where: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"{where}: invalid YAML{at}: {problem}") from None


def json_arg(flag: str, value: str) -> dict[str, Any]:
    """A flag's JSON object, given inline or as @file.json."""
    if value.startswith("@"):
        where = f"{flag} {value}"
        parsed = _parse_json(_read(Path(value[1:]), where), where)
    else:
        where = flag
        parsed = _parse_json(value, flag)
    if not isinstance(parsed, dict):
        raise UsageError(f"{where}: expected a JSON object {{...}}, got {type(parsed).__name__}")
    return parsed


def read_documents(path: Path) -> list[dict[str, Any]]:
    """The definitions in a JSON or YAML file: one object or a list of objects.

    A .json file must be JSON; any other file is read as JSON, else as YAML."""
    text = _read(path, str(path))
    if path.suffix.lower() == ".json":
        value = _parse_json(text, str(path))
    else:
        try:
            value = json.loads(text)
        except ValueError:
            value = _parse_yaml(text, str(path))
    found = value if isinstance(value, list) else [value]
    for index, document in enumerate(found):
        if not isinstance(document, dict):
            item = f"item {index + 1} is" if isinstance(value, list) else "it holds"
            raise UsageError(f"{path}: expected a definition object or a list of them; {item} "
                             f"a {type(document).__name__}")
    return found


def read_all_documents(paths: list[Path]) -> list[dict[str, Any]]:
    """Every file's definitions, all read before anything is sent."""
    return [document for path in paths for document in read_documents(path)]


def status_arg(text: str) -> str:
    """A workflow status in any case ("running", "timed_out"); "" for none."""
    status = text.strip().upper().replace("-", "_")
    if status and status not in WORKFLOW_STATUSES:
        raise argparse.ArgumentTypeError(f"'{text}' is not a workflow status; one of {', '.join(STATUS_CHOICES)}")
    return status


def when_arg(flag: str) -> Callable[[str], int]:
    """The argparse type of --since and --until: epoch ms (see `when_ms`)."""
    def parse(text: str) -> int:
        try:
            return when_ms(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = flag   # argparse names the flag's type in its message
    return parse


def when_ms(text: str, now_ms: int | None = None) -> int:
    """Epoch ms of a time given as how long ago ("30s", "10m", "1h", "2h30m", "7d", "90": seconds)
    or as a date ("2024-05-01", "2024-05-01 10:00", ISO 8601; local time unless it has an offset).
    "" is 0 (no bound)."""
    text = text.strip()
    if not text:
        return 0
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        return now_ms - int(parse_duration_seconds(text) * 1000)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)   # naive: local time
    except ValueError:
        raise ValueError(f"'{text}' is neither a time ago (30s, 10m, 1h, 2h30m, 7d) nor a date (2024-05-01, "
                         "2024-05-01T10:00, 2024-05-01T10:00:00+02:00)") from None
