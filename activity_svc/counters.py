"""The counter consumer: folds events from the `events` stream into the counters, in batches,
exactly once in effect, and mirrors the new values to Redis.

Every activity_svc instance is one consumer of the group ``counters``. A batch (up to 500
entries) becomes one transaction: record the event ids in ``applied_events`` (those already
there were applied before and are skipped), add the summed deltas with one upsert per counter
table, commit, mirror, then XACK. A crash anywhere before the XACK leaves the entries pending:
this instance re-reads them when it restarts (its consumer name is stable: host and port), and
another instance claims them once they have been idle for ``claim_idle_ms``. Either way the
transaction either happened (the ids are recorded, nothing is added twice) or did not.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import redis.exceptions
from google.protobuf.message import DecodeError
from psycopg_pool import AsyncConnectionPool

from activity_svc import store
from mesh import keys
from mesh.counters import CounterMirror, Counts
from mesh.interceptors import DEPENDENCY_ERRORS
from tiktok.v1 import events_pb2

log = logging.getLogger("activity_svc.counters")

GROUP = "counters"
PRUNE_BATCH = 10_000

_SIGNS = {"created": 1, "deleted": -1, "published": 1}

# counts in the column order of user_counters and video_counters
FOLLOWERS, FOLLOWING, VIDEOS = 0, 1, 2
LIKES, COMMENTS, FAVORITES = 0, 1, 2


@dataclass
class Deltas:
    """What a batch of events adds to each counted user and video."""

    users: dict[uuid.UUID, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0])
    )
    videos: dict[uuid.UUID, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0])
    )

    def add(self, event: events_pb2.Event) -> None:
        sign = _SIGNS.get(event.type.rpartition(".")[2])
        if sign is None:  # a type this consumer does not know counts nothing (events.proto)
            return
        payload = event.WhichOneof("payload")
        if payload == "follow":
            self.users[uuid.UUID(event.follow.followee_id)][FOLLOWERS] += sign
            self.users[uuid.UUID(event.follow.follower_id)][FOLLOWING] += sign
        elif payload == "like":
            self.videos[uuid.UUID(event.like.video_id)][LIKES] += sign
        elif payload == "favorite":
            self.videos[uuid.UUID(event.favorite.video_id)][FAVORITES] += sign
        elif payload == "comment":
            self.videos[uuid.UUID(event.comment.video_id)][COMMENTS] += sign
        elif payload == "video_published" and event.type == "video.published":
            self.users[uuid.UUID(event.video_published.creator_id)][VIDEOS] += 1
            # a row of zeros, so the new video's counts are mirrored before its first like
            self.videos[uuid.UUID(event.video_published.video_id)][LIKES] += 0
        elif payload == "video_deleted" and event.type == "video.deleted":
            self.users[uuid.UUID(event.video_deleted.creator_id)][VIDEOS] -= 1


def deltas_of(events: Iterable[events_pb2.Event]) -> Deltas:
    deltas = Deltas()
    for event in events:
        deltas.add(event)
    return deltas


def parse_entry(fields: dict[bytes, bytes] | None) -> events_pb2.Event | None:
    """The event of one stream entry; None for an entry trimmed away or not an event we read."""
    if not fields or b"event" not in fields:
        return None
    try:
        event = events_pb2.Event.FromString(fields[b"event"])
        uuid.UUID(event.event_id)
        deltas_of([event])  # every id it carries must be a UUID
    except (DecodeError, ValueError):
        return None
    return event


class CounterConsumer:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis: aioredis.Redis,
        mirror: CounterMirror,
        consumer: str,
        *,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 5000,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.mirror = mirror
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms

    async def ensure_group(self) -> None:
        """Creates the group at the start of the stream, so events relayed before the first
        start (or after Redis lost its data) are counted too. Idempotent."""
        try:
            await self.redis.xgroup_create(keys.EVENTS_STREAM, GROUP, id="0", mkstream=True)
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
                await self.apply(entries)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except redis.exceptions.ResponseError as e:
                if "NOGROUP" in str(e):  # Redis lost the stream (flushed, or a new server)
                    group_ready = False
                    continue
                log.exception("counter consumer: unexpected Redis reply")
                read_from = "0"
                await asyncio.sleep(1.0)
            except DEPENDENCY_ERRORS as e:
                log.warning("counter consumer waiting for its stores: %r", e)
                read_from = "0"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("counter consumer failed; retrying its pending entries")
                read_from = "0"
                await asyncio.sleep(1.0)

    async def read(self, read_from: str) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        reply = await self.redis.xreadgroup(
            GROUP,
            self.consumer,
            {keys.EVENTS_STREAM: read_from},
            count=self.batch_size,
            block=None if read_from == "0" else self.block_ms,
        )
        return reply[0][1] if reply else []

    async def claim_abandoned(self) -> bool:
        """Takes over entries another consumer read but did not acknowledge in time (it died).
        True when something was claimed; it is then read as this consumer's own pending."""
        reply = await self.redis.xautoclaim(
            keys.EVENTS_STREAM,
            GROUP,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id="0-0",
            count=self.batch_size,
            justid=True,
        )
        claimed = reply  # with justid, redis-py returns just the claimed ids
        if claimed:
            log.info("claimed abandoned events", extra={"count": len(claimed)})
        return bool(claimed)

    async def apply(self, entries: Sequence[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        """Applies one batch exactly once in effect, mirrors it, then acknowledges it."""
        events = [e for e in (parse_entry(fields) for _, fields in entries) if e is not None]
        by_id = {uuid.UUID(e.event_id): e for e in events}
        updated: list[tuple[str, store.CounterRow]] = []
        if by_id:
            async with self.pool.connection() as conn, conn.transaction():
                fresh = await store.mark_events_applied(conn, list(by_id))
                deltas = deltas_of(by_id[i] for i in fresh)
                for table, changes in (
                    ("user_counters", deltas.users),
                    ("video_counters", deltas.videos),
                ):
                    if changes:
                        rows = await store.add_to_counters(
                            conn, table, {k: tuple(v) for k, v in changes.items()}
                        )
                        updated += [(table, r) for r in rows]
                if len(fresh) < len(by_id):
                    # a redelivery: its counts were committed, but maybe never mirrored
                    updated += await self._current_rows(
                        conn, deltas_of(e for i, e in by_id.items() if i not in fresh)
                    )
        await self.mirror.write(
            users=[_counts(r) for table, r in updated if table == "user_counters"],
            videos=[_counts(r) for table, r in updated if table == "video_counters"],
        )
        await self.redis.xack(keys.EVENTS_STREAM, GROUP, *[entry_id for entry_id, _ in entries])

    async def _current_rows(self, conn, deltas: Deltas) -> list[tuple[str, store.CounterRow]]:
        rows: list[tuple[str, store.CounterRow]] = []
        for table, ids in (("user_counters", deltas.users), ("video_counters", deltas.videos)):
            if ids:
                rows += [(table, r) for r in await store.counters_by_ids(conn, table, list(ids))]
        return rows


def _counts(row: store.CounterRow) -> Counts:
    return Counts(str(row.entity_id), row.counts, row.version)


async def prune_applied_events(
    pool: AsyncConnectionPool, redis: aioredis.Redis, margin_seconds: int = 3600
) -> None:
    """Forgets the ids of events that can no longer be delivered again.

    Only a pending entry (read, not acknowledged) is delivered again, and it was added to the
    stream before it was applied, so ids applied before the oldest pending entry was added are
    safe to forget. The margin covers a relay that sends an event twice (it crashed between
    XADD and its commit): the copy follows the original within seconds.
    """
    try:
        summary = await redis.xpending(keys.EVENTS_STREAM, GROUP)
    except redis.exceptions.ResponseError as e:
        if "NOGROUP" in str(e):  # the consumer has not started yet
            return
        raise
    horizon = time.time()
    oldest = summary.get("min") if summary else None
    if oldest:
        oldest_ms = int((oldest.decode() if isinstance(oldest, bytes) else oldest).split("-")[0])
        horizon = min(horizon, oldest_ms / 1000)
    removed = batch = 0
    while batch == 0 or batch == PRUNE_BATCH:  # in batches: each within the statement timeout
        async with pool.connection() as conn:
            batch = await store.prune_applied_events(conn, horizon - margin_seconds, PRUNE_BATCH)
        removed += batch
    if removed:
        log.info("applied events pruned", extra={"count": removed})


async def forget_idle_consumers(redis: aioredis.Redis, idle_seconds: int = 3600) -> None:
    """Removes consumers of the group that hold nothing and have not read for an hour (gone
    instances, renamed hosts), so the group's consumer list does not grow forever."""
    try:
        consumers = await redis.xinfo_consumers(keys.EVENTS_STREAM, GROUP)
    except redis.exceptions.ResponseError:  # no stream or group yet
        return
    for consumer in consumers:
        if consumer["pending"] == 0 and consumer["idle"] > idle_seconds * 1000:
            await redis.xgroup_delconsumer(keys.EVENTS_STREAM, GROUP, consumer["name"])
            name = consumer["name"]
            log.info(
                "idle consumer removed",
                extra={"consumer": name.decode() if isinstance(name, bytes) else name},
            )
