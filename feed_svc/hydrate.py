"""Turning video ids into Video messages: the cards and the counter mirror in one Redis round
trip; UploadService for cards that are missing (which also rebuilds them), ActivityService for
counts that are missing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
import redis.asyncio as aioredis

from mesh import keys
from mesh.breaker import FAST_READ_SECONDS, Breaker
from mesh.interceptors import DEPENDENCY_ERRORS
from readmodels.counters import VIDEO_FIELDS, VideoCountsSource, set_video_counts
from tiktok.v1 import common_pb2, upload_pb2, upload_pb2_grpc

log = logging.getLogger("feed_svc.hydrate")

# per video id: its card (None: no card) and its mirrored counts (None: no mirror entry)
Hydration = dict[str, tuple[bytes | None, tuple[int, ...] | None]]


class Hydrator:
    def __init__(
        self,
        redis: aioredis.Redis,
        upload: upload_pb2_grpc.UploadServiceAsyncStub,
        counts: VideoCountsSource,
        breaker: Breaker,
        *,
        timeout: float = 1.5,
    ) -> None:
        self.redis = redis
        self.upload = upload
        self.counts = counts
        self.breaker = breaker
        self.timeout = timeout

    async def videos(
        self, video_ids: Sequence[str], read: Hydration | None = None
    ) -> list[common_pb2.Video]:
        """The live videos among ``video_ids``, in that order, counts filled in. Deleted
        videos have no card and are not returned by UploadService: they drop out. ``read``:
        the cards and counts already read from Redis (by the page script), else read here."""
        if not video_ids:
            return []
        if read is None and self.breaker.available():
            try:
                async with asyncio.timeout(FAST_READ_SECONDS):
                    read = await self._from_redis(video_ids)
            except DEPENDENCY_ERRORS as e:
                self.breaker.failed(e)  # cards and counts from the services instead
        found: dict[str, common_pb2.Video] = {}
        counted: set[str] = set()
        for video_id, (card, counts) in (read or {}).items():
            if card is None:
                continue
            video = found[video_id] = common_pb2.Video.FromString(card)
            if counts is not None:
                set_video_counts(video, counts)
                counted.add(video_id)
        missing = [v for v in video_ids if v not in found]
        if missing:
            try:
                reply = await self.upload.BatchGetVideos(
                    upload_pb2.BatchGetVideosRequest(video_ids=missing), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as e:
                log.warning("videos unavailable: %s", e.code().name)
            else:
                for video in reply.videos:  # counts included
                    found[video.video_id] = video
                    counted.add(video.video_id)
        uncounted = [v for i, v in found.items() if i not in counted]
        if uncounted:
            await self.counts.fill(uncounted)
        return [found[v] for v in video_ids if v in found]

    async def _from_redis(self, video_ids: Sequence[str]) -> Hydration:
        return await read_hydration(self.redis, video_ids)


async def read_hydration(redis: aioredis.Redis, video_ids: Sequence[str]) -> Hydration:
    """The cards and counter mirrors of ``video_ids``, in one pipeline (one round trip per
    node on a cluster)."""
    pipe = redis.pipeline(transaction=False)
    for video_id in video_ids:
        pipe.get(keys.video_card(video_id))
        pipe.hmget(keys.video_counts(video_id), VIDEO_FIELDS)
    replies = await pipe.execute()
    return hydration(video_ids, replies[0::2], replies[1::2])


def hydration(
    video_ids: Sequence[str], cards: Sequence[bytes | None], counts: Sequence[list]
) -> Hydration:
    """Redis replies (GET of each card, HMGET of each counter mirror) as a Hydration."""
    return {
        video_id: (card, None if c[0] is None else tuple(int(x or 0) for x in c))
        for video_id, card, c in zip(video_ids, cards, counts, strict=True)
    }
