"""The capacity model of the partitioned state (issue 23): from Redis CPU per workflow, how many
workflows/s one Redis core serves and how many Redis Cluster masters a rate needs.

A model, not a measurement: it assumes Redis's CPU per workflow stays what the bench measured as the
rate grows (more nodes mean more connections and pipelines split over more masters, which can raise
it), that a master may use `core_share` of its one core (Redis runs commands on one thread; the rest
is headroom for bursts, replication and AOF rewrites), and that the workflows spread evenly over the
partitions. The partitions spread over the masters by whole partitions: with P partitions on N
masters the busiest master holds ceil(P / N) of them, so it is that master that must stay under
`core_share`; and no more than P masters can have work at all (the partition count is fixed when a
cluster's state is created: `redis_partitions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from orchestrator.store.redis.keys import DEFAULT_PARTITIONS

CORE_SHARE = 0.7                  # of one core, what a master may use in the model
RATES = (10_000, 100_000)         # workflows/s the model is asked about


@dataclass(frozen=True)
class Capacity:
    redis_cpu_ms_per_workflow: float      # CPU of the masters per workflow, summed over them
    core_share: float = CORE_SHARE
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if not self.redis_cpu_ms_per_workflow > 0 or not 0 < self.core_share <= 1 or self.partitions < 1:
            raise ValueError(f"cannot model {self}: CPU per workflow must be > 0, the core share in (0, 1], "
                             "the partitions >= 1")

    @property
    def per_core(self) -> float:
        """Workflows/s one fully busy Redis core serves."""
        return 1000 / self.redis_cpu_ms_per_workflow

    @property
    def per_master(self) -> float:
        """Workflows/s one master serves at `core_share` of its core."""
        return self.per_core * self.core_share

    def masters_even(self, rate: float) -> int:
        """Masters needed for `rate` if the load split evenly over them (as if partitions were unlimited)."""
        return max(1, math.ceil(rate / self.per_master - 1e-9))

    def masters(self, rate: float) -> int | None:
        """The fewest masters whose busiest one (ceil(P / N) of the P partitions) stays under `core_share`
        at `rate`; None when even one partition per master is too much (more partitions are needed)."""
        for n in range(self.masters_even(rate), self.partitions + 1):
            busiest = math.ceil(self.partitions / n) / self.partitions
            if rate * busiest <= self.per_master + 1e-9:
                return n
        return None

    def partitions_needed(self, rate: float) -> int:
        """The fewest partitions with which `rate` fits at all (one partition per master at most)."""
        return self.masters_even(rate)

    @property
    def ceiling(self) -> float:
        """Workflows/s the partitions allow at all: one per master, each master at `core_share`."""
        return self.per_master * self.partitions

    def table(self, rates: tuple[int, ...] = RATES) -> dict[str, Any]:
        """The model's figures, JSON-able."""
        return {"redis_cpu_ms_per_workflow": round(self.redis_cpu_ms_per_workflow, 3),
                "workflows_per_s_per_core": round(self.per_core),
                "core_share": self.core_share, "workflows_per_s_per_master": round(self.per_master),
                "partitions": self.partitions, "ceiling_workflows_per_s": round(self.ceiling),
                "rates": [{"workflows_per_s": rate, "masters_even_spread": self.masters_even(rate),
                           "masters": self.masters(rate),
                           "partitions_needed": None if self.masters(rate) else self.partitions_needed(rate)}
                          for rate in rates]}


def cores_for(rate: float, cpu_ms_per_workflow: float) -> float:
    """Cores of CPU a rate keeps busy at a measured CPU per workflow (for the nodes and workers beside)."""
    return rate * cpu_ms_per_workflow / 1000
