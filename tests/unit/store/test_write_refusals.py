"""`errors.refuses_writes` tells Redis's refusals of writes (NOREPLICAS, READONLY, MASTERDOWN, TRYAGAIN,
a moving slot) from other errors, and is asked of every reply of a pipeline, most of which are no
error at all: a reply is let go at once, without its text being built (a claim's reply carries
whole workflow records, and its text was built for every claim only to be thrown away)."""

from __future__ import annotations

from redis.exceptions import ClusterError, ConnectionError, MasterDownError, ReadOnlyError, ResponseError

from orchestrator.store.redis.errors import SLOT_MOVING, refuses_writes


class Unreadable(list[object]):
    """A reply whose text must not be asked for."""

    def __str__(self) -> str:
        raise AssertionError("the text of a reply that is no error was built")

    __repr__ = __str__


def test_a_reply_that_is_no_error_is_let_go_unread() -> None:
    assert not refuses_writes(Unreadable(["w1|t1", ["st", "RUNNING"]]))
    assert not refuses_writes("OK")
    assert not refuses_writes(3)
    assert not refuses_writes(None)


def test_refusals_of_writes_are_told_from_other_errors() -> None:
    assert refuses_writes(ResponseError("NOREPLICAS Not enough good replicas to write."))
    assert refuses_writes(ReadOnlyError("You can't write against a read only replica."))
    assert refuses_writes(MasterDownError("Link with MASTER is down"))
    assert refuses_writes(ResponseError(f"Error running script: {SLOT_MOVING}"))
    assert refuses_writes(ResponseError("Command # 2 (EVALSHA) of pipeline caused error: TRYAGAIN Multiple keys"))
    assert refuses_writes(ClusterError("TTL exhausted."))
    assert not refuses_writes(ResponseError("ERR wrong number of arguments"))
    assert not refuses_writes(ConnectionError("Connection reset by peer"))
