"""The builder's reads, all on the read replica (DESIGN: replicas feed the builder). They span
activity_svc's and upload_svc's schemas read-only; the builder never writes a table."""

from __future__ import annotations

import uuid

from psycopg import AsyncConnection

from mesh.feedreads import QueuedVideo


async def follower_count(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    cur = await conn.execute(
        "SELECT follower_count FROM activity.user_counters WHERE user_id = %s", [user_id]
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def follower_ids_page(
    conn: AsyncConnection, user_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[tuple[int, str]]:
    """A creator's followers as (seq, follower_id as text), newest first: an index-only scan of
    follows_by_followee. Text, because fan-out only forwards the ids."""
    cur = await conn.execute(
        "SELECT seq, follower_id::text FROM activity.follows WHERE followee_id = %s AND seq < %s"
        " ORDER BY seq DESC LIMIT %s",
        [user_id, before_seq if before_seq is not None else 2**63 - 1, limit],
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def recent_videos_of(
    conn: AsyncConnection, creator_id: uuid.UUID, limit: int
) -> list[QueuedVideo]:
    cur = await conn.execute(
        "SELECT video_id, creator_id, created_at FROM upload.videos"
        " WHERE creator_id = %s AND deleted_at IS NULL ORDER BY video_id DESC LIMIT %s",
        [creator_id, limit],
    )
    return [QueuedVideo(*r) for r in await cur.fetchall()]


async def video_ids_of(conn: AsyncConnection, creator_id: uuid.UUID, limit: int) -> list[str]:
    """A creator's newest video ids, deleted ones included (for purging them from a queue)."""
    cur = await conn.execute(
        "SELECT video_id FROM upload.videos WHERE creator_id = %s ORDER BY video_id DESC LIMIT %s",
        [creator_id, limit],
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def recent_likes(
    conn: AsyncConnection, user_id: uuid.UUID, limit: int
) -> list[tuple[str, str]]:
    """What ``user_id`` liked last, as (video_id, creator_id), newest first: likes_by_user,
    then each video by its key."""
    cur = await conn.execute(
        "SELECT l.video_id::text, v.creator_id::text FROM activity.likes l"
        " JOIN upload.videos v USING (video_id)"
        " WHERE l.user_id = %s ORDER BY l.seq DESC LIMIT %s",
        [user_id, limit],
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]
