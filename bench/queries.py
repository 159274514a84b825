"""The on-demand SQL feed the benchmark compares against: the best single query we know for a
following page with everything a client needs (video fields and counts), straight from
Postgres. EXPLAIN: an index-only scan of follows_by_follower for the followees, then per
followee a top-N index scan of videos_by_creator (LATERAL), a top-N sort of the merged rows, and
a primary-key lookup of video_counters per row of the page."""

from __future__ import annotations

from psycopg import AsyncConnection

FOLLOWING_PAGE = """
SELECT v.video_id, v.creator_id, v.caption, v.object_key, v.thumbnail_key, v.duration_ms,
       v.size_bytes, v.created_at,
       coalesce(c.like_count, 0), coalesce(c.comment_count, 0), coalesce(c.favorite_count, 0)
FROM (
  SELECT lv.* FROM activity.follows f
  CROSS JOIN LATERAL (
    SELECT video_id, creator_id, caption, object_key, thumbnail_key, duration_ms, size_bytes,
           created_at
    FROM upload.videos
    WHERE creator_id = f.followee_id AND deleted_at IS NULL
    ORDER BY video_id DESC LIMIT %(n)s
  ) lv
  WHERE f.follower_id = %(user)s
  ORDER BY lv.video_id DESC LIMIT %(n)s
) v
LEFT JOIN activity.video_counters c USING (video_id)
ORDER BY v.video_id DESC
"""


async def following_page(conn: AsyncConnection, user_id: str, size: int) -> list[tuple]:
    cur = await conn.execute(FOLLOWING_PAGE, {"user": user_id, "n": size}, prepare=True)
    return await cur.fetchall()
