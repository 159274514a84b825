"""Feed pages from the read replica, for when Redis has no queue (cold) or is down (degraded):
every read within a tight deadline, and an empty list rather than a slow page."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection

from mesh.db import ReadRouter
from mesh.interceptors import DEPENDENCY_ERRORS
from readmodels import replica
from readmodels.feed import TRENDING_DAYS, diverse

log = logging.getLogger("feed_svc.replicafeed")

DEADLINE_SECONDS = 0.5
DEADLINE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DEPENDENCY_ERRORS)


class ReplicaFeed:
    def __init__(self, pool: ReadRouter, deadline: float = DEADLINE_SECONDS) -> None:
        self.pool = pool
        self.deadline = deadline

    async def following(self, user_id: str, limit: int, what: str) -> list[str]:
        """The newest ``limit`` video ids of the user's followees."""

        async def read(conn: AsyncConnection) -> list[str]:
            rows = await replica.following_videos(conn, uuid.UUID(user_id), limit)
            return [str(r.video_id) for r in rows]

        return await self._within_deadline(read, what)

    async def ranking(self, limit: int, what: str) -> list[str]:
        """The best of ``limit`` ranked video ids, kept diverse (``feed.diverse``)."""

        async def read(conn: AsyncConnection) -> list[str]:
            return diverse(await replica.trending(conn, TRENDING_DAYS, limit))

        return await self._within_deadline(read, what)

    async def _within_deadline(
        self, read: Callable[[AsyncConnection], Awaitable[list[str]]], what: str
    ) -> list[str]:
        try:
            async with asyncio.timeout(self.deadline):
                async with self.pool.connection() as conn:
                    return await read(conn)
        except DEADLINE_ERRORS as e:
            log.warning("%s not built: %r", what, e)
            return []
