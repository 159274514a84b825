"""Read-only queries of the read replica that build feeds: shared by the builder (precache_svc,
whole queues) and feed_svc's cold and degraded paths (one page on demand when a queue is
missing or Redis is down). DESIGN lets both read the replica directly; neither ever writes
these tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection

PER_FOLLOWEE = 20  # the newest videos of one followee a following queue takes at most


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

    video_id is a UUIDv7, so ordering by it is ordering by publish time. No followee can
    bring more than ``limit`` rows, nor more than PER_FOLLOWEE (a queue is a mix)."""
    cur = await conn.execute(
        "SELECT v.video_id, v.creator_id, v.created_at FROM activity.follows f"
        " CROSS JOIN LATERAL (SELECT video_id, creator_id, created_at FROM upload.videos"
        "  WHERE creator_id = f.followee_id AND deleted_at IS NULL"
        "  ORDER BY video_id DESC LIMIT %s) v"
        " WHERE f.follower_id = %s ORDER BY v.video_id DESC LIMIT %s",
        [min(limit, PER_FOLLOWEE), user_id, limit],
    )
    return [QueuedVideo(*r) for r in await cur.fetchall()]


async def trending(
    conn: AsyncConnection, days: int, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, float]]:
    """Recent videos ranked by engagement with time decay (a Hacker-News-style gravity):
    (1 + likes + 2·comments + 3·favorites) / (age in hours + 2)^1.5."""
    cur = await conn.execute(
        "SELECT v.video_id, v.creator_id,"
        " (1 + greatest(coalesce(c.like_count, 0), 0)"
        "  + 2 * greatest(coalesce(c.comment_count, 0), 0)"
        "  + 3 * greatest(coalesce(c.favorite_count, 0), 0))"
        "  / power(extract(epoch FROM now() - v.created_at) / 3600 + 2, 1.5) AS score"
        " FROM upload.videos v LEFT JOIN activity.video_counters c USING (video_id)"
        " WHERE v.deleted_at IS NULL AND v.created_at > now() - make_interval(days => %s)"
        " ORDER BY score DESC LIMIT %s",
        [days, limit],
    )
    return [(r[0], r[1], float(r[2])) for r in await cur.fetchall()]
