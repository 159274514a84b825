"""One Redis connection shared by every concurrent caller, for the hottest call of the mesh
(feed_svc's page script).

redis-py gives each in-flight command a pooled connection of its own: a packed command, a
write and a read per call, and in Valkey one read and one write per connection. Here the
callers of one event-loop tick are written together in one ``write`` and Redis answers in
order, so each reply goes to the oldest caller still waiting. Under load Valkey reads dozens
of commands per syscall. Anything but ``redis://`` (TLS, a socket path) keeps redis-py.

Failure is a redis-py exception, as redis-py would raise it (``LOADING`` is a
``BusyLoadingError``, a lost connection a ``ConnectionError``), so callers' handling of
dependency failures is unchanged. A caller that gives up (its own timeout) drops the
connection, as redis-py does: a socket that stopped answering is never written to again, and
every caller still waiting on it fails at once. The next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import parse_url

E = redis.exceptions
# Error replies by code, as redis-py's parser types them, so a caller catches the same classes
# on this path as on redis-py's (the codes a single node answers with; others: ResponseError).
_ERRORS: dict[str, type[E.RedisError]] = {
    "OOM": E.OutOfMemoryError,
    "LOADING": E.BusyLoadingError,
    "NOSCRIPT": E.NoScriptError,
    "READONLY": E.ReadOnlyError,
    "EXECABORT": E.ExecAbortError,
    "NOPERM": E.NoPermissionError,
    "NOAUTH": E.AuthenticationError,
    "WRONGPASS": E.AuthenticationError,
    "MASTERDOWN": E.MasterDownError,
    "TRYAGAIN": E.TryAgainError,
}


def redis_error(reply: str) -> E.RedisError:
    """The exception redis-py raises for this error reply."""
    code, _, rest = reply.partition(" ")
    kind = _ERRORS.get(code)
    return kind(rest, status_code=code) if kind else E.ResponseError(reply)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=redis.exceptions.ResponseError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.pending: list[bytes] = []  # commands of this tick, written together
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():  # its caller gave up
                continue
            if isinstance(reply, redis.exceptions.ResponseError):
                future.set_exception(redis_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = redis.exceptions.ConnectionError(f"Redis connection lost: {exc!r}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)

    def drop(self) -> None:
        """Closes the connection now; its waiting callers fail (connection_lost)."""
        if self.transport is not None:
            self.transport.abort()

    def send(self, command: bytes, future: asyncio.Future[Any]) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self.pending.append(command)
        self.waiting.append(future)

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.pending))
        self.pending.clear()


class SharedConnection:
    """``execute(*args)``: a Redis command on the shared connection (``redis://`` URLs), or on
    redis-py's pool otherwise. Replies are raw (bytes), as redis-py's with decode off."""

    def __init__(self, url: str, fallback: aioredis.Redis, *, connect_timeout: float = 2.0):
        self.fallback = fallback
        self.options = parse_url(url) if url.startswith("redis://") else None
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock = asyncio.Lock()

    async def execute(self, *args: str | bytes | int | float) -> Any:
        if self.options is None:
            return await self.fallback.execute_command(*args)  # type: ignore[no-untyped-call]
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        future = asyncio.get_running_loop().create_future()
        protocol.send(hiredis.pack_command(args), future)  # type: ignore[arg-type]
        try:
            return await future
        except asyncio.CancelledError:
            protocol.drop()  # its reply may never come: nobody waits on this socket again
            raise

    async def _connect(self) -> _Protocol:
        async with self._connecting:
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            options = self.options or {}
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, protocol = await loop.create_connection(
                        _Protocol, options.get("host", "127.0.0.1"), options.get("port", 6379)
                    )
            except (OSError, TimeoutError) as e:
                raise redis.exceptions.ConnectionError(f"Redis unreachable: {e!r}") from e
            try:
                async with asyncio.timeout(self.connect_timeout):
                    for command in self._setup_commands(options):
                        future = loop.create_future()
                        protocol.send(hiredis.pack_command(command), future)  # type: ignore[arg-type]
                        await future
            except BaseException as e:
                protocol.drop()  # a wrong password, a timeout: no half-set-up connection left
                if isinstance(e, TimeoutError):
                    raise redis.exceptions.ConnectionError("Redis did not answer AUTH") from e
                raise
            self._protocol = protocol
            return protocol

    @staticmethod
    def _setup_commands(options: Mapping[str, Any]) -> list[tuple[str | int, ...]]:
        setup: list[tuple[str | int, ...]] = []
        if options.get("password"):
            user = [options["username"]] if options.get("username") else []
            setup.append(("AUTH", *user, options["password"]))
        if options.get("db"):
            setup.append(("SELECT", options["db"]))
        return setup

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
