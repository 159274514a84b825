"""Read repair of the counter mirror: counts read from Postgres because the mirror missed them
are written back to it in the background. Best effort and bounded: a hung Redis must not slow
the answer down (callers come here precisely when Redis failed them), nor pile up tasks."""

from __future__ import annotations

import asyncio
import logging

from readmodels.counters import CounterMirror, Counts

log = logging.getLogger("activity_svc.repair")

MAX_REPAIRS = 100  # mirror repairs in flight at once


class MirrorRepair:
    def __init__(self, mirror: CounterMirror) -> None:
        self.mirror = mirror
        self._in_flight: set[asyncio.Task[None]] = set()

    def videos(self, videos: list[Counts]) -> None:
        """Mirrors these video counts soon (newer versions in the mirror win)."""
        if len(self._in_flight) >= MAX_REPAIRS:  # Redis is slow or down: skip, the next read asks
            return

        async def write() -> None:
            try:
                await self.mirror.write(videos=videos)
            except Exception as e:  # noqa: BLE001 - read repair is best effort
                log.warning("counter mirror not repaired: %r", e)

        task = asyncio.create_task(write())
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
