"""Cleaning up storage: expired upload tickets (and whatever was PUT for them) and the blobs of
deleted videos. Both run in the background; the database says what to remove."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from upload_svc import store

log = logging.getLogger("upload_svc.janitor")

BATCH = 100


async def _delete_objects(client: Any, bucket: str, object_keys: list[str]) -> None:
    if object_keys:
        await asyncio.to_thread(
            client.delete_objects,
            Bucket=bucket,
            Delete={"Objects": [{"Key": k} for k in object_keys], "Quiet": True},
        )


async def sweep_expired_uploads(pool: AsyncConnectionPool, client: Any, bucket: str) -> int:
    """Removes pending tickets past their expiry and their objects; returns how many."""
    async with pool.connection() as conn, conn.transaction():
        expired = await store.expired_pending_uploads(conn, BATCH)
        await _delete_objects(client, bucket, [u.object_key for u in expired])
        for upload in expired:
            await store.delete_upload(conn, upload.upload_id)
    if expired:
        log.info("expired uploads removed", extra={"count": len(expired)})
    return len(expired)


async def remove_deleted_blobs(pool: AsyncConnectionPool, client: Any, bucket: str) -> int:
    """Deletes the video and thumbnail objects of soft-deleted videos; returns how many videos."""
    async with pool.connection() as conn, conn.transaction():
        videos = await store.deleted_videos_with_blobs(conn, BATCH)
        object_keys = [k for v in videos for k in (v.object_key, v.thumbnail_key)]
        await _delete_objects(client, bucket, object_keys)
        await store.mark_blobs_removed(conn, [v.video_id for v in videos])
    if videos:
        log.info("blobs of deleted videos removed", extra={"count": len(videos)})
    return len(videos)
