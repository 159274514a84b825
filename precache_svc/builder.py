"""The builder: decides what goes into feed queues and sends it to feed_svc as FeedBatches.

Event handling is idempotent: a batch's id is derived from the event and the recipient, so an
event handled twice sends the same batch ids and feed_svc applies them once; and every batch
is a set operation (add with a fixed score, remove) that is harmless to repeat anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from mesh.consumer import Entry, parse_event
from mesh.db import ReadRouter
from precache_svc.stream import FeedStream
from readmodels import replica
from readmodels.feed import (
    GLOBAL_FEED_USER,
    QUEUE_SIZE,
    RANKING_SIZE,
    TRENDING_DAYS,
    USERS_PER_BATCH,
    QueuedVideo,
    Ranked,
    personal_ranking,
)
from tiktok.v1 import events_pb2, feed_pb2

log = logging.getLogger("precache_svc.builder")

FOLLOWING, FOR_YOU = feed_pb2.FEED_KIND_FOLLOWING, feed_pb2.FEED_KIND_FOR_YOU
BACKFILL_VIDEOS = 20  # a new follow brings this many of the followee's newest videos
PURGE_VIDEOS = 500  # an unfollow removes up to this many of the followee's videos
FANOUT_PAGE = 10_000
RECENT_LIKES = 200  # the likes a personal for-you queue is weighted by

FANOUT_LAG = Histogram(
    "feed_fanout_lag_seconds",
    "From a video's publication to its last follower batch applied by feed_svc.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
EVENTS = Counter("precache_events_total", "Events handled by the builder.", ["type", "outcome"])
BUILDS = Counter("precache_builds_total", "Queues built from the replica.", ["kind"])


def batch_id(event_id: str, user_id: str) -> str:
    """The same event for the same user always makes the same batch id."""
    return str(uuid.uuid5(uuid.UUID(event_id), user_id))


class Builder:
    def __init__(self, replica: ReadRouter, stream: FeedStream, hot_creator_followers: int) -> None:
        self.replica = replica
        self.stream = stream
        self.hot = hot_creator_followers
        # the last global ranking, (video_id, creator_id, score) best first, for personal builds
        self.ranking: list[Ranked] = []

    # --- events -----------------------------------------------------------------------------

    async def handle_entries(self, entries: Sequence[Entry]) -> None:
        """The GroupConsumer handler: events in stream order, each done (its batches applied by
        feed_svc) before the next, so a follow and an unfollow never overtake each other. Plays
        are the exception: the completions of a whole read go to feed_svc together at its end
        (they commute with everything else), so heavy play traffic costs one round trip per
        read, not one per call, and does not hold fan-out back."""
        completions: list[events_pb2.Event] = []
        for _, fields in entries:
            event = parse_event(fields)
            if event is None:
                continue
            if event.type == "views.recorded":
                completions.append(event)
            else:
                await self.handle(event)
        if completions:
            await self.drop_completed(completions)

    async def drop_completed(self, events: Sequence[events_pb2.Event]) -> None:
        """What signed-in viewers played to the end leaves their for-you at once: out of their
        queues, and marked served so the global queue they may read meanwhile skips it too.
        One batch per viewer, all sent together."""
        done: dict[str, dict[str, None]] = {}
        sources: dict[str, list[str]] = {}  # viewer → the events merged: the batch id
        for event in events:
            viewer = event.views.viewer_id
            completed = [p.video_id for p in event.views.plays if p.completed]
            try:
                uuid.UUID(viewer)
            except ValueError:  # anonymous ("") or malformed: nothing to drop
                EVENTS.labels(event.type, "nothing_completed").inc()
                continue
            if not completed:
                EVENTS.labels(event.type, "nothing_completed").inc()
                continue
            sources.setdefault(viewer, []).append(event.event_id)
            done.setdefault(viewer, {}).update(dict.fromkeys(completed))
            EVENTS.labels(event.type, "completed_dropped").inc()
        if done:
            await self.stream.send(
                [
                    feed_pb2.FeedBatch(
                        # the same events always merge into the same id (a redelivery)
                        batch_id=str(uuid.uuid5(uuid.NAMESPACE_OID, ",".join(sources[viewer]))),
                        user_id=viewer,
                        kind=FOR_YOU,
                        remove_video_ids=list(videos),
                        seen_video_ids=list(videos),
                    )
                    for viewer, videos in done.items()
                ]
            )

    async def handle(self, event: events_pb2.Event) -> None:
        handler = {
            "video.published": self.fan_out,
            "video.deleted": self.purge_video,
            "follow.created": self.backfill,
            "follow.deleted": self.purge_followee,
        }.get(event.type)
        if handler is None:
            return
        try:
            outcome = await handler(event)
        except ValueError:  # an id that is not a UUID: nothing to build from it
            outcome = "malformed"
        EVENTS.labels(event.type, outcome).inc()

    async def fan_out(self, event: events_pb2.Event) -> str:
        """Pushes a new video to the following queue of each follower, unless the creator is
        hot (then it is pulled when followers' queues are built)."""
        published = event.video_published
        creator = uuid.UUID(published.creator_id)
        async with self.replica.connection() as conn:
            followers = await replica.follower_count(conn, creator)
        if followers > self.hot:
            return "hot_creator_pulled"
        entry = feed_pb2.FeedEntry(
            video_id=published.video_id,
            creator_id=published.creator_id,
            score=published.created_at.ToMilliseconds(),
        )
        await self._to_followers(event, creator, add=[entry])
        FANOUT_LAG.observe(max(0.0, time.time() - published.created_at.ToMilliseconds() / 1000))
        return "fanned_out"

    async def purge_video(self, event: events_pb2.Event) -> str:
        """Takes a deleted video out of its creator's followers' queues and out of trending.
        (Reads also drop it: its card is gone. This keeps queues clean.)"""
        deleted = event.video_deleted
        removal = [deleted.video_id]
        await self._to_user(event, GLOBAL_FEED_USER, FOR_YOU, remove_video_ids=removal)
        await self._to_followers(event, uuid.UUID(deleted.creator_id), remove_video_ids=removal)
        return "purged"

    async def backfill(self, event: events_pb2.Event) -> str:
        follow = event.follow
        async with self.replica.connection() as conn:
            videos = await replica.recent_videos_of(
                conn, uuid.UUID(follow.followee_id), BACKFILL_VIDEOS
            )
        if videos:
            await self._to_user(
                event, follow.follower_id, FOLLOWING, add=[_entry(v) for v in videos]
            )
        return "backfilled"

    async def purge_followee(self, event: events_pb2.Event) -> str:
        follow = event.follow
        async with self.replica.connection() as conn:
            video_ids = await replica.video_ids_of(
                conn, uuid.UUID(follow.followee_id), PURGE_VIDEOS
            )
        if video_ids:
            await self._to_user(event, follow.follower_id, FOLLOWING, remove_video_ids=video_ids)
        return "purged"

    async def _to_user(
        self,
        event: events_pb2.Event,
        user_id: str,
        kind: feed_pb2.FeedKind.ValueType,
        **change: Any,
    ) -> None:
        """One batch for one user's queue, its id derived from the event."""
        await self.stream.send(
            [feed_pb2.FeedBatch(batch_id=batch_id(event.event_id, user_id), user_id=user_id,
                                kind=kind, **change)]
        )  # fmt: skip

    async def _to_followers(self, event: events_pb2.Event, creator: uuid.UUID, **change: Any):
        """The same change to the following queue of every follower of ``creator``: one batch
        per 1,000 followers (``more_user_ids``), a page of followers at a time, each page's
        batches applied before the next page is read. A batch's id derives from the event and
        its first and last follower, so a redelivered event repeats the same ids."""
        async with contextlib.aclosing(self._follower_pages(creator)) as pages:
            async for page in pages:
                await self._to_page(event, page, change)

    async def _to_page(
        self, event: events_pb2.Event, page: list[str], change: dict[str, Any]
    ) -> None:
        batches = []
        for start in range(0, len(page), USERS_PER_BATCH):
            users = page[start : start + USERS_PER_BATCH]
            batches.append(
                feed_pb2.FeedBatch(
                    batch_id=batch_id(event.event_id, f"{users[0]}..{users[-1]}"),
                    user_id=users[0],
                    more_user_ids=users[1:],
                    kind=FOLLOWING,
                    **change,
                )
            )
        await self.stream.send(batches)

    async def _follower_pages(self, creator: uuid.UUID):
        """The followers of ``creator``, a page at a time; the next page is read from the
        replica while the caller sends the current one."""

        async def read(before: int | None) -> list[tuple[int, str]]:
            async with self.replica.connection() as conn:
                return await replica.follower_ids_page(conn, creator, before, FANOUT_PAGE)

        rows = await read(None)
        while rows:
            following = asyncio.create_task(read(rows[-1][0])) if len(rows) == FANOUT_PAGE else None
            try:
                yield [f for _, f in rows]
            except BaseException:  # closed early (aclosing): do not leave the prefetch running
                if following:
                    following.cancel()
                raise
            rows = await following if following else []

    # --- builds -----------------------------------------------------------------------------

    async def build_following(self, user_id: str) -> None:
        """Rebuilds a user's following queue from the replica (a replace batch)."""
        async with self.replica.connection() as conn:
            videos = await replica.following_videos(conn, uuid.UUID(user_id), QUEUE_SIZE)
        await self.stream.send(
            [
                feed_pb2.FeedBatch(
                    batch_id=str(uuid.uuid4()),
                    user_id=user_id,
                    kind=FOLLOWING,
                    add=[_entry(v) for v in videos],
                    replace=True,
                )
            ]
        )
        BUILDS.labels("following").inc()

    async def refresh_trending(self) -> None:
        """Ranks recent videos and replaces the global for-you queue with the top ones."""
        async with self.replica.connection() as conn:
            ranked = await replica.trending(conn, TRENDING_DAYS, RANKING_SIZE)
        self.ranking = [(str(v), str(c), score) for v, c, score in ranked]
        await self._send_for_you(GLOBAL_FEED_USER, self.ranking[:QUEUE_SIZE])

    async def build_for_you(self, user_id: str) -> None:
        """A user's own for-you queue: the global ranking with the creators they liked lately
        ranked higher, without the videos they liked or played to the end, or their own. Reads
        skip what was served already and keep creator diversity; the queue expires after a
        while, so it follows the ranking."""
        if not self.ranking:
            await self.refresh_trending()
        async with self.replica.connection() as conn:
            liked = await replica.recent_likes(conn, uuid.UUID(user_id), RECENT_LIKES)
            completed = await replica.recent_completions(conn, uuid.UUID(user_id), QUEUE_SIZE)
        personal = personal_ranking(self.ranking, user_id, liked, completed)
        await self._send_for_you(user_id, personal[:QUEUE_SIZE])

    async def _send_for_you(self, user_id: str, ranked: list[Ranked]) -> None:
        await self.stream.send(
            [
                feed_pb2.FeedBatch(
                    batch_id=str(uuid.uuid4()),
                    user_id=user_id,
                    kind=FOR_YOU,
                    add=[
                        feed_pb2.FeedEntry(video_id=video, creator_id=creator, score=score)
                        for video, creator, score in ranked
                    ],
                    replace=True,
                )
            ]
        )
        BUILDS.labels("for_you").inc()


def _entry(video: QueuedVideo) -> feed_pb2.FeedEntry:
    return feed_pb2.FeedEntry(
        video_id=str(video.video_id),
        creator_id=str(video.creator_id),
        score=video.score,
    )
