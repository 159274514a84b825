"""A consumer of the ``events`` stream in a consumer group: the loop every event consumer
shares (activity_svc's counters, precache_svc's builder).

Delivery is at least once. The handler gets a batch of entries and returns normally only when
it is done with all of them; then they are acknowledged. A crash before that leaves them
pending: this consumer re-reads its own pending entries first when it starts (give it a name
that is stable across restarts), and other consumers of the group claim entries that stayed
pending for ``claim_idle_ms``. Handlers must therefore make a second delivery harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import redis.asyncio as aioredis
import redis.exceptions
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge

from mesh import keys
from mesh.interceptors import DEPENDENCY_ERRORS
from tiktok.v1 import events_pb2

log = logging.getLogger("mesh.consumer")

Entry = tuple[bytes, dict[bytes, bytes] | None]  # (stream id, fields; None when trimmed away)
Handler = Callable[[Sequence[Entry]], Awaitable[None]]


LAG = Gauge(
    "events_consumer_lag_seconds",
    "Age of the newest stream entry this consumer has handled and acknowledged, at that moment:"
    " how far behind the writes its group's effects are (counters, feeds).",
    ["group"],
)
HANDLED = Counter(
    "events_consumer_entries_total", "Stream entries handled and acknowledged.", ["group"]
)


def lag_seconds(entry_id: bytes | str, now: float) -> float:
    """How old a stream entry is: its id starts with the milliseconds it was added at."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return max(0.0, now - int(text.split("-", 1)[0]) / 1000)


def parse_event(fields: dict[bytes, bytes] | None) -> events_pb2.Event | None:
    """The event of one stream entry; None for an entry trimmed away or not an event."""
    if not fields or b"event" not in fields:
        return None
    try:
        event = events_pb2.Event.FromString(fields[b"event"])
        uuid.UUID(event.event_id)
    except (DecodeError, ValueError):
        return None
    return event


class GroupConsumer:
    def __init__(
        self,
        redis: aioredis.Redis,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 5000,
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms

    async def ensure_group(self) -> None:
        """Creates the group at the start of the stream, so events relayed before the first
        start (or after Redis lost its data) are handled too. Idempotent."""
        try:
            await self.redis.xgroup_create(keys.EVENTS_STREAM, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def run(self) -> None:
        """Consumes until cancelled; a store outage is waited out, never fatal."""
        read_from = "0"  # this consumer's own pending entries first, then new ones (">")
        next_claim = 0.0
        backoff = 0.1
        group_ready = False
        while True:
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + self.claim_idle_ms / 2000
                    if await self.claim_abandoned():
                        read_from = "0"
                entries = await self.read(read_from)
                if not entries:
                    read_from = ">"
                    continue
                await self.handler(entries)
                await self.redis.xack(
                    keys.EVENTS_STREAM, self.group, *[entry_id for entry_id, _ in entries]
                )
                LAG.labels(self.group).set(lag_seconds(entries[-1][0], time.time()))
                HANDLED.labels(self.group).inc(len(entries))
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except redis.exceptions.ResponseError as e:
                if "NOGROUP" in str(e):  # Redis lost the stream (flushed, or a new server)
                    group_ready = False
                    continue
                log.exception("%s consumer: unexpected Redis reply", self.group)
                read_from = "0"
                await asyncio.sleep(1.0)
            except DEPENDENCY_ERRORS as e:
                log.warning("%s consumer waiting for its stores: %r", self.group, e)
                read_from = "0"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)  # back within a second of the store
            except Exception:
                log.exception("%s consumer failed; retrying its pending entries", self.group)
                read_from = "0"
                await asyncio.sleep(1.0)

    async def read(self, read_from: str) -> list[Entry]:
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {keys.EVENTS_STREAM: read_from},
            count=self.batch_size,
            block=None if read_from == "0" else self.block_ms,
        )
        return cast(list[Entry], reply[0][1]) if reply else []  # type: ignore[index]

    async def claim_abandoned(self) -> bool:
        """Takes over entries another consumer read but did not acknowledge in time (it died).
        True when something was claimed; it is then read as this consumer's own pending."""
        claimed = await self.redis.xautoclaim(
            keys.EVENTS_STREAM,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id="0-0",
            count=self.batch_size,
            justid=True,  # redis-py then returns just the list of claimed ids
        )
        if claimed:
            log.info("claimed abandoned events", extra={"group": self.group, "count": len(claimed)})
        return bool(claimed)

    async def forget_idle_consumers(self, idle_seconds: int = 3600) -> None:
        """Removes consumers that hold nothing and have not read for an hour (gone instances),
        so the group's consumer list does not grow forever."""
        try:
            consumers = await self.redis.xinfo_consumers(keys.EVENTS_STREAM, self.group)
        except redis.exceptions.ResponseError:  # no stream or group yet
            return
        for consumer in consumers:
            if consumer["pending"] == 0 and consumer["idle"] > idle_seconds * 1000:
                await self.redis.xgroup_delconsumer(
                    keys.EVENTS_STREAM, self.group, consumer["name"]
                )
