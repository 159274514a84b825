"""PrecacheService: refill requests go into a deduplicated work queue served by a few workers,
never one rebuild per request."""

from __future__ import annotations

import asyncio
import logging

from mesh import keys
from mesh.errors import InvalidArgument, Unavailable
from mesh.interceptors import is_dependency_failure
from mesh.validation import parse_uuid
from precache_svc.builder import Builder
from tiktok.v1 import feed_pb2, precache_pb2, precache_pb2_grpc

log = logging.getLogger("precache_svc")

MAX_QUEUED = 10_000


class RefillQueue:
    """(user, kind) pairs waiting for a build. A pair is queued once until a worker starts it."""

    def __init__(self, builder: Builder, workers: int = 2) -> None:
        self.builder = builder
        self.workers = workers
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue(MAX_QUEUED)
        self._queued: set[tuple[str, int]] = set()

    def request(self, user_id: str, kind: int) -> bool:
        """True when this call queued the refill, False when it was already queued."""
        key = (user_id, kind)
        if key in self._queued:
            return False
        try:
            self._queue.put_nowait(key)
        except asyncio.QueueFull:
            raise Unavailable("the builder's refill queue is full; retry later") from None
        self._queued.add(key)
        return True

    async def run(self) -> None:
        await asyncio.gather(*(self._work() for _ in range(self.workers)))

    async def _work(self) -> None:
        while True:
            user_id, kind = await self._queue.get()
            self._queued.discard((user_id, kind))
            try:
                if kind == feed_pb2.FEED_KIND_FOLLOWING:
                    await self.builder.build_following(user_id)
                elif user_id == keys.GLOBAL_FEED_USER:  # the global ranking
                    await self.builder.refresh_trending()
                else:
                    await self.builder.build_for_you(user_id)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # one failed build must not stop the worker
                if is_dependency_failure(e):
                    log.warning("refill of %s waits for its stores: %r", user_id, e)
                else:
                    log.exception("refill of %s failed", user_id)


class PrecacheService(precache_pb2_grpc.PrecacheServiceServicer):
    def __init__(self, refills: RefillQueue) -> None:
        self.refills = refills

    async def RequestRefill(self, request, context):
        user_id = str(parse_uuid(request.user_id, "user_id"))
        if request.kind not in (feed_pb2.FEED_KIND_FOLLOWING, feed_pb2.FEED_KIND_FOR_YOU):
            raise InvalidArgument("kind", "must be FEED_KIND_FOLLOWING or FEED_KIND_FOR_YOU")
        return precache_pb2.RequestRefillResponse(
            queued=self.refills.request(user_id, request.kind)
        )
