"""SQL of activity_svc, one function per statement. Connections come with search_path=activity."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row


@dataclass(frozen=True)
class UserRow:
    user_id: uuid.UUID
    handle: str
    display_name: str
    password_hash: str
    created_at: datetime


_USER_COLUMNS = "user_id, handle, display_name, password_hash, created_at"


async def insert_user(
    conn: AsyncConnection, handle: str, display_name: str, password_hash: str
) -> UserRow | None:
    """The new user, or None when the handle is taken (decided by the unique constraint)."""
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(
        f"INSERT INTO users (handle, display_name, password_hash) VALUES (%s, %s, %s)"
        f" ON CONFLICT (handle) DO NOTHING RETURNING {_USER_COLUMNS}",
        [handle, display_name, password_hash],
    )
    return await cur.fetchone()


async def user_by_handle(conn: AsyncConnection, handle: str) -> UserRow | None:
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE handle = %s", [handle])
    return await cur.fetchone()


async def user_by_id(conn: AsyncConnection, user_id: uuid.UUID) -> UserRow | None:
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = %s", [user_id])
    return await cur.fetchone()


async def update_password_hash(
    conn: AsyncConnection, user_id: uuid.UUID, password_hash: str
) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = %s WHERE user_id = %s", [password_hash, user_id]
    )


# --- users as others see them (with counts) ---------------------------------------------------


@dataclass(frozen=True)
class UserView:
    user_id: uuid.UUID
    handle: str
    display_name: str
    created_at: datetime
    follower_count: int
    following_count: int
    video_count: int


# counts may dip below zero for a moment when a delete's event is applied before its create's
_USER_VIEW = (
    "u.user_id, u.handle, u.display_name, u.created_at,"
    " greatest(coalesce(c.follower_count, 0), 0) AS follower_count,"
    " greatest(coalesce(c.following_count, 0), 0) AS following_count,"
    " greatest(coalesce(c.video_count, 0), 0) AS video_count"
)
_USERS_WITH_COUNTS = "users u LEFT JOIN user_counters c USING (user_id)"


async def user_views(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> list[UserView]:
    cur = conn.cursor(row_factory=class_row(UserView))
    await cur.execute(
        f"SELECT {_USER_VIEW} FROM {_USERS_WITH_COUNTS} WHERE u.user_id = ANY(%s)", [user_ids]
    )
    return await cur.fetchall()


async def user_exists(conn: AsyncConnection, user_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM users WHERE user_id = %s", [user_id])
    return await cur.fetchone() is not None


# --- pairs: follows, likes, favorites ---------------------------------------------------------


async def lock_pair(conn: AsyncConnection, relation: str, a: uuid.UUID, b: uuid.UUID) -> None:
    """Serialises writes to one pair until the transaction ends, so concurrent create and
    delete calls of the same pair commit in the order they took the lock and the last one
    acknowledged decides the state (a DELETE does not wait for an uncommitted INSERT)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"{relation}:{a}:{b}"]
    )


@dataclass(frozen=True)
class FollowRow:
    follower_id: uuid.UUID
    followee_id: uuid.UUID
    created_at: datetime


async def insert_follow(
    conn: AsyncConnection, follower_id: uuid.UUID, followee_id: uuid.UUID
) -> FollowRow | None:
    """The new follow; None when it existed. ForeignKeyViolation when the followee is unknown."""
    cur = conn.cursor(row_factory=class_row(FollowRow))
    await cur.execute(
        "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING follower_id, followee_id, created_at",
        [follower_id, followee_id],
    )
    return await cur.fetchone()


async def follow_by_pair(
    conn: AsyncConnection, follower_id: uuid.UUID, followee_id: uuid.UUID
) -> FollowRow | None:
    cur = conn.cursor(row_factory=class_row(FollowRow))
    await cur.execute(
        "SELECT follower_id, followee_id, created_at FROM follows"
        " WHERE follower_id = %s AND followee_id = %s",
        [follower_id, followee_id],
    )
    return await cur.fetchone()


async def delete_follow(
    conn: AsyncConnection, follower_id: uuid.UUID, followee_id: uuid.UUID
) -> bool:
    """True when this call removed the follow."""
    cur = await conn.execute(
        "DELETE FROM follows WHERE follower_id = %s AND followee_id = %s",
        [follower_id, followee_id],
    )
    return cur.rowcount == 1


Side = Literal["followers", "following"]
# (the user whose list it is, the other side of each row, the index that serves it)
_FOLLOW_SIDES: dict[str, tuple[str, str]] = {
    "followers": ("followee_id", "follower_id"),  # follows_by_followee
    "following": ("follower_id", "followee_id"),  # follows_by_follower
}


async def follow_page(
    conn: AsyncConnection, side: Side, user_id: uuid.UUID, after_seq: int | None, limit: int
) -> list[tuple[int, UserView]]:
    """A page of ``side`` of ``user_id``, most recent follow first, as (seq, user) pairs."""
    own, other = _FOLLOW_SIDES[side]
    query = sql.SQL(
        "SELECT f.seq, {user_view} FROM follows f"
        " JOIN users u ON u.user_id = f.{other} LEFT JOIN user_counters c ON c.user_id = u.user_id"
        " WHERE f.{own} = %s AND f.seq < %s ORDER BY f.seq DESC LIMIT %s"
    ).format(user_view=sql.SQL(_USER_VIEW), own=sql.Identifier(own), other=sql.Identifier(other))
    cur = await conn.execute(query, [user_id, _before(after_seq), limit])
    return [(row[0], UserView(*row[1:])) for row in await cur.fetchall()]


async def follow_ids_page(
    conn: AsyncConnection, side: Side, user_id: uuid.UUID, after_seq: int | None, limit: int
) -> list[tuple[int, uuid.UUID]]:
    """Like ``follow_page`` but ids only: an index-only scan (the index INCLUDEs the other id)."""
    own, other = _FOLLOW_SIDES[side]
    query = sql.SQL(
        "SELECT seq, {other} FROM follows WHERE {own} = %s AND seq < %s ORDER BY seq DESC LIMIT %s"
    ).format(own=sql.Identifier(own), other=sql.Identifier(other))
    cur = await conn.execute(query, [user_id, _before(after_seq), limit])
    return [(row[0], row[1]) for row in await cur.fetchall()]


def _before(after_seq: int | None) -> int:
    """The keyset bound: rows with a smaller seq come after ``after_seq`` (newest first)."""
    return after_seq if after_seq is not None else 2**63 - 1


VideoRelation = Literal["likes", "favorites"]


@dataclass(frozen=True)
class VideoPairRow:
    user_id: uuid.UUID
    video_id: uuid.UUID
    created_at: datetime


async def insert_video_pair(
    conn: AsyncConnection, relation: VideoRelation, user_id: uuid.UUID, video_id: uuid.UUID
) -> VideoPairRow | None:
    """The new like or favorite; None when it existed."""
    cur = conn.cursor(row_factory=class_row(VideoPairRow))
    await cur.execute(
        sql.SQL(
            "INSERT INTO {} (user_id, video_id) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING RETURNING user_id, video_id, created_at"
        ).format(sql.Identifier(relation)),
        [user_id, video_id],
    )
    return await cur.fetchone()


async def video_pair(
    conn: AsyncConnection, relation: VideoRelation, user_id: uuid.UUID, video_id: uuid.UUID
) -> VideoPairRow | None:
    cur = conn.cursor(row_factory=class_row(VideoPairRow))
    await cur.execute(
        sql.SQL(
            "SELECT user_id, video_id, created_at FROM {} WHERE user_id = %s AND video_id = %s"
        ).format(sql.Identifier(relation)),
        [user_id, video_id],
    )
    return await cur.fetchone()


async def delete_video_pair(
    conn: AsyncConnection, relation: VideoRelation, user_id: uuid.UUID, video_id: uuid.UUID
) -> bool:
    """True when this call removed the like or favorite."""
    cur = await conn.execute(
        sql.SQL("DELETE FROM {} WHERE user_id = %s AND video_id = %s").format(
            sql.Identifier(relation)
        ),
        [user_id, video_id],
    )
    return cur.rowcount == 1


async def video_pair_page(
    conn: AsyncConnection,
    relation: VideoRelation,
    user_id: uuid.UUID,
    after_seq: int | None,
    limit: int,
) -> list[tuple[int, uuid.UUID]]:
    """A user's liked or favorite video ids, most recent first, as (seq, video_id); an
    index-only scan of likes_by_user / favorites_by_user."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT seq, video_id FROM {} WHERE user_id = %s AND seq < %s"
            " ORDER BY seq DESC LIMIT %s"
        ).format(sql.Identifier(relation)),
        [user_id, _before(after_seq), limit],
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]


# --- comments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommentRow:
    comment_id: uuid.UUID
    video_id: uuid.UUID
    author_id: uuid.UUID
    text: str
    created_at: datetime


_COMMENT = "comment_id, video_id, author_id, text, created_at"


async def insert_comment(
    conn: AsyncConnection, video_id: uuid.UUID, author_id: uuid.UUID, text: str
) -> CommentRow:
    cur = conn.cursor(row_factory=class_row(CommentRow))
    await cur.execute(
        f"INSERT INTO comments (video_id, author_id, text) VALUES (%s, %s, %s)"
        f" RETURNING {_COMMENT}",
        [video_id, author_id, text],
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def comment_on_video(
    conn: AsyncConnection, video_id: uuid.UUID, comment_id: uuid.UUID
) -> CommentRow | None:
    cur = conn.cursor(row_factory=class_row(CommentRow))
    await cur.execute(
        f"SELECT {_COMMENT} FROM comments WHERE comment_id = %s AND video_id = %s FOR UPDATE",
        [comment_id, video_id],
    )
    return await cur.fetchone()


async def delete_comment(conn: AsyncConnection, comment_id: uuid.UUID) -> bool:
    cur = await conn.execute("DELETE FROM comments WHERE comment_id = %s", [comment_id])
    return cur.rowcount == 1


async def comments_page(
    conn: AsyncConnection, video_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[CommentRow]:
    """A video's comments, newest first (comment_id is a UUIDv7), after keyset ``after``."""
    cur = conn.cursor(row_factory=class_row(CommentRow))
    if after is None:
        await cur.execute(
            f"SELECT {_COMMENT} FROM comments WHERE video_id = %s"
            " ORDER BY comment_id DESC LIMIT %s",
            [video_id, limit],
        )
    else:
        await cur.execute(
            f"SELECT {_COMMENT} FROM comments WHERE video_id = %s AND comment_id < %s"
            " ORDER BY comment_id DESC LIMIT %s",
            [video_id, after, limit],
        )
    return await cur.fetchall()


# --- counters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterRow:
    """One row of user_counters or video_counters: the id, three counts, the version."""

    entity_id: uuid.UUID
    counts: tuple[int, int, int]
    version: int


CounterTable = Literal["user_counters", "video_counters"]
_COUNTER_COLUMNS: dict[str, tuple[str, str, str, str]] = {
    "user_counters": ("user_id", "follower_count", "following_count", "video_count"),
    "video_counters": ("video_id", "like_count", "comment_count", "favorite_count"),
}


async def mark_events_applied(
    conn: AsyncConnection, event_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Records the events as applied; returns those not recorded before (the ones to apply)."""
    cur = await conn.execute(
        "INSERT INTO applied_events (event_id) SELECT unnest(%s::uuid[])"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        [list(event_ids)],
    )
    return {row[0] for row in await cur.fetchall()}


def _counter_names(table: CounterTable) -> dict[str, sql.Identifier]:
    key, a, b, c = _COUNTER_COLUMNS[table]
    return {
        "table": sql.Identifier(table),
        "key": sql.Identifier(key),
        "a": sql.Identifier(a),
        "b": sql.Identifier(b),
        "c": sql.Identifier(c),
    }


async def add_to_counters(
    conn: AsyncConnection,
    table: CounterTable,
    deltas: dict[uuid.UUID, tuple[int, int, int]],
) -> list[CounterRow]:
    """Adds the deltas, one upsert for all rows, in id order (two consumers updating the same
    rows lock them in the same order: no deadlock). Returns the rows as they now are."""
    ids = sorted(deltas)
    query = sql.SQL(
        "INSERT INTO {table} AS t ({key}, {a}, {b}, {c})"
        " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[])"
        " ORDER BY 1"
        " ON CONFLICT ({key}) DO UPDATE SET {a} = t.{a} + excluded.{a},"
        " {b} = t.{b} + excluded.{b}, {c} = t.{c} + excluded.{c}, version = t.version + 1"
        " RETURNING {key}, {a}, {b}, {c}, version"
    ).format(**_counter_names(table))
    columns = [[deltas[i][n] for i in ids] for n in range(3)]
    cur = await conn.execute(query, [ids, *columns])
    return [CounterRow(r[0], (r[1], r[2], r[3]), r[4]) for r in await cur.fetchall()]


async def counters_by_ids(
    conn: AsyncConnection, table: CounterTable, ids: Sequence[uuid.UUID]
) -> list[CounterRow]:
    query = sql.SQL(
        "SELECT {key}, {a}, {b}, {c}, version FROM {table} WHERE {key} = ANY(%s)"
    ).format(**_counter_names(table))
    cur = await conn.execute(query, [list(ids)])
    return [CounterRow(r[0], (r[1], r[2], r[3]), r[4]) for r in await cur.fetchall()]


async def prune_applied_events(conn: AsyncConnection, before_epoch: float) -> int:
    cur = await conn.execute(
        "DELETE FROM applied_events WHERE applied_at < to_timestamp(%s)", [before_epoch]
    )
    return cur.rowcount
