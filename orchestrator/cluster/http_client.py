"""The HTTP client HTTP tasks are sent with (`guarded_client`), in a module of its own so that a node
imports httpx and httpcore only when its first HTTP task runs (cluster/http_tasks.py): every
connection, a redirect's too, goes to an address `AddressGuard` checked, and only there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from ..core.http_request import AddressDenied
from .http_tasks import AddressGuard, NoAddress


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the guard checked."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(self.guard.checked(host, port), timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than the connection timeout") from None
        except NoAddress as exc:
            raise httpcore.ConnectError(str(exc)) from None
        except OSError as exc:   # socket.gaierror: no such name
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        error: Exception | None = None
        for address in addresses:   # the checked address itself: never resolved again
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise AddressDenied("HTTP tasks connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport whose connection pool connects through `_GuardedBackend`: every
    connection, a redirect's too, is checked by address (httpx takes no network backend, so its
    pool is replaced by an equal one that has it)."""

    def __init__(self, guard: AddressGuard, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        assert isinstance(self._pool, httpcore.AsyncConnectionPool)   # what is replaced: httpx's own pool
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(guard))


def guarded_client(guard: AddressGuard, concurrency: int) -> httpx.AsyncClient:
    """The client HTTP tasks are sent with: redirects followed (5 at most), each checked."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(transport=GuardedTransport(guard, limits), follow_redirects=True, max_redirects=5,
                             trust_env=False)
