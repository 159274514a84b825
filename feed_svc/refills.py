"""Refill asks to the builder (PrecacheService.RequestRefill), sent without waiting."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TypeAlias

import grpc

from tiktok.v1 import feed_pb2, precache_pb2, precache_pb2_grpc

log = logging.getLogger("feed_svc.refills")

FeedKind: TypeAlias = feed_pb2.FeedKind.ValueType

URGENT_INTERVAL = 0.5  # a missing queue is asked for again after this, not on every read


class RefillRequests:
    """Asks the builder for refills without waiting for it (the builder deduplicates across
    processes). From this process: one ask in flight per user and kind, and at most one every
    ``interval`` seconds (a missing queue: every URGENT_INTERVAL, not on every read; a queue
    that builds empty, say a user who follows nobody, stays missing)."""

    def __init__(self, stub: precache_pb2_grpc.PrecacheServiceAsyncStub, interval: float = 2.0):
        self.stub = stub
        self.interval = interval
        self._last: dict[tuple[str, FeedKind, bool], float] = {}  # (user, kind, urgent)
        self._in_flight: dict[tuple[str, FeedKind, bool], asyncio.Task[None]] = {}

    def request(self, user_id: str, kind: FeedKind, *, urgent: bool = False) -> None:
        key = (user_id, kind, urgent)  # an urgent ask never waits behind a routine one
        now = time.monotonic()
        interval = URGENT_INTERVAL if urgent else self.interval
        if key in self._in_flight or now - self._last.get(key, -1e9) < interval:
            return
        if len(self._last) > 100_000:
            self._last.clear()
        self._last[key] = now
        task = asyncio.create_task(self._send(user_id, kind))
        self._in_flight[key] = task
        task.add_done_callback(lambda _: self._in_flight.pop(key, None))

    async def _send(self, user_id: str, kind: FeedKind) -> None:
        try:
            await self.stub.RequestRefill(
                precache_pb2.RequestRefillRequest(user_id=user_id, kind=kind), timeout=1.0
            )
        except grpc.aio.AioRpcError as e:
            log.warning("refill request not delivered: %s", e.code().name)
