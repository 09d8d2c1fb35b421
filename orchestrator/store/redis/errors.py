"""What a call to Redis raises while Redis is down, restarting or failing over."""

from __future__ import annotations

from redis.exceptions import (ClusterDownError, ClusterError, MasterDownError, ReadOnlyError,
                              RedisClusterUnreachableError)
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
# master (MASTERDOWN), keys of a moving slot split between two masters (TRYAGAIN, and SLOT_MOVING).
# Each refuses the whole command (a script: before its first write, as the condition cannot change
# while it runs), so nothing is half-written, and each passes.
REFUSING_WRITES = ("NOREPLICAS", "READONLY", "MASTERDOWN", "TRYAGAIN")

# What a Redis Cluster master answers a script whose slot is being moved to another master (`redis-cli
# --cluster reshard`): while a slot moves, its keys are some on the old master, some on the new one, and
# a script run on either would see half a partition. Every partition script's first command therefore
# touches two keys that never exist (scripts.COMMON's fence), which a master refuses for a slot it is
# exporting or importing, and only then: the script stops there, before any write, and the call is
# tried again until the move is over (a slot's move takes as long as its keys' MIGRATE calls).
SLOT_MOVING = "Script attempted to access a non local key in a cluster node"

# What redis-py's cluster client raises (ClusterError, "TTL exhausted.") once it has followed 16
# redirections (MOVED, ASK, TRYAGAIN) without a server running the command: each attempt was refused,
# so nothing ran. While a slot moves this is the common case, not a rare one: redis-py's asyncio client
# sends the ASKING that must precede a command after an ASK as a command of its own, on whichever
# connection to the target is free first, and the command itself on the next free one; with two or more
# connections open to the target (any node under load) the command arrives without ASKING, the target
# answers MOVED back to the source, the source ASK again, until the redirections run out.


def redirections_exhausted(exc: BaseException) -> bool:
    """Whether `exc` is redis-py giving up on a call redirected back and forth (see above)."""
    return isinstance(exc, ClusterError) and not isinstance(exc, ClusterDownError)


def refuses_writes(exc: object) -> bool:
    """Whether `exc` is Redis saying it takes no writes for now (see REFUSING_WRITES). Asked of
    every reply of a pipeline, most of them no error at all: those are let go at once, unread (the
    text of a claim's reply, workflow records included, was built only to be thrown away)."""
    if not isinstance(exc, BaseException):
        return False
    if isinstance(exc, ReadOnlyError | MasterDownError):   # redis-py names these (their code cut off the text)
        return True
    if redirections_exhausted(exc):
        return True
    text = str(exc).split(" of pipeline caused error: ")[-1]   # how redis-py names a pipeline's failed command
    return isinstance(exc, ResponseError) and (text.startswith(REFUSING_WRITES) or SLOT_MOVING in text
                                               or getattr(exc, "status_code", None) in REFUSING_WRITES)


def refusal_text(exc: BaseException) -> str:
    """What a write refusal of `refuses_writes` means, for a caller's UNAVAILABLE."""
    text = str(exc).split(" script: ")[0].split(" of pipeline caused error: ")[-1]
    if text.startswith("NOREPLICAS"):
        return ("the Redis master takes no writes while fewer replicas than its min-replicas-to-write are connected "
                f"and current ({text}); nothing was written: retry once a replica is back")
    if redirections_exhausted(exc):
        return ("the Redis Cluster's servers sent this call back and forth without running it (a slot moving to "
                f"another master, or their maps of the slots not agreed yet: {text}); nothing was written: retry")
    if SLOT_MOVING in text or text.startswith("TRYAGAIN"):
        return ("the Redis Cluster slot of this partition is moving to another master (a reshard); nothing was "
                "written: retry once the move is over")
    if isinstance(exc, ReadOnlyError) or text.startswith("READONLY"):
        return f"this Redis is a replica now, a failover is under way (READONLY {text}); nothing was written: retry"
    return f"Redis takes no writes now ({text}); nothing was written: retry"
