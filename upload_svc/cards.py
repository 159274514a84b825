"""Video messages as clients see them, and the feed's hydration cards: each video's message
without counts, in Redis under ``card:{video_id}``, written by upload_svc (their owner)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from mesh import keys
from mesh.breaker import Breaker
from mesh.proto import timestamp
from tiktok.v1 import common_pb2
from upload_svc.storage import Storage
from upload_svc.store import VideoRow

log = logging.getLogger("upload_svc.cards")

STATES = {
    "processing": common_pb2.VIDEO_STATE_PROCESSING,
    "ready": common_pb2.VIDEO_STATE_READY,
    "failed": common_pb2.VIDEO_STATE_FAILED,
}
MAX_BACKGROUND_WRITES = 100
# a card lives a week from its last write: cards of videos nobody reads any more leave Redis,
# and the next read of one rebuilds it (BatchGetVideos)
CARD_TTL_SECONDS = 7 * 24 * 3600


def video_message(row: VideoRow, storage: Storage) -> common_pb2.Video:
    """The video without counts (as cached in cards); ``VideoCountsSource.fill`` adds them."""
    return common_pb2.Video(
        video_id=str(row.video_id),
        creator_id=str(row.creator_id),
        caption=row.caption,
        playback_url=storage.url(row.object_key),
        thumbnail_url=storage.url(row.thumbnail_key),
        duration_ms=row.duration_ms,
        size_bytes=row.size_bytes,
        created_at=timestamp(row.created_at),
        hls_url=storage.url(row.hls_key) if row.hls_key else "",
        state=STATES[row.state],
    )


class Cards:
    """Writes and removes cards. Best effort: the database stays the truth, and a missing card
    is rebuilt by the next BatchGetVideos."""

    def __init__(self, redis: aioredis.Redis, breaker: Breaker) -> None:
        self.redis = redis
        self.breaker = breaker
        self._background: set[asyncio.Task[bool]] = set()

    async def write(self, videos: list[common_pb2.Video], *, background: bool = False) -> bool:
        """True when the cards were written. In the background when a reader is waiting (a
        hung Redis must not hold up the reply); then the answer is always False."""
        if not videos or not self.breaker.available():
            return not videos
        cards = {keys.video_card(v.video_id): v.SerializeToString() for v in videos}
        if not background:
            return await self._set(cards)
        if len(self._background) < MAX_BACKGROUND_WRITES:  # else the next reader rebuilds them
            task = asyncio.create_task(self._set(cards))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return False

    async def _set(self, cards: dict[str, bytes]) -> bool:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, card in cards.items():
                pipe.set(key, card, ex=CARD_TTL_SECONDS)
            await pipe.execute()
            return True
        except Exception as e:  # noqa: BLE001 - any Redis failure: the breaker decides
            self.breaker.failed(e)
            return False

    async def delete(self, video_id: str) -> None:
        try:
            await self.redis.delete(keys.video_card(video_id))
        except Exception as e:  # noqa: BLE001 - feeds also drop deleted ids via the event
            log.warning("video card not deleted: %r", e)
