"""PrecacheService: refill requests go into a deduplicated work queue served by a few workers,
never one rebuild per request."""

from __future__ import annotations

import asyncio
import itertools
import logging

import grpc

from mesh.errors import InvalidArgument, Unavailable
from mesh.interceptors import is_dependency_failure
from mesh.validation import parse_uuid
from precache_svc.builder import Builder
from readmodels.feed import GLOBAL_FEED_USER
from tiktok.v1 import feed_pb2, precache_pb2, precache_pb2_grpc

log = logging.getLogger("precache_svc")

MAX_QUEUED = 10_000  # per priority: following builds, then for-you builds
FOLLOWING_FIRST, FOR_YOU_LATER = 0, 1


class RefillQueue:
    """(user, kind) pairs waiting for a build. A pair is queued once until a worker starts it.
    Following builds go first: a missing following queue is a reader on the cold path, while a
    missing for-you queue is a reader served from the global one meanwhile. Each priority has
    its own bound, so a rush of for-you builds (after a deploy, say) never refuses a following
    one."""

    def __init__(self, builder: Builder, workers: int = 2) -> None:
        self.builder = builder
        self.workers = workers
        self._queue: asyncio.PriorityQueue[tuple[int, int, str, int]] = asyncio.PriorityQueue()
        self._queued: set[tuple[str, int]] = set()
        self._waiting = [0, 0]  # queued per priority
        self._order = itertools.count()  # first come, first served within a priority

    def request(self, user_id: str, kind: int) -> bool:
        """True when this call queued the refill, False when it was already queued."""
        key = (user_id, kind)
        if key in self._queued:
            return False
        priority = FOLLOWING_FIRST if kind == feed_pb2.FEED_KIND_FOLLOWING else FOR_YOU_LATER
        if self._waiting[priority] >= MAX_QUEUED:
            raise Unavailable("the builder's refill queue is full; retry later")
        self._queue.put_nowait((priority, next(self._order), user_id, kind))
        self._waiting[priority] += 1
        self._queued.add(key)
        return True

    async def run(self) -> None:
        await asyncio.gather(*(self._work() for _ in range(self.workers)))

    async def _work(self) -> None:
        while True:
            priority, _, user_id, kind = await self._queue.get()
            self._waiting[priority] -= 1
            self._queued.discard((user_id, kind))
            try:
                if kind == feed_pb2.FEED_KIND_FOLLOWING:
                    await self.builder.build_following(user_id)
                elif user_id == GLOBAL_FEED_USER:  # the global ranking
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

    async def RequestRefill(
        self, request: precache_pb2.RequestRefillRequest, context: grpc.aio.ServicerContext
    ) -> precache_pb2.RequestRefillResponse:
        user_id = str(parse_uuid(request.user_id, "user_id"))
        if request.kind not in (feed_pb2.FEED_KIND_FOLLOWING, feed_pb2.FEED_KIND_FOR_YOU):
            raise InvalidArgument("kind", "must be FEED_KIND_FOLLOWING or FEED_KIND_FOR_YOU")
        return precache_pb2.RequestRefillResponse(
            queued=self.refills.request(user_id, request.kind)
        )
