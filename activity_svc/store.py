"""SQL of activity_svc, one function per statement. Connections come with search_path=activity."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection
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
