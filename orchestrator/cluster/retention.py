"""The leader's sweep of finished workflows past their retention: archive them, then forget them.

Order matters for "nothing lost": a batch is written to the archive (durably) before the store
forgets it, and the store forgets only workflows still finished and ended before the cutoff
(a workflow restarted meanwhile stays). A crash between the two writes the batch again next
time; the archive keeps the latest copy. The audit stream of terminal transitions is the work
list: it is in end order, so the sweep reads only its head, and trims it as it goes.
"""

from __future__ import annotations

import logging

from ..archive import Archive
from ..core import statuses as st
from ..core.records import workflow_record
from ..store import Store

log = logging.getLogger(__name__)

BATCH = 200


class Retention:
    def __init__(self, store: Store, archive: Archive, retention_s: float) -> None:
        self.store = store
        self.archive = archive
        self.retention_ms = int(retention_s * 1000)
        self.archived = 0

    async def sweep(self, epoch: int, now_ms: int) -> int:
        """One batch; returns how many workflows left the store (so the caller knows to go on)."""
        cutoff = now_ms - self.retention_ms
        entries = await self.store.ended_before(cutoff, BATCH)
        if not entries:
            return 0
        ids = list(dict.fromkeys(workflow_id for _, workflow_id in entries))
        states = await self.store.load_many(ids)
        records = [workflow_record(s) for s in states
                   if s is not None and s.status in st.TERMINAL_WORKFLOW and 0 < s.ended_at_ms <= cutoff]
        await self.archive.put(records)
        forgotten = await self.store.forget_ended(epoch, entries, cutoff)
        self.archived += forgotten
        if forgotten:
            log.info("archived and forgot %d workflow(s) that ended before their retention", forgotten)
        return forgotten or len(entries)
