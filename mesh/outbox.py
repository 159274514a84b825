"""The transactional outbox: a service records events in its own ``outbox`` table in the same
transaction as the write they describe, and a relay moves committed rows to the Redis Stream
``events``.

Delivery is at least once, and survives Redis: a relayed row is kept, with the stream position
it was given, until every consumer group in ``keys.CONSUMER_GROUPS`` has acknowledged that
entry; a row whose entry Redis no longer has (flushed, restarted from an older append-only file,
failed over to a replica that had not received it, trimmed unconsumed) is relayed again.
Consumers deduplicate on ``event_id``. One relay per schema works at a time (a
transaction-level advisory lock), which keeps events of one aggregate in commit order even with
several instances. Every service with an outbox creates the table in its migrations:

    CREATE TABLE outbox (id bigserial PRIMARY KEY, event_type text NOT NULL,
                         aggregate_id uuid NOT NULL, payload bytea NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT now(),
                         stream_ms bigint, stream_seq bigint);  -- NULL: not relayed (again) yet
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis
import redis.exceptions
from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from mesh import keys
from mesh.interceptors import DEPENDENCY_ERRORS
from tiktok.v1 import events_pb2

log = logging.getLogger("mesh.outbox")


def new_event(event_type: str, aggregate_id: str, **payload: Message) -> events_pb2.Event:
    """An event envelope with a fresh id and the time now; ``payload`` names its oneof field."""
    event = events_pb2.Event(
        event_id=str(uuid.uuid4()),
        type=event_type,
        aggregate_id=aggregate_id,
        **payload,  # type: ignore[arg-type]
    )
    event.occurred_at.FromDatetime(datetime.now(UTC))
    return event


# The outbox insert, for statements that record an event in a CTE next to their write (one
# round trip); its parameters are ``outbox_params(event)``.
OUTBOX_INSERT = "INSERT INTO outbox (event_type, aggregate_id, payload)"


def outbox_params(event: events_pb2.Event) -> list[object]:
    return [event.type, event.aggregate_id, event.SerializeToString()]


async def record_event(conn: AsyncConnection, event: events_pb2.Event) -> None:
    """Adds ``event`` to the outbox; call inside the transaction of the write it describes."""
    await conn.execute(f"{OUTBOX_INSERT} VALUES (%s, %s, %s)", outbox_params(event))


StreamId = tuple[int, int]  # (milliseconds, sequence) of a stream entry's id


def stream_id(text: bytes | str) -> StreamId:
    ms, _, seq = (text.decode() if isinstance(text, bytes) else text).partition("-")
    return int(ms), int(seq or 0)


def acknowledged_below(groups: dict[str, tuple[StreamId, StreamId | None]]) -> StreamId:
    """The stream position below which every required consumer group has acknowledged every
    entry, from each group's (last delivered id, oldest pending id or None); a required group
    that does not exist (yet, or any more) has acknowledged nothing."""
    bound: StreamId | None = None
    for name in keys.CONSUMER_GROUPS:
        if name not in groups:
            return (0, 0)
        delivered, oldest_pending = groups[name]
        below = oldest_pending if oldest_pending is not None else (delivered[0], delivered[1] + 1)
        bound = below if bound is None else min(bound, below)
    return bound if bound is not None else (0, 0)


class OutboxRelay:
    """Moves committed outbox rows to the events stream, oldest first, in batches; forgets rows
    once consumed and sends again those Redis lost (``audit``, every ``audit_seconds``)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis: aioredis.Redis,
        schema: str,
        *,
        batch_size: int = 500,
        idle_seconds: float = 0.05,
        audit_seconds: float = 1.0,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.lock_key = f"outbox:{schema}"
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.audit_seconds = audit_seconds

    async def _locked(self, conn: AsyncConnection) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [self.lock_key])
        row = await cur.fetchone()
        return bool(row and row[0])

    async def relay_once(self) -> int:
        """Relays one batch; returns how many events it moved (0 if another relay holds it)."""
        async with self.pool.connection() as conn, conn.transaction():
            if not await self._locked(conn):
                return 0
            cur = await conn.execute(
                "SELECT id, event_type, payload FROM outbox WHERE stream_ms IS NULL"
                " ORDER BY id LIMIT %s",
                [self.batch_size],
            )
            rows = await cur.fetchall()
            if not rows:
                return 0
            pipe = self.redis.pipeline(transaction=False)
            for _, event_type, payload in rows:
                pipe.xadd(
                    keys.EVENTS_STREAM,
                    {"type": event_type, "event": bytes(payload)},
                    maxlen=keys.EVENTS_STREAM_MAXLEN,
                    approximate=True,
                )
            positions = [stream_id(entry_id) for entry_id in await pipe.execute()]
            # ids, not "id <= max": a lower id may commit after a higher one was relayed
            await conn.execute(
                "UPDATE outbox SET stream_ms = p.ms, stream_seq = p.seq"
                " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS p(id, ms, seq)"
                " WHERE outbox.id = p.id",
                [[r[0] for r in rows], [p[0] for p in positions], [p[1] for p in positions]],
            )
            return len(rows)

    async def audit(self, limit: int = 1000) -> tuple[int, int]:
        """Deletes the rows every consumer group has acknowledged, and marks for relaying again
        the oldest ``limit`` of the others whose entries the stream no longer holds. Returns
        (forgotten, to send again)."""
        groups = await self._groups()
        below = acknowledged_below(groups)
        async with self.pool.connection() as conn, conn.transaction():
            if not await self._locked(conn):
                return 0, 0
            cur = await conn.execute(
                "DELETE FROM outbox WHERE stream_ms IS NOT NULL"
                " AND (stream_ms, stream_seq) < (%s, %s)",
                list(below),
            )
            forgotten = cur.rowcount
            cur = await conn.execute(
                "SELECT id, stream_ms, stream_seq FROM outbox WHERE stream_ms IS NOT NULL"
                " ORDER BY stream_ms, stream_seq LIMIT %s",
                [limit],
            )
            relayed = await cur.fetchall()
            if not relayed:
                return forgotten, 0
            pipe = self.redis.pipeline(transaction=False)
            for _, ms, seq in relayed:
                pipe.xrange(keys.EVENTS_STREAM, f"{ms}-{seq}", f"{ms}-{seq}", count=1)
            held = await pipe.execute()
            lost = [row[0] for row, entries in zip(relayed, held, strict=True) if not entries]
            if lost:
                await conn.execute(
                    "UPDATE outbox SET stream_ms = NULL, stream_seq = NULL WHERE id = ANY(%s)",
                    [lost],
                )
                log.warning("events lost by Redis are relayed again", extra={"count": len(lost)})
            return forgotten, len(lost)

    async def _groups(self) -> dict[str, tuple[StreamId, StreamId | None]]:
        """Each consumer group's last delivered id and oldest pending id (None: none pending);
        no groups at all when the stream does not exist."""
        try:
            infos = await self.redis.xinfo_groups(keys.EVENTS_STREAM)
        except redis.exceptions.ResponseError as e:
            if "no such key" in str(e).lower():
                return {}
            raise
        groups: dict[str, tuple[StreamId, StreamId | None]] = {}
        for info in infos:
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            oldest = None
            if info["pending"]:
                summary = await self.redis.xpending(keys.EVENTS_STREAM, name)
                oldest = stream_id(summary["min"]) if summary and summary.get("min") else None
            groups[name] = (stream_id(info["last-delivered-id"]), oldest)
        return groups

    async def run(self) -> None:
        """Relays until cancelled; a store outage is waited out, never fatal."""
        backoff = self.idle_seconds
        next_audit = 0.0
        while True:
            try:
                if time.monotonic() >= next_audit:
                    next_audit = time.monotonic() + self.audit_seconds
                    await self.audit()
                moved = await self.relay_once()
                backoff = self.idle_seconds
                if moved == self.batch_size:
                    continue
            except asyncio.CancelledError:
                raise
            except DEPENDENCY_ERRORS as e:
                backoff = min(max(backoff * 2, 0.1), 1.0)  # back within a second of the store
                log.warning("outbox relay waiting for its stores: %r", e)
            except Exception:
                backoff = 1.0
                log.exception("outbox relay failed; retrying")
            await asyncio.sleep(backoff)
