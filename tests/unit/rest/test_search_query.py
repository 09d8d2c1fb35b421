"""Conductor's search query is read in linear time (issue 22, item 11): a 16 KiB query of spaces
took 1-2 s of a node's event loop, for every request (the same on a real node:
tests/integration/web/test_web_hardening.py)."""

from __future__ import annotations

import time

HOSTILE = [
    "status = x" + " " * 16_000 + "y",
    "a" + " " * 16_370 + "b",
    "workflowType = x" + " AND" * 4000,
    "workflowType IN (" + "a," * 8000 + ")",
    "(" * 16_384,
    "startTime > " + "1" * 16_000,
    "status = '" + "\\'" * 8000,
]


def test_a_hostile_search_query_is_read_in_linear_time() -> None:
    from orchestrator.service.errors import Refused
    from orchestrator.rest.workflows import parse_query
    for query in HOSTILE:
        took = float("inf")
        for _ in range(5):   # the quickest of five: a busy machine delays one read, backtracking slows all
            started = time.perf_counter()
            try:
                parse_query(query)
            except Refused:
                pass
            took = min(took, time.perf_counter() - started)
        assert took < 0.02, f"{took * 1000:.0f} ms for {query[:30]!r}..."
    assert parse_query("workflowType = 'a b' AND status IN (RUNNING, PAUSED) AND correlationId = c-1") == {
        "workflowType": ["a b"], "status": ["RUNNING", "PAUSED"], "correlationId": ["c-1"]}
    assert parse_query("startTime > 10 and startTime <= 20") == {"startTime>": ["10"], "startTime<": ["21"]}
    assert parse_query("  ") == {}
