"""Endpoint lists, round-robin failover and back-off, shared by Worker and client."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CHANNEL_OPTIONS", "Backoff", "EndpointRing", "validate_endpoints"]

# gRPC's own reconnect back-off defaults to 1 s growing to 120 s: a channel to
# a restarted node would refuse calls for up to two minutes. Ours follows the
# SDK's failover pace instead. Despite its name, "min_reconnect_backoff_ms" is
# gRPC's minimum *connect timeout* (default 20 s): 2 s gives up on a frozen
# node quickly without failing a slow but healthy handshake. Keepalive pings
# notice a silently dead peer (a frozen node, a cut network) on a quiet stream.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
)


def validate_endpoints(endpoints: Sequence[str]) -> tuple[str, ...]:
    """Check an endpoint list ("host:port" strings) and return it as a tuple.

    Raises:
        TypeError: a single string was given instead of a list.
        ValueError: the list is empty or holds an empty or non-string entry.
    """
    if isinstance(endpoints, str):
        raise TypeError("endpoints must be a list of 'host:port' strings, not one string")
    result = tuple(endpoints)
    if not result:
        raise ValueError("endpoints must not be empty")
    for endpoint in result:
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise ValueError(f"invalid endpoint {endpoint!r}: expected 'host:port'")
    return result


class EndpointRing:
    """A fixed list of endpoints walked round robin; ``current`` is sticky
    until ``advance()`` is called after a failure."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self._endpoints = validate_endpoints(endpoints)
        self._index = 0

    @property
    def current(self) -> str:
        """The endpoint to use now."""
        return self._endpoints[self._index]

    def advance(self) -> str:
        """Move to the next endpoint (wrapping around) and return it."""
        self._index = (self._index + 1) % len(self._endpoints)
        return self.current

    def __len__(self) -> int:
        return len(self._endpoints)


class Backoff:
    """Exponential back-off: ``initial_s``, doubling up to ``max_s``."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError("back-off needs 0 < initial_s <= max_s")
        self._initial_s = initial_s
        self._max_s = max_s
        self._next_s = initial_s

    def next(self) -> float:
        """Return the delay to wait now and double the following one."""
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self._max_s)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._next_s = self._initial_s
