"""The default archive: compressed JSON lines in a directory, one file per hour and per writer.

    <root>/<YYYY-MM-DD>/<HH>-<writer>.jsonl.gz    the records, by the hour they ended (UTC)
    <root>/index/<2 hex>.tsv                      workflow id -> file and offset of its gzip member,
                                                  so finding one record reads one member

Each `put` appends one gzip member per file it touches (a gzip file may hold many) and fsyncs,
so a crash loses at most the batch being written, which the retention sweep writes again (it
deletes from Redis only after `put` returned). One writer per file (the writer is the node), so
two leaders overlapping during a failover never interleave their bytes. File work runs in a
thread: the node's event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..core import free_text
from ..core.namespaces import namespace_of
from .protocol import ArchivedPage

MAX_FILES_PER_SEARCH = 48      # hour files one search call reads before it returns a cursor


class DirectoryArchive:
    def __init__(self, root: str | Path, writer: str) -> None:
        self.root = Path(root)
        self.writer = "".join(c if c.isalnum() or c in "-_." else "_" for c in writer) or "node"

    # ------------------------------------------------------------- writing

    async def put(self, records: list[dict[str, Any]]) -> None:
        if records:
            await asyncio.to_thread(self._put, records)

    def _put(self, records: list[dict[str, Any]]) -> None:
        by_file: dict[Path, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            by_file[self._file_for(int(record.get("ended_at_ms") or 0))].append(record)
        index: dict[Path, list[str]] = defaultdict(list)
        for path, group in by_file.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps(record, separators=(",", ":"), ensure_ascii=False) for record in group]
            with open(path, "ab") as raw:
                offset = raw.tell()
                with gzip.GzipFile(fileobj=raw, mode="wb") as member:
                    member.write(("\n".join(lines) + "\n").encode())
                raw.flush()
                os.fsync(raw.fileno())
            for record in group:
                index[self._index_for(record["workflow_id"])].append(
                    f"{record['workflow_id']}\t{path.relative_to(self.root)}\t{offset}\n")
        for path, entries in index.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as out:
                out.writelines(entries)
                out.flush()
                os.fsync(out.fileno())

    def _file_for(self, ended_at_ms: int) -> Path:
        moment = time.gmtime(ended_at_ms / 1000)
        return self.root / time.strftime("%Y-%m-%d", moment) / f"{time.strftime('%H', moment)}-{self.writer}.jsonl.gz"

    def _index_for(self, workflow_id: str) -> Path:
        return self.root / "index" / f"{hashlib.sha256(workflow_id.encode()).hexdigest()[:2]}.tsv"

    # ------------------------------------------------------------- reading

    async def get(self, workflow_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get, workflow_id)

    def _get(self, workflow_id: str) -> dict[str, Any] | None:
        index = self._index_for(workflow_id)
        if not index.exists():
            return None
        places = [line.split("\t")[1:] for line in index.read_text(encoding="utf-8").splitlines()
                  if line.startswith(f"{workflow_id}\t")]
        for place in reversed(places):   # the latest copy wins
            path = self.root / place[0]
            records = _member(path, int(place[1])) if len(place) > 1 else _records(path)
            for record in reversed(records):
                if record.get("workflow_id") == workflow_id:
                    found: dict[str, Any] = record
                    return found
        return None

    async def search(self, *, name: str, status: str, correlation_id: str, created_from_ms: int,
                     created_to_ms: int, cursor: str, limit: int, text: str = "", namespace: str = "") -> ArchivedPage:
        return await asyncio.to_thread(self._search, name, status, correlation_id, created_from_ms, created_to_ms,
                                       cursor, limit, free_text.words(text), namespace)

    def _search(self, name: str, status: str, correlation_id: str, created_from_ms: int, created_to_ms: int,
                cursor: str, limit: int, query_words: list[str], namespace: str) -> ArchivedPage:
        files = sorted((p for p in self.root.glob("*/*.jsonl.gz") if p.parent.name != "index"), reverse=True)
        start_file, skip = _parse_cursor(cursor)
        if start_file:
            files = [p for p in files if str(p.relative_to(self.root)) <= start_file]
        found: list[dict[str, Any]] = []
        for read, path in enumerate(files):
            relative = str(path.relative_to(self.root))
            records = list(reversed(list(_records(path))))
            offset = skip if relative == start_file else 0
            for position in range(offset, len(records)):
                record = records[position]
                if _matches(record, name, status, correlation_id, created_from_ms, created_to_ms, namespace) and (
                        not query_words or free_text.matches(query_words, json.dumps(
                            [record.get(k) for k in ("workflow_id", "correlation_id", "input", "output", "variables",
                                                     "reason")], ensure_ascii=False, separators=(",", ":")))):
                    found.append(record)
                    if len(found) == limit:
                        return ArchivedPage(found, f"{relative}|{position + 1}")
            if read + 1 >= MAX_FILES_PER_SEARCH and read + 1 < len(files):
                return ArchivedPage(found, f"{files[read + 1].relative_to(self.root)}|0")
        return ArchivedPage(found, None)


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except (OSError, EOFError, ValueError):   # a member cut short by a crash: what was whole stays readable
        return []


def _member(path: Path, offset: int) -> list[dict[str, Any]]:
    """The records of the one gzip member that starts at `offset` (one `put` of one file)."""
    try:
        with open(path, "rb") as raw:
            raw.seek(offset)
            inflate = zlib.decompressobj(wbits=31)   # gzip framing; stops at the member's end
            text = b""
            while not inflate.eof:
                chunk = raw.read(65536)
                if not chunk:
                    break
                text += inflate.decompress(chunk)
        return [json.loads(line) for line in text.decode("utf-8").splitlines() if line.strip()]
    except (OSError, ValueError, zlib.error):
        return []


def _matches(record: dict[str, Any], name: str, status: str, correlation_id: str, created_from_ms: int,
             created_to_ms: int, namespace: str) -> bool:
    created = int(record.get("created_at_ms") or 0)
    return ((not name or record.get("name") == name) and namespace_of(str(record.get("name", ""))) == namespace
            and (not status or record.get("status") == status)
            and (not correlation_id or record.get("correlation_id") == correlation_id)
            and (not created_from_ms or created >= created_from_ms)
            and (not created_to_ms or created <= created_to_ms))


def _parse_cursor(cursor: str) -> tuple[str, int]:
    if not cursor:
        return "", 0
    relative, sep, skip = cursor.rpartition("|")
    if not sep or not skip.isdigit():
        raise ValueError("not an archive cursor")
    return relative, int(skip)
