"""Every read of another service's schema, on the read replica: the feed queries the builder
(precache_svc, whole queues) and feed_svc (cold and degraded pages) share. DESIGN lets both read
the replica directly; neither ever writes these tables.

The tables are named once, here, per owning schema: activity_svc owns ``activity.*`` and
upload_svc owns ``upload.*``. A migration that renames one of them changes this module and no
other. Direct reads rather than the internal RPCs, because the feed queries join the two schemas
(followees' newest videos, videos by engagement), which an RPC per schema could only do by
shipping whole id lists between services."""

from __future__ import annotations

import uuid

from psycopg import AsyncConnection

from readmodels.feed import PER_FOLLOWEE, TRENDING_SCORE_SQL, QueuedVideo


class Activity:
    """activity_svc's tables this module reads."""

    follows = "activity.follows"  # (follower_id, followee_id, seq)
    likes = "activity.likes"  # (user_id, video_id, seq)
    user_counters = "activity.user_counters"  # (user_id, follower_count, ...)
    video_counters = "activity.video_counters"  # (video_id, like_count, ...)
    completions = "activity.completions"  # (user_id, video_id, completed_at)


class Upload:
    """upload_svc's tables this module reads."""

    videos = "upload.videos"  # (video_id UUIDv7, creator_id, created_at, deleted_at)


async def following_videos(
    conn: AsyncConnection, user_id: uuid.UUID, limit: int
) -> list[QueuedVideo]:
    """The newest videos of the creators ``user_id`` follows: for each followee the newest few
    (an index scan of videos_by_creator per followee), merged newest first. This is the pull
    side of hybrid fan-out: hot creators, never pushed, are in here like everyone else.

    video_id is a UUIDv7, so ordering by it is ordering by publish time. No followee can
    bring more than ``limit`` rows, nor more than PER_FOLLOWEE (a queue is a mix)."""
    cur = await conn.execute(
        f"SELECT v.video_id, v.creator_id, v.created_at FROM {Activity.follows} f"
        f" CROSS JOIN LATERAL (SELECT video_id, creator_id, created_at FROM {Upload.videos}"
        "  WHERE creator_id = f.followee_id AND deleted_at IS NULL"
        "  ORDER BY video_id DESC LIMIT %s) v"
        " WHERE f.follower_id = %s ORDER BY v.video_id DESC LIMIT %s",
        [min(limit, PER_FOLLOWEE), user_id, limit],
    )
    return [QueuedVideo(*r) for r in await cur.fetchall()]


async def trending(
    conn: AsyncConnection, days: int, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, float]]:
    """Videos of the last ``days`` as (video_id, creator_id, score), best first
    (``feed.TRENDING_SCORE_SQL``)."""
    cur = await conn.execute(
        f"SELECT v.video_id, v.creator_id, {TRENDING_SCORE_SQL} AS score"
        f" FROM {Upload.videos} v LEFT JOIN {Activity.video_counters} c USING (video_id)"
        " WHERE v.deleted_at IS NULL AND v.created_at > now() - make_interval(days => %s)"
        " ORDER BY score DESC LIMIT %s",
        [days, limit],
    )
    return [(r[0], r[1], float(r[2])) for r in await cur.fetchall()]


async def follower_count(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    cur = await conn.execute(
        f"SELECT follower_count FROM {Activity.user_counters} WHERE user_id = %s", [user_id]
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def follower_ids_page(
    conn: AsyncConnection, user_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[tuple[int, str]]:
    """A creator's followers as (seq, follower_id as text), newest first: an index-only scan of
    follows_by_followee. Text, because fan-out only forwards the ids."""
    cur = await conn.execute(
        f"SELECT seq, follower_id::text FROM {Activity.follows}"
        " WHERE followee_id = %s AND seq < %s ORDER BY seq DESC LIMIT %s",
        [user_id, before_seq if before_seq is not None else 2**63 - 1, limit],
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def recent_videos_of(
    conn: AsyncConnection, creator_id: uuid.UUID, limit: int
) -> list[QueuedVideo]:
    cur = await conn.execute(
        f"SELECT video_id, creator_id, created_at FROM {Upload.videos}"
        " WHERE creator_id = %s AND deleted_at IS NULL ORDER BY video_id DESC LIMIT %s",
        [creator_id, limit],
    )
    return [QueuedVideo(*r) for r in await cur.fetchall()]


async def video_ids_of(conn: AsyncConnection, creator_id: uuid.UUID, limit: int) -> list[str]:
    """A creator's newest video ids, deleted ones included (for purging them from a queue)."""
    cur = await conn.execute(
        f"SELECT video_id FROM {Upload.videos} WHERE creator_id = %s"
        " ORDER BY video_id DESC LIMIT %s",
        [creator_id, limit],
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def recent_completions(conn: AsyncConnection, user_id: uuid.UUID, limit: int) -> list[str]:
    """The videos ``user_id`` last played to the end, newest first (completions' key)."""
    cur = await conn.execute(
        f"SELECT video_id::text FROM {Activity.completions}"
        " WHERE user_id = %s ORDER BY completed_at DESC LIMIT %s",
        [user_id, limit],
    )
    return [r[0] for r in await cur.fetchall()]


async def recent_likes(
    conn: AsyncConnection, user_id: uuid.UUID, limit: int
) -> list[tuple[str, str]]:
    """What ``user_id`` liked last, as (video_id, creator_id), newest first: likes_by_user,
    then each video by its key."""
    cur = await conn.execute(
        f"SELECT l.video_id::text, v.creator_id::text FROM {Activity.likes} l"
        f" JOIN {Upload.videos} v USING (video_id)"
        " WHERE l.user_id = %s ORDER BY l.seq DESC LIMIT %s",
        [user_id, limit],
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]
