"""Read-only queries of the read replica that build a following feed: shared by the builder
(precache_svc, full queues) and feed_svc's cold path (one page on demand when a queue is
missing). DESIGN lets both read the replica directly; neither ever writes these tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection


@dataclass(frozen=True)
class QueuedVideo:
    video_id: uuid.UUID
    creator_id: uuid.UUID
    created_at: datetime

    @property
    def score(self) -> float:
        """The following feed's rank: publish time in Unix milliseconds (newest first)."""
        return self.created_at.timestamp() * 1000


async def following_videos(
    conn: AsyncConnection, user_id: uuid.UUID, limit: int
) -> list[QueuedVideo]:
    """The newest videos of the creators ``user_id`` follows: for each followee the newest few
    (an index scan of videos_by_creator per followee), merged newest first. This is the pull
    side of hybrid fan-out: hot creators, never pushed, are in here like everyone else.

    video_id is a UUIDv7, so ordering by it is ordering by publish time."""
    cur = await conn.execute(
        "SELECT v.video_id, v.creator_id, v.created_at FROM activity.follows f"
        " CROSS JOIN LATERAL (SELECT video_id, creator_id, created_at FROM upload.videos"
        "  WHERE creator_id = f.followee_id AND deleted_at IS NULL"
        "  ORDER BY video_id DESC LIMIT 20) v"
        " WHERE f.follower_id = %s ORDER BY v.video_id DESC LIMIT %s",
        [user_id, limit],
    )
    return [QueuedVideo(*r) for r in await cur.fetchall()]
