"""The oldest ends before a cutoff over every partition's `ended` stream, read a few at a time.

Each stream holds every end of the retention period (days of them), oldest first. The leader's
retention sweep asks every second for the oldest `limit` ends before its cutoff; reading `limit`
entries of each of the 64 streams for that (12,800 entries parsed a second, on the leader's event
loop, with nothing due) cost the leader more than its clocks. Here each stream is read a page of
about `limit / streams` entries at a time, and again only while its next page could still hold one
of the `limit` oldest: with nothing due, one page each; with everything due, a few pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

# (stream key, first id to read: "-" or "(<id>" for after it, how many) -> each stream's entries
ReadPages = Callable[[list[tuple[str, str, int]]], Awaitable[Sequence[Sequence[tuple[str, dict[str, str]]]]]]


async def oldest_ended(read: ReadPages, keys: Sequence[str], cutoff_ms: int, limit: int) -> list[tuple[str, str]]:
    """(entry id, workflow id) of the oldest `limit` ends at or before `cutoff_ms`, oldest first.

    A stream is read up to its first end after the cutoff (ends are appended in time order, so
    what follows is later still, up to the clock skew between nodes)."""
    if limit <= 0 or not keys:
        return []
    first_page = -(-limit // len(keys))
    page: dict[str, int] = dict.fromkeys(keys, first_page)
    after: dict[str, str] = dict.fromkeys(keys, "-")   # streams that may hold more ends before the cutoff
    last: dict[str, tuple[int, str]] = {}              # (at, entry id) of the last end read from each
    found: list[tuple[int, str, str]] = []              # (at, entry id, workflow id), at most `limit`
    wanted = list(keys)
    while wanted:
        pages = await read([(key, after[key], page[key]) for key in wanted])
        for key, entries in zip(wanted, pages):
            complete = len(entries) < page[key]
            for entry_id, fields in entries:
                at = int(fields["at"])
                if at > cutoff_ms:
                    complete = True
                    break
                found.append((at, entry_id, fields["wf"]))
                last[key] = (at, entry_id)
            if complete:
                del after[key]
            else:
                after[key] = f"({entries[-1][0]}"
                page[key] = min(limit, 2 * page[key])
        found.sort()
        del found[limit:]
        # a stream whose last end read is younger than the limit-th oldest found holds none older
        threshold = found[-1][:2] if len(found) == limit else None
        wanted = [key for key in after if threshold is None or last[key] < threshold]
    return [(entry_id, workflow_id) for _, entry_id, workflow_id in found]
