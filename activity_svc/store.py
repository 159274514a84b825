"""SQL of activity_svc, one function per statement. Connections come with search_path=activity."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row

from mesh.outbox import OUTBOX_INSERT, outbox_params
from readmodels.counters import USER_FIELDS, VIDEO_FIELDS
from tiktok.v1 import events_pb2


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


async def update_password_hash(
    conn: AsyncConnection, user_id: uuid.UUID, password_hash: str
) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = %s WHERE user_id = %s", [password_hash, user_id]
    )


async def user_by_id(conn: AsyncConnection, user_id: uuid.UUID) -> UserRow | None:
    cur = conn.cursor(row_factory=class_row(UserRow))
    await cur.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = %s", [user_id])
    return await cur.fetchone()


# --- sessions and their refresh tokens --------------------------------------------------------


async def insert_session(
    conn: AsyncConnection, user_id: uuid.UUID, token_hash: bytes, ttl_seconds: int
) -> uuid.UUID:
    """A new session of ``user_id`` with its first refresh token; call in a transaction."""
    cur = await conn.execute(
        "INSERT INTO sessions (user_id, expires_at)"
        " VALUES (%s, now() + make_interval(secs => %s)) RETURNING session_id",
        [user_id, ttl_seconds],
    )
    row = await cur.fetchone()
    assert row is not None
    await insert_refresh_token(conn, row[0], token_hash)
    return row[0]


async def insert_refresh_token(
    conn: AsyncConnection, session_id: uuid.UUID, token_hash: bytes
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id) VALUES (%s, %s)",
        [token_hash, session_id],
    )


@dataclass(frozen=True)
class RefreshRow:
    session_id: uuid.UUID
    user_id: uuid.UUID
    spent_at: datetime | None
    expires_at: datetime
    revoked_at: datetime | None
    now: datetime


async def refresh_token_for_update(conn: AsyncConnection, token_hash: bytes) -> RefreshRow | None:
    """The refresh token and its session, both locked until the transaction ends, so two
    refreshes with one token are serialised and the second sees the first one's spend."""
    cur = conn.cursor(row_factory=class_row(RefreshRow))
    await cur.execute(
        "SELECT t.session_id, s.user_id, t.spent_at, s.expires_at, s.revoked_at, now() AS now"
        " FROM refresh_tokens t JOIN sessions s USING (session_id)"
        " WHERE t.token_hash = %s FOR UPDATE",
        [token_hash],
    )
    return await cur.fetchone()


async def rotate_refresh_token(
    conn: AsyncConnection, session_id: uuid.UUID, spent: bytes, fresh: bytes, ttl_seconds: int
) -> None:
    """Spends ``spent``, issues ``fresh`` and slides the session's expiry; in a transaction."""
    async with conn.pipeline():
        await conn.execute(
            "UPDATE refresh_tokens SET spent_at = now() WHERE token_hash = %s", [spent]
        )
        await insert_refresh_token(conn, session_id, fresh)
        await conn.execute(
            "UPDATE sessions SET expires_at = now() + make_interval(secs => %s)"
            " WHERE session_id = %s",
            [ttl_seconds, session_id],
        )


async def revoke_session(
    conn: AsyncConnection, session_id: uuid.UUID, user_id: uuid.UUID, why: str
) -> None:
    """Revokes the session (a no-op when it is not ``user_id``'s or already revoked)."""
    await conn.execute(
        "UPDATE sessions SET revoked_at = now(), revoked_why = %s"
        " WHERE session_id = %s AND user_id = %s AND revoked_at IS NULL",
        [why, session_id, user_id],
    )


async def prune_spent_tokens(conn: AsyncConnection, keep_seconds: int, limit: int) -> int:
    """Deletes up to ``limit`` refresh tokens spent more than ``keep_seconds`` ago, so a session
    refreshed every 15 minutes for months does not pile up rows: a copy replayed after that is
    refused as unknown (401) instead of also revoking the session."""
    cur = await conn.execute(
        "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash FROM refresh_tokens"
        " WHERE spent_at < now() - make_interval(secs => %s) LIMIT %s)",
        [keep_seconds, limit],
    )
    return cur.rowcount


async def prune_sessions(conn: AsyncConnection, keep_seconds: int, limit: int) -> int:
    """Deletes up to ``limit`` sessions (and their tokens) expired or revoked more than
    ``keep_seconds`` ago: their tokens are refused as unknown from then on."""
    cur = await conn.execute(
        "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM sessions"
        " WHERE expires_at < now() - make_interval(secs => %s)"
        " OR revoked_at < now() - make_interval(secs => %s) LIMIT %s)",
        [keep_seconds, keep_seconds, limit],
    )
    return cur.rowcount


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
    view_count: int


# counts may dip below zero for a moment when a delete's event is applied before its create's
_USER_VIEW = (
    "u.user_id, u.handle, u.display_name, u.created_at,"
    " greatest(coalesce(c.follower_count, 0), 0) AS follower_count,"
    " greatest(coalesce(c.following_count, 0), 0) AS following_count,"
    " greatest(coalesce(c.video_count, 0), 0) AS video_count,"
    " greatest(coalesce(c.view_count, 0), 0) AS view_count"
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
#
# A pair write is an upsert or a delete plus its outbox event, in one transaction, serialised per
# pair by an advisory lock: concurrent create and delete calls of one pair commit in the order
# they took the lock, so the last one acknowledged decides the state. (Without the lock a DELETE
# does not wait for an uncommitted INSERT of the same pair, and could be acknowledged last while
# the row stays.) Each write is one round trip: the statements of a call are pipelined.

PairRelation = Literal["follows", "likes", "favorites"]
VideoRelation = Literal["likes", "favorites"]
_PAIR_COLUMNS: dict[str, tuple[str, str]] = {
    "follows": ("follower_id", "followee_id"),
    "likes": ("user_id", "video_id"),
    "favorites": ("user_id", "video_id"),
}


@dataclass(frozen=True)
class PairRow:
    """One follow, like or favorite, and when: ``actor_id`` follows or likes ``target_id``
    (follower → followee, user → video)."""

    actor_id: uuid.UUID
    target_id: uuid.UUID
    created_at: datetime


def _pair_names(relation: PairRelation) -> dict[str, sql.Composable]:
    a, b = _PAIR_COLUMNS[relation]
    return {"rel": sql.Identifier(relation), "a": sql.Identifier(a), "b": sql.Identifier(b)}


def _read_pair(names: dict[str, sql.Composable]) -> sql.Composed:
    return sql.SQL(
        "SELECT {a} AS actor_id, {b} AS target_id, created_at FROM {rel}"
        " WHERE {a} = %s AND {b} = %s"
    ).format(**names)


async def _lock_pair(
    conn: AsyncConnection, relation: PairRelation, a: uuid.UUID, b: uuid.UUID
) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"{relation}:{a}:{b}"]
    )


async def add_pair(
    conn: AsyncConnection,
    relation: PairRelation,
    a: uuid.UUID,
    b: uuid.UUID,
    event: events_pb2.Event,
) -> tuple[PairRow, bool]:
    """Adds the pair and, only if it was new, records ``event``. Returns the pair (the existing
    one when it was there) and whether this call created it. ForeignKeyViolation for a follow of
    an unknown user."""
    names = _pair_names(relation)
    upsert = sql.SQL(
        "WITH added AS (INSERT INTO {rel} ({a}, {b}) VALUES (%s, %s)"
        "  ON CONFLICT DO NOTHING RETURNING 1),"
        " event AS (" + OUTBOX_INSERT + " SELECT %s, %s, %s FROM added)"
        " SELECT count(*) FROM added"
    ).format(**names)
    read = conn.cursor(row_factory=class_row(PairRow))
    async with conn.pipeline(), conn.transaction():
        await _lock_pair(conn, relation, a, b)
        added = await conn.execute(upsert, [a, b, *outbox_params(event)])
        await read.execute(_read_pair(names), [a, b])
    created = await added.fetchone()
    row = await read.fetchone()
    assert created is not None and row is not None  # the lock keeps the pair until commit
    return row, created[0] == 1


async def remove_pair(
    conn: AsyncConnection,
    relation: PairRelation,
    a: uuid.UUID,
    b: uuid.UUID,
    event: events_pb2.Event,
) -> bool:
    """Removes the pair and, only if it was there, records ``event``; True when removed.

    The lock is a statement of its own: a DELETE only sees rows of its snapshot, so it must
    start after the lock is held (READ COMMITTED takes a snapshot per statement)."""
    query = sql.SQL(
        "WITH removed AS (DELETE FROM {rel} WHERE {a} = %s AND {b} = %s RETURNING 1),"
        " event AS (" + OUTBOX_INSERT + " SELECT %s, %s, %s FROM removed)"
        " SELECT count(*) FROM removed"
    ).format(**_pair_names(relation))
    async with conn.pipeline(), conn.transaction():
        await _lock_pair(conn, relation, a, b)
        cur = await conn.execute(query, [a, b, *outbox_params(event)])
    row = await cur.fetchone()
    return bool(row and row[0])


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


def _before(after_seq: int | None) -> int:
    """The keyset bound: rows with a smaller seq come after ``after_seq`` (newest first)."""
    return after_seq if after_seq is not None else 2**63 - 1


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
        f"SELECT {_COMMENT} FROM comments WHERE comment_id = %s AND video_id = %s",
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
    """One row of user_counters or video_counters: the id, its counts (COUNTER_COLUMNS order),
    the version."""

    entity_id: uuid.UUID
    counts: tuple[int, ...]
    version: int


CounterTable = Literal["user_counters", "video_counters"]
# the key, then the counts: the mirrored ones (readmodels.counters) first; a video's watch time
# and completions are ranking signals, not shown
COUNTER_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "user_counters": ("user_id", USER_FIELDS),
    "video_counters": ("video_id", (*VIDEO_FIELDS, "watch_ms", "completion_count")),
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


def _counter_sql(table: CounterTable) -> tuple[sql.Identifier, list[sql.Identifier]]:
    key, counts = COUNTER_COLUMNS[table]
    return sql.Identifier(key), [sql.Identifier(c) for c in counts]


async def add_to_counters(
    conn: AsyncConnection,
    table: CounterTable,
    deltas: Mapping[uuid.UUID, Sequence[int]],
) -> list[CounterRow]:
    """Adds the deltas, one upsert for all rows, in id order (two consumers updating the same
    rows lock them in the same order: no deadlock). Returns the rows as they now are."""
    ids = sorted(deltas)
    key, counts = _counter_sql(table)
    # a new row starts at version 1: version 0 is what read repair mirrors for "never counted"
    query = sql.SQL(
        "INSERT INTO {table} AS t ({key}, {counts}, version)"
        " SELECT *, 1 FROM unnest(%s::uuid[], {arrays}) ORDER BY 1"
        " ON CONFLICT ({key}) DO UPDATE SET {sums}, version = t.version + 1"
        " RETURNING {key}, {counts}, version"
    ).format(
        table=sql.Identifier(table),
        key=key,
        counts=sql.SQL(", ").join(counts),
        arrays=sql.SQL(", ").join(sql.SQL("%s::bigint[]") for _ in counts),
        sums=sql.SQL(", ").join(sql.SQL("{0} = t.{0} + excluded.{0}").format(c) for c in counts),
    )
    columns = [[deltas[i][n] for i in ids] for n in range(len(counts))]
    cur = await conn.execute(query, [ids, *columns])
    return [CounterRow(r[0], tuple(r[1:-1]), r[-1]) for r in await cur.fetchall()]


async def counters_by_ids(
    conn: AsyncConnection, table: CounterTable, ids: Sequence[uuid.UUID]
) -> list[CounterRow]:
    key, counts = _counter_sql(table)
    query = sql.SQL("SELECT {key}, {counts}, version FROM {table} WHERE {key} = ANY(%s)").format(
        table=sql.Identifier(table), key=key, counts=sql.SQL(", ").join(counts)
    )
    cur = await conn.execute(query, [list(ids)])
    return [CounterRow(r[0], tuple(r[1:-1]), r[-1]) for r in await cur.fetchall()]


async def record_completions(
    conn: AsyncConnection, completions: Mapping[tuple[uuid.UUID, uuid.UUID], datetime]
) -> None:
    """Records (viewer, video) plays to the end, keeping the latest time of each pair."""
    pairs = sorted(completions)
    await conn.execute(
        "INSERT INTO completions (user_id, video_id, completed_at)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[])"
        " ON CONFLICT (user_id, video_id)"
        " DO UPDATE SET completed_at = greatest(completions.completed_at, excluded.completed_at)",
        [[u for u, _ in pairs], [v for _, v in pairs], [completions[p] for p in pairs]],
    )


async def oldest_outbox_event(conn: AsyncConnection) -> float | None:
    """When the oldest event still in the outbox was written (seconds since the epoch): it may
    be relayed again, so its id must stay known as applied."""
    cur = await conn.execute("SELECT extract(epoch FROM min(created_at))::float8 FROM outbox")
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def prune_applied_events(conn: AsyncConnection, before_epoch: float, limit: int) -> int:
    """Deletes up to ``limit`` ids applied before ``before_epoch`` (applied_events_by_time)."""
    cur = await conn.execute(
        "DELETE FROM applied_events WHERE event_id IN (SELECT event_id FROM applied_events"
        " WHERE applied_at < to_timestamp(%s) LIMIT %s)",
        [before_epoch, limit],
    )
    return cur.rowcount
