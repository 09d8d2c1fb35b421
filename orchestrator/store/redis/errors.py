"""What a call to Redis raises while Redis is down, restarting or failing over."""

from __future__ import annotations

from redis.exceptions import ClusterDownError, MasterDownError, ReadOnlyError, RedisClusterUnreachableError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

# On a Redis Cluster also: the cluster (or the part of it serving a slot) says it is down, no server
# serves the slot now, or no seed answered; each passes as a failover ends.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, ClusterDownError, SlotNotCoveredError,
    RedisClusterUnreachableError)

# Replies of a Redis that is up but takes no writes now: too few replicas for `min-replicas-to-write`
# (NOREPLICAS), a master demoted to replica in a failover (READONLY), a replica cut off from its
# master (MASTERDOWN). Each refuses the whole command (a script: before its first write, as the
# condition cannot change while it runs), so nothing is half-written, and each passes.
REFUSING_WRITES = ("NOREPLICAS", "READONLY", "MASTERDOWN")


def refuses_writes(exc: BaseException) -> bool:
    """Whether `exc` is Redis saying it takes no writes for now (see REFUSING_WRITES)."""
    if isinstance(exc, ReadOnlyError | MasterDownError):   # redis-py names these (their code cut off the text)
        return True
    text = str(exc).split(" of pipeline caused error: ")[-1]   # how redis-py names a pipeline's failed command
    return isinstance(exc, ResponseError) and (text.startswith(REFUSING_WRITES)
                                               or getattr(exc, "status_code", None) in REFUSING_WRITES)


def refusal_text(exc: BaseException) -> str:
    """What a write refusal of `refuses_writes` means, for a caller's UNAVAILABLE."""
    text = str(exc).split(" script: ")[0].split(" of pipeline caused error: ")[-1]
    if text.startswith("NOREPLICAS"):
        return ("the Redis master takes no writes while fewer replicas than its min-replicas-to-write are connected "
                f"and current ({text}); nothing was written: retry once a replica is back")
    if isinstance(exc, ReadOnlyError) or text.startswith("READONLY"):
        return f"this Redis is a replica now, a failover is under way (READONLY {text}); nothing was written: retry"
    return f"Redis takes no writes now ({text}); nothing was written: retry"
