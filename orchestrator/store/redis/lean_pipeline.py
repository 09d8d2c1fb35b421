"""A loop turn's calls written to one connection and their replies read back, without redis-py's
Pipeline objects.

Every step, claim and start goes through one of these pipelines, and redis-py's Pipeline (and on a
Redis Cluster its ClusterPipeline, which works out each command's slot and node again, from a
command table) cost more CPU than the writing and reading itself: at 128 workflows in flight
redis-py was 13 - 15 % of a node's CPU on one Redis and 19 - 20 % on a Redis Cluster (py-spy; 15 -
16 % with these pipelines, whose packing and reading are still redis-py's). The store
already knows where each call goes (a single Redis, or the master its partition's slot is on), so
this takes a connection from redis-py's own pool for that server (on one Redis, the one the last
pipeline gave back, kept at hand: `PoolConnections`), packs the commands (`_packed`), writes them
at once and reads one reply per command; an error reply is that command's value.

Whatever is unusual is left to redis-py: on a Redis Cluster a call answered MOVED, ASK, TRYAGAIN or
CLUSTERDOWN ran nothing, and the caller sends it again through redis-py's cluster pipeline, which
follows the redirection and refreshes its map of the slots (`REDIRECTED`); so does a pipeline whose
master could not be reached. A connection that did not deliver every reply (a broken link, the
caller's deadline, a cancellation) is closed before it goes back to its pool, so that no late reply
is ever read by the next pipeline on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, cast

from hiredis import pack_command as pack_in_c   # a dependency of ours (pyproject.toml)
from redis.asyncio.cluster import ClusterNode
from redis._parsers.response_callbacks import _get_response_callback
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

# replies that say a Redis Cluster master did not run the command (its slot is elsewhere or moving)
REDIRECTED = (MovedError, AskError, TryAgainError, ClusterDownError)

Callbacks = Mapping[str, Any]


class Connections(Protocol):
    """Where a pipeline's connection comes from and goes back to."""

    async def acquire(self) -> AbstractConnection: ...

    async def release(self, connection: AbstractConnection) -> None: ...


class PoolConnections:
    """A single Redis's connection pool (a Sentinel-managed one too), with the connections pipelines
    gave back kept at hand for the next ones.

    Taking a connection from redis-py's pool and giving it back costs a pipeline more CPU than
    writing it and reading a small reply (the pool's lock, its check of the connection, its
    metrics): a pipeline of one EVALSHA took 51 microseconds of CPU through the pool and 30 with
    its connection kept (measured alone, one after the other, against a local redis-server). So a
    connection that came back whole stays here, still counted in use by the pool, up to MAX_IDLE
    of them; one that broke, or one too many, goes back to the pool. The pool still makes every
    connection and can close them all (`disconnect`, after a Sentinel failover): one closed while
    it waited here connects again, to the master Sentinel names then, when the next pipeline
    writes on it (redis-py's `send_packed_command`). Its owner keeps one per pool, so that what is
    kept here serves every caller of that pool."""

    MAX_IDLE: ClassVar[int] = 16

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[AbstractConnection] = []

    async def acquire(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        connection: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if connection.is_connected and len(self._idle) < self.MAX_IDLE:
            self._idle.append(connection)
            return
        await self._pool.release(connection)

    async def give_back(self) -> None:
        """Hand every kept connection back to the pool, whose check of a connection it hands out
        finds one that Redis closed and connects it again: after one broke, the others most likely
        did too (Redis restarted, or failed over), and the one retry must not meet one of them."""
        kept, self._idle = self._idle, []
        for connection in kept:
            await self._pool.release(connection)


class NodeConnections:
    """One Redis Cluster node's connections, as redis-py's cluster client keeps them."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    async def acquire(self) -> Connection:
        connection = self._node.acquire_connection()
        try:
            await self._node.disconnect_if_needed(connection)
        except BaseException:
            self._node.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        own = cast(Connection, connection)   # one that `acquire` gave
        try:
            await self._node.disconnect_if_needed(own)
        finally:
            self._node.release(own)


async def execute(connections: Connections, commands: Sequence[Sequence[Any]], callbacks: Callbacks) -> list[Any]:
    """The reply of each command (an error reply as its value), all written at once on one
    connection. A connection error, a timeout or a cancellation raises, and the connection is
    closed before it is released."""
    connection = await connections.acquire()
    try:
        try:
            await connection.send_packed_command(_packed(connection, commands))
            return [await _reply(connection, command, callbacks) for command in commands]
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
    finally:
        await connections.release(connection)


async def execute_retrying(connections: PoolConnections, commands: Sequence[Sequence[Any]],
                           callbacks: Callbacks) -> list[Any]:
    """`execute`, once more on a connection the pool checked when the first one broke: the one
    retry redis-py's clients are configured with (the store's `RedisLinks`), for a single Redis."""
    try:
        return await execute(connections, commands, callbacks)
    except RedisConnectionError:
        await connections.give_back()
        return await execute(connections, commands, callbacks)


def _packed(connection: AbstractConnection, commands: Sequence[Sequence[Any]]) -> bytes | list[bytes]:
    """The commands in Redis's protocol, packed by hiredis in C: redis-py's packer encodes each
    argument in Python first, which made a pipeline's EVALSHA cost 4.9 microseconds to pack where
    hiredis takes 0.6 (measured alone, a step's arguments). The bytes are the same for what the store
    sends (str in UTF-8, bytes, int, float). Anything else hiredis refuses (TypeError), and a
    connection that encodes otherwise than in strict UTF-8, is left to redis-py's packer, which
    handles or refuses it as it always did."""
    encoder = connection.encoder
    if encoder.encoding.lower() in ("utf-8", "utf8") and encoder.encoding_errors == "strict":
        try:
            return b"".join([pack_in_c(_one_word_name(command)) for command in commands])
        except TypeError:
            pass
    return connection.pack_commands(commands)


def _one_word_name(command: Sequence[Any]) -> tuple[Any, ...]:
    """The command as a tuple, a name of two words ("SCRIPT LOAD") cut in two as redis-py does."""
    name = command[0]
    if (isinstance(name, str) and " " in name) or (isinstance(name, bytes) and b" " in name):
        return (*name.split(), *command[1:])
    return command if isinstance(command, tuple) else tuple(command)


def raising_errors(replies: list[Any]) -> list[Any]:
    """`replies`, unless one is an error reply: the first is raised, as redis-py's Pipeline raises it."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


async def _reply(connection: AbstractConnection, command: Sequence[Any], callbacks: Callbacks) -> Any:
    try:
        reply = await connection.read_response()
    except ResponseError as error:
        return error
    callback = _get_response_callback(callbacks, command[0], connection)   # as redis-py's pipeline picks it
    return reply if callback is None else callback(reply)
