"""One module per scenario; each exposes `run(bench) -> dict` (JSON-able, with a `targets` list)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..context import Bench
from . import (cluster, conductor, durability, events, failover, latency, poison, profile, sandbox, scale, size,
               soak, throughput)

Scenario = Callable[[Bench], dict[str, Any]]

# In run order: the profile and the dispatch latency under load reuse the throughput peak.
SCENARIOS: dict[str, Scenario] = {
    "throughput": throughput.run,
    "cluster": cluster.run,   # the state on a 3-master Redis Cluster vs one Redis, side by side (issue 23)
    "profile": profile.run,
    "latency": latency.run,
    "conductor": conductor.run,
    "events": events.run,
    "poison": poison.run,
    "sandbox": sandbox.run,   # no cluster: the cost of running user code in sandbox processes
    "failover": failover.run,
    "durability": durability.run,
    "scale": scale.run,
    "size": size.run,   # the cost of a step against the size of its workflow (issue 21)
    "soak": soak.run,
}
