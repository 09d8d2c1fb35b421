"""Gathering what one side of a worker stream has queued into as few messages as the contract
allows ("Batches" in v1/orchestrator.proto). Both the node and the worker SDK call these when
their stream's writer gets its turn, with everything queued since its last write: a burst of
results, credits, assignments or acks then costs one message, one parse and one wake-up on the
other side, not one per item.

Pure functions over lists, so that the rules are tested on their own:

* Items that may share a batch keep their order among themselves; a message that may not (a
  hello, a ping, a pong, a drain, the end of the stream) stays where it is, and what was gathered
  before it goes first: a drain still comes after every task pushed before it.
* A batch holds at most MAX_BATCH_BYTES of items: a stream's messages are bounded (gRPC's 4 MiB
  by default, a node's `max_message_bytes`) and each item alone fits, but a few large inputs or
  outputs together would not. An item larger than that goes alone, as it would without batches.
* A lone item goes as itself: a batch of one saves nothing.
* Without batches (the other side is older, or has not said it reads them), everything goes as it
  was queued, except that a worker's credits of one gathering are added up into one Credit (a node
  writes each message to such a worker as it comes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .v1 import orchestrator_pb2 as pb

__all__ = ["MAX_BATCH_BYTES", "SERVER_BATCHED", "WorkerItem", "gather_server_messages", "gather_worker_messages",
           "server_batch_hello"]

# The most a batch carries, in encoded items. Batching pays for small items; 64 KiB of them is
# hundreds of results or tasks, far below any message limit a node may be given.
MAX_BATCH_BYTES = 64 * 1024

# What a worker queues: a whole message (hello, ping: never batched), or an item that may go in a
# WorkerBatch; a Credit's count is added to the others of its gathering.
WorkerItem = pb.WorkerMessage | pb.TaskResult | pb.Release | pb.Heartbeat | pb.Credit
_WorkerBatched = pb.TaskResult | pb.Release | pb.Heartbeat

# The ServerMessage bodies a ServerBatch carries.
SERVER_BATCHED = frozenset({"task", "result_ack", "heartbeat_ack"})


def gather_worker_messages(queued: Iterable[WorkerItem], batches: bool) -> list[pb.WorkerMessage]:
    """The messages that carry `queued`, in order; `batches`: the node sent a ServerBatch on this
    stream, so it reads WorkerBatch. The credits of a run of items go with its last batch."""
    out: list[pb.WorkerMessage] = []
    run: list[_WorkerBatched] = []
    size = credits = 0
    for item in queued:
        if isinstance(item, pb.Credit):
            credits += item.count
        elif isinstance(item, pb.WorkerMessage):
            _flush_worker_run(out, run, credits, batches)
            run, size, credits = [], 0, 0
            out.append(item)
        else:
            item_size = item.ByteSize() if batches else 0
            if run and size + item_size > MAX_BATCH_BYTES:
                _flush_worker_run(out, run, 0, batches)
                run, size = [], 0
            run.append(item)
            size += item_size
    _flush_worker_run(out, run, credits, batches)
    return out


def _flush_worker_run(out: list[pb.WorkerMessage], run: Sequence[_WorkerBatched], credits: int,
                      batches: bool) -> None:
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
    size = 0
    for message in queued:
        if message.WhichOneof("body") not in SERVER_BATCHED:
            _flush_server_run(out, run)
            run, size = [], 0
            out.append(message)
            continue
        message_size = message.ByteSize()
        if run and size + message_size > MAX_BATCH_BYTES:
            _flush_server_run(out, run)
            run, size = [], 0
        run.append(message)
        size += message_size
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
