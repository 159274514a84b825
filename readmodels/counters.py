"""The Redis mirror of the engagement counters: written by activity_svc, read by whoever
hydrates videos or users (upload_svc, feed_svc) without a call to activity_svc.

activity_svc's Postgres tables are the truth. Each mirror entry is a hash carrying the counts and
the counter row's ``version``; a write lands only when its version is newer than the stored one,
so two consumers (or a consumer and a read-repair) finishing out of order never move a count
backwards. Entries expire after a week untouched; a miss means "ask activity_svc".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis

from mesh import keys
from mesh.breaker import FAST_READ_SECONDS, Breaker
from mesh.clients import execute, queue_script
from mesh.interceptors import DEPENDENCY_ERRORS
from tiktok.v1 import activity_pb2, activity_pb2_grpc, common_pb2

log = logging.getLogger("readmodels.counters")

MIRROR_TTL_SECONDS = 7 * 24 * 3600

VIDEO_FIELDS = ("like_count", "comment_count", "favorite_count", "view_count")
USER_FIELDS = ("follower_count", "following_count", "video_count", "view_count")

# KEYS[1]: the hash; ARGV[1]: version; ARGV[2]: ttl; ARGV[3..]: field, value, field, value ...
_SET_IF_NEWER = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if stored >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def set_video_counts(video: common_pb2.Video, values: Sequence[int]) -> None:
    """Puts counts (in VIDEO_FIELDS order) on a Video; a count below zero (a delete applied
    before its create, for a moment) shows as 0."""
    for name, value in zip(VIDEO_FIELDS, values, strict=False):
        setattr(video, name, max(0, value))


@dataclass(frozen=True)
class Counts:
    """The counts of one video or one user, ``values`` in the order of the matching FIELDS."""

    entity_id: str
    values: tuple[int, ...]
    version: int


class CounterMirror:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)

    async def write(self, videos: Iterable[Counts] = (), users: Iterable[Counts] = ()) -> None:
        """Mirrors the counts in one pipeline; older versions than the stored ones are ignored."""
        pipe = self.redis.pipeline(transaction=False)
        for key_of, fields, entries in (
            (keys.video_counts, VIDEO_FIELDS, videos),
            (keys.user_counts, USER_FIELDS, users),
        ):
            for c in entries:
                pairs = [x for pair in zip(fields, c.values, strict=True) for x in pair]
                await queue_script(  # sent by execute()
                    pipe,
                    self._set_if_newer,
                    [key_of(c.entity_id)],
                    [c.version, MIRROR_TTL_SECONDS, *pairs],
                )
        if len(pipe):
            await execute(pipe)

    async def read_videos(self, video_ids: Sequence[str]) -> dict[str, tuple[int, ...]]:
        """The mirrored counts of the videos that have an entry; misses are left out."""
        return await self._read(keys.video_counts, VIDEO_FIELDS, video_ids)

    async def _read(
        self, key_of: Callable[[str], str], fields: tuple[str, ...], ids: Sequence[str]
    ) -> dict[str, tuple[int, ...]]:
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for entity_id in ids:
            pipe.hmget(key_of(entity_id), fields)
        found = {}
        for entity_id, values in zip(ids, await pipe.execute(), strict=True):
            if values[0] is not None:
                # counts may dip below zero for a moment when a delete's event is applied before
                # its create's (two consumers); clients never see that
                found[entity_id] = tuple(max(0, int(v or 0)) for v in values)
        return found


class VideoCountsSource:
    """Fills in the counts of Video messages: from the mirror, and for its misses from
    ActivityService (one batch call, which also repairs the mirror). When both fail the counts
    stay 0 and a warning is logged: a video without fresh counts beats no video."""

    def __init__(
        self,
        mirror: CounterMirror,
        activity: activity_pb2_grpc.ActivityServiceAsyncStub,
        *,
        breaker: Breaker | None = None,
        timeout: float = 1.0,
        batch: int = 500,
    ) -> None:
        self.mirror = mirror
        self.activity = activity
        self.breaker = breaker or Breaker("redis")
        self.timeout = timeout
        self.batch = batch

    async def fill(self, videos: Sequence[common_pb2.Video]) -> None:
        ids = list(dict.fromkeys(v.video_id for v in videos))
        if not ids:
            return
        found: dict[str, tuple[int, ...]] = {}
        if self.breaker.available():
            try:
                async with asyncio.timeout(FAST_READ_SECONDS):
                    found = await self.mirror.read_videos(ids)
            except DEPENDENCY_ERRORS as e:
                self.breaker.failed(e)
        missing = [i for i in ids if i not in found]
        for start in range(0, len(missing), self.batch):
            request = activity_pb2.BatchGetVideoCountsRequest(
                video_ids=missing[start : start + self.batch]
            )
            try:
                reply = await self.activity.BatchGetVideoCounts(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as e:
                log.warning("video counts unavailable, serving zeros: %s", e.code().name)
                break
            for c in reply.counts:
                found[c.video_id] = tuple(getattr(c, name) for name in VIDEO_FIELDS)
        for video in videos:
            counts = found.get(video.video_id)
            if counts is not None:
                set_video_counts(video, counts)
