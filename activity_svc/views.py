"""ActivityService: plays (POST /v1/views), the most frequent write there is.

A call is checked whole (1 to 50 well-formed entries, else 400 naming the entry), then each play
is judged: of a live video (else skipped), not longer than the video plus 5 s (else 400), at
least 1 s (else not counted), and for a signed-in viewer the first of that video within 10
minutes (a Redis ``SET NX EX`` per play; else deduplicated). What counts becomes ONE
``views.recorded`` event in the outbox: one insert per call, not per play, and no counter row is
touched on the request path. The call answers once that insert committed, so an acknowledged
play survives any restart; the outbox relay and the counter consumer fold it into
``video_counters`` in batches, one UPDATE per video per batch (no hot row), within seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from google.protobuf import empty_pb2
from prometheus_client import Counter

from activity_svc.servicer import ServicerBase
from activity_svc.videos import PlayedVideo
from mesh import keys
from mesh.auth import caller_id
from mesh.errors import InvalidArgument
from mesh.outbox import new_event, record_event
from mesh.validation import parse_uuid
from tiktok.v1 import activity_pb2, events_pb2

MAX_VIEWS = 50
MIN_COUNTED_MS = 1000
SLACK_MS = 5000  # a play may run a little past the video's end (player clocks, a loop's start)
DEDUP_SECONDS = 600

PLAYS = Counter(
    "activity_plays_total",
    "Plays reported, by outcome: accepted (queued to be counted), deduplicated (a signed-in"
    " viewer's repeat within 10 minutes), short (under 1 s), skipped (unknown or deleted"
    " video), rejected (in a call answered 400).",
    ["outcome"],
)


@dataclass(frozen=True)
class Play:
    index: int  # its position in the call, for error messages
    video_id: uuid.UUID
    watched_ms: int
    completed: bool


def check_views(views: Sequence[activity_pb2.View]) -> list[Play]:
    """The call's plays if every entry is well formed; INVALID_ARGUMENT naming the first that
    is not."""
    if not views:
        raise InvalidArgument("views", "at least one play is required")
    if len(views) > MAX_VIEWS:
        raise InvalidArgument("views", f"at most {MAX_VIEWS} plays per call, got {len(views)}")
    plays = []
    for i, view in enumerate(views):
        video_id = parse_uuid(view.video_id, f"views[{i}].video_id")
        if view.watched_ms < 0:
            raise InvalidArgument(f"views[{i}].watched_ms", "must not be negative")
        plays.append(Play(i, video_id, view.watched_ms, view.completed))
    return plays


def check_length(play: Play, duration_ms: int) -> None:
    if play.watched_ms > duration_ms + SLACK_MS:
        raise InvalidArgument(
            f"views[{play.index}].watched_ms",
            f"is {play.watched_ms} ms, longer than the video ({duration_ms} ms) plus 5 s",
        )


def _ended_or_not(play: Play, duration_ms: int) -> Play:
    """A play claims ``completed`` only if it lasted about the whole video (within SLACK_MS):
    a 1 s play flagged completed counts as a play, not a completion (the ranking uses them)."""
    if play.completed and play.watched_ms < duration_ms - SLACK_MS:
        return Play(play.index, play.video_id, play.watched_ms, False)
    return play


class ViewDedup:
    """A signed-in viewer's play counts once per video per 10 minutes."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def first_plays(self, viewer: str, plays: list[Play]) -> list[Play]:
        """The plays that are this viewer's first of their video within the window (marked now:
        a second one in the same call is a repeat too)."""
        pipe = self.redis.pipeline(transaction=False)
        for play in plays:
            pipe.set(keys.view_seen(viewer, str(play.video_id)), 1, nx=True, ex=DEDUP_SECONDS)
        fresh = await pipe.execute()
        return [play for play, first in zip(plays, fresh, strict=True) if first]

    async def forget(self, viewer: str, plays: list[Play]) -> None:
        """Unmarks plays that were not queued after all (the insert failed), best effort."""
        if plays:
            await self.redis.delete(*(keys.view_seen(viewer, str(p.video_id)) for p in plays))


class ViewRpcs(ServicerBase):
    view_dedup: ViewDedup

    async def RecordViews(
        self, request: activity_pb2.RecordViewsRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        try:
            plays = check_views(request.views)
        except InvalidArgument:
            PLAYS.labels("rejected").inc(len(request.views))
            raise
        videos = await self.videos.played({p.video_id for p in plays})
        live = [p for p in plays if str(p.video_id) in videos]
        for play in live:
            try:
                check_length(play, videos[str(play.video_id)].duration_ms)
            except InvalidArgument:
                PLAYS.labels("rejected").inc(len(plays))
                raise
        counted = [
            _ended_or_not(p, videos[str(p.video_id)].duration_ms)
            for p in live
            if p.watched_ms >= MIN_COUNTED_MS
        ]
        PLAYS.labels("skipped").inc(len(plays) - len(live))
        PLAYS.labels("short").inc(len(live) - len(counted))
        viewer = caller_id(context)
        if viewer is not None and counted:
            first = await self.view_dedup.first_plays(viewer, counted)
            PLAYS.labels("deduplicated").inc(len(counted) - len(first))
            counted = first
        if counted:
            try:
                await self._queue(viewer, counted, videos)
            except Exception:
                # the insert failed, so nothing was queued: the viewer's next play counts. (A
                # cancellation is not unmarked: the insert may have committed.)
                if viewer is not None:
                    await self.view_dedup.forget(viewer, counted)
                raise
        PLAYS.labels("accepted").inc(len(counted))
        return empty_pb2.Empty()

    async def _queue(
        self, viewer: str | None, plays: list[Play], videos: Mapping[str, PlayedVideo]
    ) -> None:
        recorded = events_pb2.ViewsRecorded(
            viewer_id=viewer or "",
            plays=[
                events_pb2.Play(
                    video_id=str(p.video_id),
                    watched_ms=p.watched_ms,
                    completed=p.completed,
                    creator_id=videos[str(p.video_id)].creator_id,
                )
                for p in plays
            ],
        )
        event = new_event("views.recorded", viewer or "", views=recorded)
        if not viewer:
            event.aggregate_id = event.event_id  # anonymous plays order with nothing
        async with self.pool.connection() as conn:
            await record_event(conn, event)
