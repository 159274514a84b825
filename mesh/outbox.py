"""The transactional outbox: a service records events in its own ``outbox`` table in the same
transaction as the write they describe, and a relay moves committed rows to the Redis Stream
``events``.

Delivery is at least once: the relay deletes rows only after XADD succeeded, in the same
database transaction, so a crash in between re-sends them; consumers deduplicate on
``event_id``. One relay per schema works at a time (a transaction-level advisory lock), which
keeps events of one aggregate in commit order even with several instances. Every service with
an outbox creates the table in its migrations:

    CREATE TABLE outbox (id bigserial PRIMARY KEY, event_type text NOT NULL,
                         aggregate_id uuid NOT NULL, payload bytea NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT now());
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis
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


class OutboxRelay:
    """Moves committed outbox rows to the events stream, oldest first, in batches."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis: aioredis.Redis,
        schema: str,
        *,
        batch_size: int = 500,
        idle_seconds: float = 0.05,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.lock_key = f"outbox:{schema}"
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds

    async def relay_once(self) -> int:
        """Relays one batch; returns how many events it moved (0 if another relay holds it)."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtext(%s))", [self.lock_key]
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                return 0
            cur = await conn.execute(
                "SELECT id, event_type, payload FROM outbox ORDER BY id LIMIT %s",
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
            await pipe.execute()
            # ids, not "id <= max": a lower id may commit after a higher one was relayed
            await conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", [[r[0] for r in rows]])
            return len(rows)

    async def run(self) -> None:
        """Relays until cancelled; a store outage is waited out, never fatal."""
        backoff = self.idle_seconds
        while True:
            try:
                moved = await self.relay_once()
                backoff = self.idle_seconds
                if moved == self.batch_size:
                    continue
            except asyncio.CancelledError:
                raise
            except DEPENDENCY_ERRORS as e:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning("outbox relay waiting for its stores: %r", e)
            except Exception:
                backoff = 1.0
                log.exception("outbox relay failed; retrying")
            await asyncio.sleep(backoff)
