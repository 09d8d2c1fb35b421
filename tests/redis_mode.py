"""Which Redis the tests start when they need one of their own: ORCHESTRATOR_TEST_REDIS.

`single` (or unset): a plain redis-server, as production's single Redis. `slots`: a one-server Redis
Cluster that owns every slot (devtools.procs.RedisServer.slot_checked), so that a script whose keys
span two hash slots fails here as it would on Redis Cluster (issue 23), while the code under test
still talks to it as to a single Redis. Servers with replicas or Sentinels are plain in both modes:
a cluster-mode server cannot be a replica.
"""

from __future__ import annotations

import os
from pathlib import Path

from devtools.procs import RedisServer, start_redis

TEST_REDIS_ENV = "ORCHESTRATOR_TEST_REDIS"
MODES = ("single", "slots")


def redis_mode() -> str:
    """The mode the environment asks for; ValueError naming the accepted values for any other."""
    mode = os.environ.get(TEST_REDIS_ENV, "").strip() or "single"
    if mode not in MODES:
        raise ValueError(f"{TEST_REDIS_ENV}={mode!r} is not one of {', '.join(MODES)} "
                         "(unset means single)")
    return mode


def slot_checked_redis() -> bool:
    """True when the tests' own standalone Redis servers are to check hash slots."""
    return redis_mode() == "slots"


def start_test_redis(data_dir: Path) -> RedisServer:
    """A standalone Redis (no replicas) of the kind ORCHESTRATOR_TEST_REDIS asks for, on a free port."""
    return start_redis(data_dir, slot_checked=slot_checked_redis())
