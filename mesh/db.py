"""Postgres: an async connection pool per service schema, and numbered SQL migrations.

Each service owns one schema named after it; its pool's connections have ``search_path`` set
to it, so ``store.py`` modules write plain table names and can never touch another schema's
tables by accident.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
from prometheus_client import Counter, Gauge
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger("mesh.db")
T = TypeVar("T")

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class Pool(AsyncConnectionPool):
    """A pool that fails fast while its server is unreachable: once a caller timed out waiting
    for a connection while connecting failed, callers fail at once for ``UNREACHABLE_SECONDS``
    (unless a connection is idle by then) instead of each waiting out the timeout; and a
    connection found broken (the server restarted) has the idle ones checked, so the others
    are replaced before a caller gets them."""

    UNREACHABLE_SECONDS = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unreachable_until = 0.0
        self._connect_errors = 0
        self._checking: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if time.monotonic() < self.unreachable_until and not self.get_stats().get("pool_available"):
            raise PoolTimeout(f"{self.name}: the database was unreachable a moment ago")
        got = False
        try:
            async with super().connection(timeout) as conn:
                got = True
                try:
                    yield conn
                except psycopg.OperationalError:
                    if conn.broken:
                        self._check_soon()
                    raise
        except PoolTimeout:
            if not got:
                errors = self.get_stats().get("connections_errors", 0)
                if errors > self._connect_errors:
                    self.unreachable_until = time.monotonic() + self.UNREACHABLE_SECONDS
                self._connect_errors = errors
            raise

    def failing(self) -> bool:
        return time.monotonic() < self.unreachable_until

    def _check_soon(self) -> None:
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self.check())


async def open_pool(
    url: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 1.0,
    wait: bool = True,
) -> AsyncConnectionPool:
    """A pool whose connections use ``schema``; waits until one connection works (unless
    ``wait`` is false: a store that may be down at start, connected when it comes). A caller
    waits at most ``timeout`` for a connection: with the database down, a write answers
    UNAVAILABLE within it (and the next ones at once, see ``Pool``)."""
    pool = Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,  # seconds a caller waits for a connection before PoolTimeout
        kwargs={
            "options": f"-c search_path={schema} -c statement_timeout=5000",
            "connect_timeout": 5,
            "autocommit": True,
        },
        open=False,
    )
    await pool.open(wait=wait, timeout=30)
    return pool


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    """The migrations in ``directory`` by version; rejects misnamed files and duplicate versions."""
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration {path.name}: name must look like 0001_create_users.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"migrations {found[version].name} and {path.name} share a version")
        found[version] = path
    return sorted(found.items())


async def apply_migrations(url: str, schema: str, directory: Path) -> list[int]:
    """Applies the pending migrations of ``schema`` in one transaction and records them.

    An advisory lock serialises instances that start together; they see the same result.
    Returns the versions applied by this call.
    """
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"migrate:{schema}"])
            ident = sql.Identifier(schema)
            # a role that owns its schema but may not create schemas still migrates: CREATE
            # SCHEMA IF NOT EXISTS checks the database privilege even when the schema is there
            cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, path in migration_files(directory):
                if version in done:
                    continue
                # no parameters: psycopg sends it with the simple protocol, several statements OK
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    [version, path.name],
                )
                applied_now.append(version)
    if applied_now:
        log.info("migrations applied", extra={"schema": schema, "versions": applied_now})
    return applied_now


REPLICA_LAG = Gauge(
    "db_replica_lag_seconds",
    "How far the read replica's replay is behind what it has received from the primary "
    "(0 when caught up; -1 while it cannot be reached or is not streaming).",
)
ROUTED_READS = Counter(
    "db_routed_reads_total",
    "Reads that could go to the replica, by where they went: replica, primary (the replica is "
    "down, lagging or not yet caught up with the read's start), replica_stale (the primary "
    "is down: the replica, however old, beats an error).",
    ["target"],
)


class ReadRouter:
    """Reads that may be served by the read replica: a drop-in for a pool's ``connection()``.

    A read goes to the replica when it is streaming, within ``max_lag`` seconds, and has
    replayed everything the primary had committed when the read began (its WAL position, asked
    of the primary first): so a reader never misses a write acknowledged before it asked,
    anyone's, its own included. A replica that has not caught up within ``catch_up`` seconds,
    lags, or is down sends the read to the primary; a primary that is down or hung (no answer
    within ``ask_primary``) leaves the replica as it is (stale beats an error). Both waits are
    well inside the callers' deadlines. ``run()`` watches the replica's lag once a second.
    """

    def __init__(
        self,
        primary: AsyncConnectionPool,
        replica: AsyncConnectionPool | None,
        *,
        max_lag: float = 5.0,
        catch_up: float = 0.1,
        ask_primary: float = 0.15,
        owns_primary: bool = True,
        stale_ok: bool = True,
    ) -> None:
        self.primary, self.replica = primary, replica
        self.owns_primary = owns_primary
        # False: a read whose freshness cannot be checked goes to the primary instead (a
        # builder that caches what it reads must not cache a replica that may be behind)
        self.stale_ok = stale_ok
        self.max_lag, self.catch_up, self.ask_primary = max_lag, catch_up, ask_primary
        self.healthy = replica is not None  # streaming, within max_lag: serves current reads
        self.reachable = replica is not None  # answers at all (stale reads, primary down)
        self.primary_down_until = 0.0
        self._last_lag: float | None = 0.0
        self._slow_answers = 0
        self._asking: set[asyncio.Future[str | None]] = set()  # questions still out

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.reading() as (conn, _):
            yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], bool]]:
        """A connection for a read and whether what it reads is known to be current (False:
        the primary could not be asked, so the replica may be behind: fine to answer with,
        not to cache)."""
        if self.replica is not None and self.healthy:
            position = await self._primary_position()
            if position is not None or self.stale_ok:
                yielded = False
                try:
                    async with self.replica.connection() as conn:
                        if position is None or await self._replayed(conn, position):
                            ROUTED_READS.labels("replica" if position else "replica_stale").inc()
                            yielded = True
                            yield conn, position is not None
                            return
                except (psycopg.OperationalError, PoolTimeout):
                    if yielded:
                        raise  # the caller's read failed on the replica: theirs to handle
                    self.healthy = self.reachable = False
                    log.warning("replica unreachable: reads go to the primary")
        # the primary; with it down too, a replica that still answers (behind, or cut off from
        # the primary: a replica stops streaming when its primary stops) beats an error
        fallback = self.stale_ok and self.replica is not None and self.reachable
        # (a hung primary answers no position within ask_primary: it would hang the read too;
        # and a replica cut off mid-record shows a lag that only grows while it is hung)
        if fallback and await self._primary_position() is None:
            async with self._stale() as conn:
                yield conn, False
            return
        yielded = False
        try:
            async with self.primary.connection() as conn:
                ROUTED_READS.labels("primary").inc()
                yielded = True
                yield conn, True
                return
        except (psycopg.OperationalError, PoolTimeout):
            if yielded or not fallback:
                raise
            self.primary_down_until = time.monotonic() + 1.0
            log.warning("primary unreachable: the replica answers, however far behind")
        async with self._stale() as conn:
            yield conn, False

    @asynccontextmanager
    async def _stale(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        assert self.replica is not None
        ROUTED_READS.labels("replica_stale").inc()
        async with self.replica.connection() as conn:
            yield conn

    async def primary_first(
        self, read: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """``read`` on the primary (a single, current read: no position to ask first), or on
        the replica while the primary is down or fails it: stale beats an error. A primary that
        failed is skipped for a second, so an outage costs one read a failed attempt, not all."""
        fallback = self.replica is not None and self.reachable
        if not fallback or time.monotonic() >= self.primary_down_until:
            try:
                async with self.primary.connection() as conn:
                    return await read(conn)
            except (psycopg.OperationalError, PoolTimeout) as e:
                if not fallback:
                    raise
                self.primary_down_until = time.monotonic() + 1.0
                log.warning("primary failed a read, the replica answers: %r", e)
        async with self._stale() as conn:
            return await read(conn)

    async def _primary_position(self) -> str | None:
        """The primary's WAL position now; None while it is down or hung (asked again a second
        after it last failed, so an outage does not cost every read a timeout). The question
        is left to finish on its own when it times out: cancelling a query on a hung server
        makes psycopg wait for a cancel request that server never answers."""
        if time.monotonic() < self.primary_down_until:
            return None
        asking = asyncio.ensure_future(self._ask_primary())
        self._asking.add(asking)
        asking.add_done_callback(self._answered)
        try:
            return await asyncio.wait_for(asyncio.shield(asking), self.ask_primary)
        except (psycopg.OperationalError, PoolTimeout, TimeoutError):
            self.primary_down_until = time.monotonic() + 1.0
            return None

    def _answered(self, asking: asyncio.Future[str | None]) -> None:
        self._asking.discard(asking)
        if not asking.cancelled():
            asking.exception()  # a late failure is expected, not an unretrieved error

    async def _ask_primary(self) -> str | None:
        async with self.primary.connection() as conn:
            # the insert position, not the write position: with synchronous_commit off, a
            # commit already acknowledged may not have been written yet
            cur = await conn.execute("SELECT pg_current_wal_insert_lsn()::text")
            row = await cur.fetchone()
            return str(row[0]) if row else None

    async def _replayed(self, conn: psycopg.AsyncConnection[Any], position: str) -> bool:
        """Waits up to ``catch_up`` for the replica to replay ``position``."""
        deadline = time.monotonic() + self.catch_up
        while True:
            cur = await conn.execute(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, true)", [position]
            )
            row = await cur.fetchone()
            if row and row[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.owns_primary:
            await self.primary.close()
        if self.replica is not None:
            await self.replica.close()

    async def run(self) -> None:
        """Measures the replica's lag every second and decides whether it serves reads; while
        the primary is down, asks it every second whether it is back, so no request waits to
        find out."""
        if self.replica is None:
            return
        while True:
            await self._watch_primary()
            lag = await self._lag()
            if lag:
                # WAL that arrived a moment ago after a quiet spell reads as the whole quiet
                # spell (the last replayed transaction is that old): look again once replayed
                await asyncio.sleep(0.05)
                lag = await self._lag()
            self._last_lag = lag
            REPLICA_LAG.set(-1 if lag is None else lag)
            healthy = lag is not None and lag <= self.max_lag
            if healthy != self.healthy:
                log.warning("replica %s", "serves reads again" if healthy else f"lags ({lag} s)")
            self.healthy = healthy
            await asyncio.sleep(1.0)

    async def _watch_primary(self) -> None:
        pool = self.primary if isinstance(self.primary, Pool) else None
        down = time.monotonic() < self.primary_down_until
        if not down and not (pool is not None and pool.failing()):
            return  # requests find out soon enough; no question while all is well
        try:
            conninfo = cast(str, self.primary.conninfo)
            kwargs = dict(cast(dict[str, Any], self.primary.kwargs) or {})
            kwargs["connect_timeout"] = 1
            async with asyncio.timeout(1.0):
                conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
                await conn.close()
        except (psycopg.OperationalError, TimeoutError):
            self.primary_down_until = time.monotonic() + 1.5  # until the next question
            if pool is not None:
                pool.unreachable_until = self.primary_down_until
            return
        self.primary_down_until = 0.0
        if pool is not None:
            pool.unreachable_until = 0.0

    async def _lag(self) -> float | None:
        """Seconds of WAL received but not yet replayed; None when the replica cannot be reached
        or has stopped streaming (its data then ages without showing a lag). Notes whether it
        answered at all (``reachable``)."""
        assert self.replica is not None
        try:
            async with asyncio.timeout(1.0), self.replica.connection() as conn:
                cur = await conn.execute(
                    "SELECT pg_is_in_recovery(),"
                    " (SELECT status FROM pg_stat_wal_receiver),"
                    " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
                    " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
                )
                row = await cur.fetchone()
        except TimeoutError:
            # slow, not gone (a loaded machine): the last verdict stands for a few seconds
            self._slow_answers += 1
            if self._slow_answers < 3:
                return self._last_lag
            self.reachable = False
            return None
        except (psycopg.OperationalError, PoolTimeout):
            self.reachable = False
            return None
        self._slow_answers = 0
        self.reachable = row is not None
        if row is None:
            return None
        in_recovery, status, lag = row
        if not in_recovery:
            return 0.0  # "the replica" is a primary (DATABASE_REPLICA_URL unset): never behind
        if status != "streaming":
            return None
        return float(lag or 0)


async def open_reads(
    primary_url: str,
    replica_url: str,
    schema: str = "public",
    *,
    max_size: int = 10,
    max_lag: float = 5.0,
    catch_up: float = 0.1,
    stale_ok: bool = True,
) -> ReadRouter:
    """The pools of a service's replica reads: the primary's (waited for, as at any start) and
    the replica's (not waited for: a replica down at start only sends reads to the primary)."""
    primary = await open_pool(primary_url, schema, max_size=max_size)
    replica = await _replica_pool(primary_url, replica_url, schema, max_size)
    return ReadRouter(primary, replica, max_lag=max_lag, catch_up=catch_up, stale_ok=stale_ok)


async def replica_reads(
    primary: AsyncConnectionPool,
    primary_url: str,
    replica_url: str,
    schema: str,
    *,
    max_size: int = 10,
    max_lag: float = 5.0,
    catch_up: float = 0.1,
) -> ReadRouter:
    """Replica reads for a service that writes: its own primary pool (not closed by the
    router) and a replica pool of its schema."""
    replica = await _replica_pool(primary_url, replica_url, schema, max_size)
    return ReadRouter(primary, replica, max_lag=max_lag, catch_up=catch_up, owns_primary=False)


async def _replica_pool(
    primary_url: str, replica_url: str, schema: str, max_size: int
) -> AsyncConnectionPool | None:
    if replica_url == primary_url:
        return None  # no replica: every read goes to the primary
    return await open_pool(replica_url, schema, max_size=max_size, wait=False)
