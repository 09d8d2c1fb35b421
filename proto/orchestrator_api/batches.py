"""Gathering what one side of a worker stream has queued into as few messages as the contract
allows ("Batches" in v1/orchestrator.proto). Both the node and the worker SDK call these when
their stream's writer gets its turn, with everything queued since its last write: a burst of
results, credits, assignments or acks then costs one message, one parse and one wake-up on the
other side, not one per item.

Pure functions over lists, so that the rules are tested on their own:

* Items that may share a batch keep their order among themselves; a message that may not (a
  hello, a ping, a pong, a drain, the end of the stream) stays where it is, and what was gathered
  before it goes first: a drain still comes after every task pushed before it.
* A lone item goes as itself: a batch of one saves nothing.
* Without batches (the other side is older, or has not said it reads them), everything goes as it
  was queued, except that a worker's credits of one gathering are added up into one Credit (a node
  writes each message to such a worker as it comes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .v1 import orchestrator_pb2 as pb

__all__ = ["WorkerItem", "gather_worker_messages", "gather_server_messages", "server_batch_hello",
           "SERVER_BATCHED"]

# What a worker queues: a whole message (hello, ping: never batched), or an item that may go in a
# WorkerBatch; a Credit's count is added to the others of its gathering.
WorkerItem = pb.WorkerMessage | pb.TaskResult | pb.Release | pb.Heartbeat | pb.Credit

# The ServerMessage bodies a ServerBatch carries.
SERVER_BATCHED = frozenset({"task", "result_ack", "heartbeat_ack"})


def gather_worker_messages(queued: Iterable[WorkerItem], batches: bool) -> list[pb.WorkerMessage]:
    """The messages that carry `queued`, in order; `batches`: the node sent a ServerBatch on this
    stream, so it reads WorkerBatch."""
    out: list[pb.WorkerMessage] = []
    run: list[pb.TaskResult | pb.Release | pb.Heartbeat] = []
    credits = 0
    for item in queued:
        if isinstance(item, pb.Credit):
            credits += item.count
        elif isinstance(item, pb.WorkerMessage):
            _flush_worker_run(out, run, credits, batches)
            run, credits = [], 0
            out.append(item)
        else:
            run.append(item)
    _flush_worker_run(out, run, credits, batches)
    return out


def _flush_worker_run(out: list[pb.WorkerMessage], run: Sequence[pb.TaskResult | pb.Release | pb.Heartbeat],
                      credits: int, batches: bool) -> None:
    if batches and len(run) + (credits > 0) > 1:
        message = pb.WorkerMessage()
        batch = message.batch
        batch.results.extend(item for item in run if isinstance(item, pb.TaskResult))
        batch.releases.extend(item for item in run if isinstance(item, pb.Release))
        batch.heartbeats.extend(item for item in run if isinstance(item, pb.Heartbeat))
        batch.credits = credits
        out.append(message)
        return
    for item in run:
        if isinstance(item, pb.TaskResult):
            out.append(pb.WorkerMessage(result=item))
        elif isinstance(item, pb.Release):
            out.append(pb.WorkerMessage(release=item))
        else:
            out.append(pb.WorkerMessage(heartbeat=item))
    if credits > 0:
        out.append(pb.WorkerMessage(credit=pb.Credit(count=credits)))


def gather_server_messages(queued: Iterable[pb.ServerMessage]) -> list[pb.ServerMessage]:
    """The messages that carry `queued`, in order, to a worker whose hello asked for batches (to
    another, a node sends each message as queued)."""
    out: list[pb.ServerMessage] = []
    run: list[pb.ServerMessage] = []
    for message in queued:
        if message.WhichOneof("body") in SERVER_BATCHED:
            run.append(message)
        else:
            _flush_server_run(out, run)
            run = []
            out.append(message)
    _flush_server_run(out, run)
    return out


def _flush_server_run(out: list[pb.ServerMessage], run: Sequence[pb.ServerMessage]) -> None:
    if len(run) <= 1:
        out.extend(run)
        return
    message = pb.ServerMessage()
    batch = message.batch
    for item in run:
        kind = item.WhichOneof("body")
        if kind == "task":
            batch.tasks.append(item.task)
        elif kind == "result_ack":
            batch.result_acks.append(item.result_ack)
        else:
            batch.heartbeat_acks.append(item.heartbeat_ack)
    out.append(message)


def server_batch_hello() -> pb.ServerMessage:
    """An empty ServerBatch: a node's first message to a worker that asked for batches, which says
    that this node reads WorkerBatch (an older node never sends one)."""
    message = pb.ServerMessage()
    message.batch.SetInParent()
    return message
