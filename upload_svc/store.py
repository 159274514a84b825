"""SQL of upload_svc, one function per statement. Connections come with search_path=upload."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import class_row


@dataclass(frozen=True)
class UploadRow:
    upload_id: uuid.UUID
    owner_id: uuid.UUID
    object_key: str
    content_type: str
    size_bytes: int
    expires_at: datetime
    state: str
    rejected_reason: str | None


@dataclass(frozen=True)
class VideoRow:
    video_id: uuid.UUID
    upload_id: uuid.UUID
    creator_id: uuid.UUID
    caption: str
    object_key: str
    thumbnail_key: str
    content_type: str
    size_bytes: int
    duration_ms: int
    width: int
    height: int
    created_at: datetime
    deleted_at: datetime | None


_UPLOAD = (
    "upload_id, owner_id, object_key, content_type, size_bytes, expires_at, state, rejected_reason"
)
_VIDEO = (
    "video_id, upload_id, creator_id, caption, object_key, thumbnail_key, content_type,"
    " size_bytes, duration_ms, width, height, created_at, deleted_at"
)


async def insert_upload(
    conn: AsyncConnection,
    upload_id: uuid.UUID,
    owner_id: uuid.UUID,
    object_key: str,
    content_type: str,
    size_bytes: int,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO uploads (upload_id, owner_id, object_key, content_type, size_bytes,"
        " expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
        [upload_id, owner_id, object_key, content_type, size_bytes, expires_at],
    )


async def upload_by_id(conn: AsyncConnection, upload_id: uuid.UUID) -> UploadRow | None:
    cur = conn.cursor(row_factory=class_row(UploadRow))
    await cur.execute(f"SELECT {_UPLOAD} FROM uploads WHERE upload_id = %s", [upload_id])
    return await cur.fetchone()


async def reject_upload(conn: AsyncConnection, upload_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE uploads SET state = 'rejected', rejected_reason = %s"
        " WHERE upload_id = %s AND state = 'pending'",
        [reason, upload_id],
    )


async def insert_video(
    conn: AsyncConnection,
    upload: UploadRow,
    caption: str,
    object_key: str,
    thumbnail_key: str,
    duration_ms: int,
    width: int,
    height: int,
) -> VideoRow | None:
    """The new video, or None when this upload was already completed (decided by the constraint)."""
    cur = conn.cursor(row_factory=class_row(VideoRow))
    await cur.execute(
        "INSERT INTO videos (upload_id, creator_id, caption, object_key, thumbnail_key,"
        " content_type, size_bytes, duration_ms, width, height)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (upload_id) DO NOTHING RETURNING {_VIDEO}",
        [upload.upload_id, upload.owner_id, caption, object_key, thumbnail_key,
         upload.content_type, upload.size_bytes, duration_ms, width, height],
    )  # fmt: skip
    return await cur.fetchone()


async def mark_published(conn: AsyncConnection, upload_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE uploads SET state = 'published' WHERE upload_id = %s AND state = 'pending'",
        [upload_id],
    )


async def video_by_upload(conn: AsyncConnection, upload_id: uuid.UUID) -> VideoRow | None:
    cur = conn.cursor(row_factory=class_row(VideoRow))
    await cur.execute(f"SELECT {_VIDEO} FROM videos WHERE upload_id = %s", [upload_id])
    return await cur.fetchone()


async def video_by_id(conn: AsyncConnection, video_id: uuid.UUID) -> VideoRow | None:
    cur = conn.cursor(row_factory=class_row(VideoRow))
    await cur.execute(f"SELECT {_VIDEO} FROM videos WHERE video_id = %s", [video_id])
    return await cur.fetchone()


async def live_videos_by_ids(conn: AsyncConnection, video_ids: list[uuid.UUID]) -> list[VideoRow]:
    cur = conn.cursor(row_factory=class_row(VideoRow))
    await cur.execute(
        f"SELECT {_VIDEO} FROM videos WHERE video_id = ANY(%s) AND deleted_at IS NULL", [video_ids]
    )
    return await cur.fetchall()


async def videos_by_creator(
    conn: AsyncConnection, creator_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[VideoRow]:
    """A creator's live videos, newest first, after the keyset position ``after``.

    Uses videos_by_creator (creator_id, video_id DESC) WHERE deleted_at IS NULL.
    """
    cur = conn.cursor(row_factory=class_row(VideoRow))
    if after is None:
        await cur.execute(
            f"SELECT {_VIDEO} FROM videos WHERE creator_id = %s AND deleted_at IS NULL"
            " ORDER BY video_id DESC LIMIT %s",
            [creator_id, limit],
        )
    else:
        await cur.execute(
            f"SELECT {_VIDEO} FROM videos WHERE creator_id = %s AND deleted_at IS NULL"
            " AND video_id < %s ORDER BY video_id DESC LIMIT %s",
            [creator_id, after, limit],
        )
    return await cur.fetchall()


async def soft_delete_video(conn: AsyncConnection, video_id: uuid.UUID) -> bool:
    """True when this call deleted it (False: already deleted)."""
    cur = await conn.execute(
        "UPDATE videos SET deleted_at = now() WHERE video_id = %s AND deleted_at IS NULL",
        [video_id],
    )
    return cur.rowcount == 1


async def expired_pending_uploads(conn: AsyncConnection, limit: int) -> list[UploadRow]:
    cur = conn.cursor(row_factory=class_row(UploadRow))
    await cur.execute(
        f"SELECT {_UPLOAD} FROM uploads WHERE state = 'pending'"
        " AND expires_at < now() - interval '1 minute'"
        " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
        [limit],
    )
    return await cur.fetchall()


async def delete_upload(conn: AsyncConnection, upload_id: uuid.UUID) -> None:
    await conn.execute(
        "DELETE FROM uploads WHERE upload_id = %s AND state <> 'published'", [upload_id]
    )


async def deleted_videos_with_blobs(conn: AsyncConnection, limit: int) -> list[VideoRow]:
    cur = conn.cursor(row_factory=class_row(VideoRow))
    await cur.execute(
        f"SELECT {_VIDEO} FROM videos WHERE deleted_at IS NOT NULL AND blobs_removed_at IS NULL"
        " ORDER BY deleted_at LIMIT %s FOR UPDATE SKIP LOCKED",
        [limit],
    )
    return await cur.fetchall()


async def mark_blobs_removed(conn: AsyncConnection, video_ids: list[uuid.UUID]) -> None:
    await conn.execute(
        "UPDATE videos SET blobs_removed_at = now() WHERE video_id = ANY(%s)", [video_ids]
    )
