"""oldest_ended: the oldest ends before a cutoff over many streams, exactly, reading few entries.

The streams here are lists read the way XRANGE reads a stream (from "-" or after an id, a count);
the same function runs on real Redis in tests/integration/store/test_partitions.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from orchestrator.store.redis.ended_scan import oldest_ended

Entry = tuple[str, dict[str, str]]


class Streams:
    """Streams of (id, {"wf", "at"}) entries in id order; counts the entries each read returns."""

    def __init__(self, streams: dict[str, list[Entry]]) -> None:
        self.streams = streams
        self.entries_read = 0
        self.round_trips = 0

    async def read(self, reads: list[tuple[str, str, int]]) -> Sequence[Sequence[Entry]]:
        self.round_trips += 1
        pages = []
        for key, first, count in reads:
            entries = self.streams[key]
            if first != "-":
                after = _seq(first.removeprefix("("))
                entries = [e for e in entries if _seq(e[0]) > after]
            pages.append(entries[:count])
            self.entries_read += len(pages[-1])
        return pages


def _seq(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def streams_of(ends: list[tuple[str, int, int]], keys: int) -> Streams:
    """ends: (workflow id, stream index, at) appended in `at` order."""
    streams: dict[str, list[Entry]] = {f"s{k}": [] for k in range(keys)}
    for n, (workflow_id, key, at) in enumerate(sorted(ends, key=lambda e: e[2])):
        streams[f"s{key}"].append((f"{at}-{n}", {"wf": workflow_id, "at": str(at)}))
    return Streams(streams)


def expected(streams: Streams, cutoff: int, limit: int) -> list[tuple[str, str]]:
    every = sorted((int(f["at"]), entry_id, f["wf"]) for entries in streams.streams.values()
                   for entry_id, f in entries if int(f["at"]) <= cutoff)
    return [(entry_id, wf) for _, entry_id, wf in every[:limit]]


def test_it_finds_exactly_the_oldest_ends_before_the_cutoff_over_uneven_streams() -> None:
    rng = random.Random(7)
    for trial in range(200):
        keys = rng.choice([1, 3, 8, 64])
        ends = [(f"w{trial}-{i}", rng.randrange(keys) if rng.random() < 0.7 else 0, rng.randrange(10_000))
                for i in range(rng.randrange(0, 600))]
        cutoff, limit = rng.randrange(-10, 11_000), rng.choice([1, 6, 50, 200])
        streams = streams_of(ends, keys)
        found = asyncio.run(oldest_ended(streams.read, list(streams.streams), cutoff, limit))
        assert found == expected(streams, cutoff, limit), (trial, keys, cutoff, limit)


def test_with_nothing_due_it_reads_one_small_page_of_each_stream() -> None:
    # 64 streams of 1,000 ends each, all after the cutoff: the sweep of a node whose retention is days
    ends = [(f"w{i}", i % 64, 1_000 + i) for i in range(64_000)]
    streams = streams_of(ends, 64)
    assert asyncio.run(oldest_ended(streams.read, list(streams.streams), 999, 200)) == []
    assert streams.round_trips == 1
    assert streams.entries_read <= 64 * 4   # was 64 x 200: `limit` entries of every stream


def test_with_everything_due_it_reads_a_few_pages_not_limit_entries_of_every_stream() -> None:
    ends = [(f"w{i}", i % 64, i) for i in range(64_000)]
    streams = streams_of(ends, 64)
    found = asyncio.run(oldest_ended(streams.read, list(streams.streams), 10**9, 200))
    assert found == expected(streams, 10**9, 200)
    assert streams.entries_read <= 4 * 200
    assert streams.round_trips <= 3


def test_a_stream_holding_most_of_the_due_ends_is_read_in_growing_pages() -> None:
    ends = [(f"w{i}", 0 if i % 2 else i % 64, i) for i in range(64_000)]
    streams = streams_of(ends, 64)
    found = asyncio.run(oldest_ended(streams.read, list(streams.streams), 10**9, 200))
    assert found == expected(streams, 10**9, 200)
    assert streams.round_trips <= 8   # pages of 4, 8, ... 128 (26 round trips with pages of 4)
