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

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis.asyncio as aioredis
import redis.exceptions
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from activity_svc import store
from mesh import keys
from mesh.consumer import Entry, GroupConsumer, parse_event
from readmodels.counters import USER_FIELDS, VIDEO_FIELDS, CounterMirror, Counts
from tiktok.v1 import events_pb2

log = logging.getLogger("activity_svc.counters")

GROUP = keys.COUNTERS_GROUP
# each batch holds it shared; the reconciler (reconcile.py) exclusively, while it recounts
RECOUNT_LOCK = f"counters:{GROUP}"
PRUNE_BATCH = 10_000

_SIGNS = {"created": 1, "deleted": -1, "published": 1}

# counts in the column order of user_counters and video_counters (store.COUNTER_COLUMNS)
FOLLOWERS, FOLLOWING, VIDEOS, TOTAL_VIEWS = 0, 1, 2, 3
LIKES, COMMENTS, FAVORITES, VIEWS, WATCH_MS, COMPLETIONS = 0, 1, 2, 3, 4, 5
_WIDTH = {table: len(columns[1]) for table, columns in store.COUNTER_COLUMNS.items()}


@dataclass
class Deltas:
    """What a batch of events adds to each counted user and video."""

    users: dict[uuid.UUID, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * _WIDTH["user_counters"])
    )
    videos: dict[uuid.UUID, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * _WIDTH["video_counters"])
    )
    # (viewer, video) → when: signed-in viewers' plays to the end
    completions: dict[tuple[uuid.UUID, uuid.UUID], datetime] = field(default_factory=dict)

    def add(self, event: events_pb2.Event) -> None:
        if event.type == "views.recorded" and event.WhichOneof("payload") == "views":
            viewer = uuid.UUID(event.views.viewer_id) if event.views.viewer_id else None
            for play in event.views.plays:
                video = uuid.UUID(play.video_id)
                counts = self.videos[video]
                counts[VIEWS] += 1
                counts[WATCH_MS] += max(0, play.watched_ms)
                counts[COMPLETIONS] += int(play.completed)
                if play.creator_id:
                    self.users[uuid.UUID(play.creator_id)][TOTAL_VIEWS] += 1
                if viewer is not None and play.completed:
                    self.completions[(viewer, video)] = event.occurred_at.ToDatetime(UTC)
            return
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
    """The event of one stream entry if every id it carries is a UUID; None otherwise."""
    event = parse_event(fields)
    if event is None:
        return None
    try:
        deltas_of([event])
    except ValueError:
        return None
    return event


class CounterConsumer:
    """Applies batches of events to the counters; the loop is mesh.consumer.GroupConsumer."""

    def __init__(
        self, pool: AsyncConnectionPool, redis: aioredis.Redis, mirror: CounterMirror, name: str
    ) -> None:
        self.pool = pool
        self.mirror = mirror
        self.group = GroupConsumer(redis, GROUP, name, self.apply)

    async def run(self) -> None:
        await self.group.run()

    async def apply(self, entries: Sequence[Entry]) -> None:
        """Applies one batch exactly once in effect and mirrors it (the loop acknowledges it)."""
        events = [e for e in (parse_entry(fields) for _, fields in entries) if e is not None]
        by_id = {uuid.UUID(e.event_id): e for e in events}
        updated: list[tuple[str, store.CounterRow]] = []
        if by_id:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock_shared(hashtext(%s))", [RECOUNT_LOCK]
                )
                fresh = await store.mark_events_applied(conn, list(by_id))
                deltas = deltas_of(by_id[i] for i in fresh)
                tables: tuple[tuple[store.CounterTable, dict[uuid.UUID, list[int]]], ...] = (
                    ("user_counters", deltas.users),
                    ("video_counters", deltas.videos),
                )
                for table, changes in tables:
                    if changes:
                        rows = await store.add_to_counters(conn, table, changes)
                        updated += [(table, r) for r in rows]
                if deltas.completions:
                    await store.record_completions(conn, deltas.completions)
                if len(fresh) < len(by_id):
                    # a redelivery: its counts were committed, but maybe never mirrored
                    updated += await self._current_rows(
                        conn, deltas_of(e for i, e in by_id.items() if i not in fresh)
                    )
        await self.mirror.write(
            users=[
                mirror_counts(r, USER_FIELDS) for table, r in updated if table == "user_counters"
            ],
            videos=[
                mirror_counts(r, VIDEO_FIELDS) for table, r in updated if table == "video_counters"
            ],
        )

    async def _current_rows(
        self, conn: AsyncConnection, deltas: Deltas
    ) -> list[tuple[store.CounterTable, store.CounterRow]]:
        rows: list[tuple[store.CounterTable, store.CounterRow]] = []
        tables: tuple[tuple[store.CounterTable, dict[uuid.UUID, list[int]]], ...] = (
            ("user_counters", deltas.users),
            ("video_counters", deltas.videos),
        )
        for table, ids in tables:
            if ids:
                rows += [(table, r) for r in await store.counters_by_ids(conn, table, list(ids))]
        return rows


def mirror_counts(row: store.CounterRow, mirrored: tuple[str, ...]) -> Counts:
    """What the mirror shows of a counter row: the first ``len(mirrored)`` counts."""
    return Counts(str(row.entity_id), row.counts[: len(mirrored)], row.version)


async def prune_applied_events(
    pool: AsyncConnectionPool, client: aioredis.Redis, margin_seconds: int = 3600
) -> int:
    """Forgets the ids of events that can no longer be delivered again.

    An event is delivered again while it is pending (read, not acknowledged) or while its
    outbox row is kept (not yet acknowledged by every group: the relay sends it again if Redis
    loses it). Both were added before they were applied, so ids applied before the oldest
    pending entry was added and before this service's oldest outbox row was written are safe
    to forget. The margin covers what this service cannot see: a relay that sent an event twice
    (it crashed between XADD and its commit) and other services' outbox rows kept because a
    group lags, for up to ``margin_seconds``.
    """
    try:
        summary = await client.xpending(keys.EVENTS_STREAM, GROUP)
    except redis.exceptions.ResponseError as e:
        if "NOGROUP" in str(e):  # the consumer has not started yet
            return 0
        raise
    horizon = time.time()
    oldest = summary.get("min") if summary else None
    if oldest:
        oldest_ms = int((oldest.decode() if isinstance(oldest, bytes) else oldest).split("-")[0])
        horizon = min(horizon, oldest_ms / 1000)
    async with pool.connection() as conn:
        kept = await store.oldest_outbox_event(conn)
    if kept is not None:
        horizon = min(horizon, kept)
    removed = 0
    while True:  # in batches, each within the statement timeout
        async with pool.connection() as conn:
            batch = await store.prune_applied_events(conn, horizon - margin_seconds, PRUNE_BATCH)
        removed += batch
        if batch < PRUNE_BATCH:
            break
    if removed:
        log.info("applied events pruned", extra={"count": removed})
    return removed
