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
    state: str  # processing | ready | failed: the HLS ladder's
    hls_key: str | None  # the master playlist, once ready


@dataclass(frozen=True)
class TranscodeJob:
    video_id: uuid.UUID
    attempts: int  # claims so far, this one included


_UPLOAD = (
    "upload_id, owner_id, object_key, content_type, size_bytes, expires_at, state, rejected_reason"
)
_VIDEO = (
    "video_id, upload_id, creator_id, caption, object_key, thumbnail_key, content_type,"
    " size_bytes, duration_ms, width, height, created_at, deleted_at, state, hls_key"
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


async def stale_uploads_to_sweep(
    conn: AsyncConnection, url_seconds: int, limit: int
) -> list[UploadRow]:
    """Published or rejected uploads whose upload URL has expired and whose upload key was not
    yet swept (a client may PUT again to a still-valid URL after publish or rejection)."""
    cur = conn.cursor(row_factory=class_row(UploadRow))
    await cur.execute(
        f"SELECT {_UPLOAD} FROM uploads WHERE state IN ('published', 'rejected')"
        " AND swept_at IS NULL AND created_at < now() - make_interval(secs => %s)"
        " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
        [url_seconds + 60, limit],
    )
    return await cur.fetchall()


async def mark_swept(conn: AsyncConnection, upload_ids: list[uuid.UUID]) -> None:
    await conn.execute(
        "UPDATE uploads SET swept_at = now() WHERE upload_id = ANY(%s)", [upload_ids]
    )


# --- transcode jobs ----------------------------------------------------------------------------


async def insert_transcode_job(conn: AsyncConnection, video_id: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO transcode_jobs (video_id) VALUES (%s) ON CONFLICT DO NOTHING", [video_id]
    )


async def claim_transcode_job(
    conn: AsyncConnection, worker: str, lease_seconds: float
) -> TranscodeJob | None:
    """Leases the oldest due job that nobody holds (or whose holder's lease ran out)."""
    cur = conn.cursor(row_factory=class_row(TranscodeJob))
    await cur.execute(
        "UPDATE transcode_jobs SET attempts = attempts + 1, leased_by = %s,"
        " leased_until = now() + make_interval(secs => %s)"
        " WHERE video_id = (SELECT video_id FROM transcode_jobs WHERE run_after <= now()"
        "  AND (leased_until IS NULL OR leased_until < now())"
        "  ORDER BY run_after LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING video_id, attempts",
        [worker, lease_seconds],
    )
    return await cur.fetchone()


async def renew_lease(
    conn: AsyncConnection, video_id: uuid.UUID, worker: str, lease_seconds: float
) -> bool:
    """False when the lease is no longer this worker's (it ran out and another took the job)."""
    cur = await conn.execute(
        "UPDATE transcode_jobs SET leased_until = now() + make_interval(secs => %s)"
        " WHERE video_id = %s AND leased_by = %s",
        [lease_seconds, video_id, worker],
    )
    return cur.rowcount == 1


async def release_leases_of(conn: AsyncConnection, worker: str) -> int:
    """At a worker's start: the jobs its previous run held are due again at once, and the
    interrupted attempt does not count against the video."""
    cur = await conn.execute(
        "UPDATE transcode_jobs SET leased_by = NULL, leased_until = NULL,"
        " attempts = greatest(attempts - 1, 0) WHERE leased_by = %s",
        [worker],
    )
    return cur.rowcount


async def retry_transcode_later(
    conn: AsyncConnection, job: TranscodeJob, worker: str, error: str, delay_seconds: float,
    *, counted: bool,
) -> None:  # fmt: skip
    """Gives the job back with a backoff; ``counted=False`` (storage was down, not the file's
    fault) takes the attempt back."""
    await conn.execute(
        "UPDATE transcode_jobs SET leased_by = NULL, leased_until = NULL, last_error = %s,"
        " run_after = now() + make_interval(secs => %s),"
        " attempts = attempts - CASE WHEN %s THEN 0 ELSE 1 END"
        " WHERE video_id = %s AND leased_by = %s",
        [error[:1000], delay_seconds, counted, job.video_id, worker],
    )


async def delete_transcode_job(conn: AsyncConnection, video_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM transcode_jobs WHERE video_id = %s", [video_id])


async def set_video_state(
    conn: AsyncConnection, video_id: uuid.UUID, state: str, hls_key: str | None
) -> VideoRow | None:
    """The live video with its new state, or None when it was deleted meanwhile."""
    cur = conn.cursor(row_factory=class_row(VideoRow))
    await cur.execute(
        f"UPDATE videos SET state = %s, hls_key = %s WHERE video_id = %s AND deleted_at IS NULL"
        f" RETURNING {_VIDEO}",
        [state, hls_key, video_id],
    )
    return await cur.fetchone()


async def transcode_queue_depth(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT count(*) FROM transcode_jobs")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
