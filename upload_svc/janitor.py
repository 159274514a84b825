"""Cleaning up storage, driven by the database: what expired tickets left, what a client PUT
again after its upload was published or rejected, interrupted multipart uploads, and every
object of deleted videos (file, thumbnail, HLS ladder). All of it runs in the background."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from readmodels import objects
from upload_svc import rules, store
from upload_svc.storage import Storage

log = logging.getLogger("upload_svc.janitor")

BATCH = 100
# a streamed upload older than this that never completed was interrupted (a killed process)
STALE_MULTIPART = timedelta(hours=1)


def _keys_of_upload(upload_id: str) -> list[str]:
    """Every key an upload can have written: the upload itself, its published copy, its
    thumbnail (written before the video row, so a failed insert can leave them behind)."""
    return [
        objects.video_key(upload_id),
        objects.published_key(upload_id),
        objects.thumbnail_key(upload_id),
    ]


async def sweep_expired_uploads(pool: AsyncConnectionPool, storage: Storage) -> int:
    """Removes pending tickets past their expiry and whatever they wrote; returns how many."""
    async with pool.connection() as conn, conn.transaction():
        expired = await store.expired_pending_uploads(conn, BATCH)
        keys = [k for u in expired for k in _keys_of_upload(str(u.upload_id))]
        await asyncio.to_thread(storage.delete_keys, keys)
        for upload in expired:
            await store.delete_upload(conn, upload.upload_id)
    if expired:
        log.info("expired uploads removed", extra={"count": len(expired)})
    return len(expired)


async def sweep_reused_upload_urls(pool: AsyncConnectionPool, storage: Storage) -> int:
    """After a published or rejected upload's URL expired: its upload key (a client may have
    PUT to it again), and for a rejected one anything else it wrote. Returns how many."""
    async with pool.connection() as conn, conn.transaction():
        uploads = await store.stale_uploads_to_sweep(conn, rules.UPLOAD_URL_SECONDS, BATCH)
        keys = []
        for u in uploads:
            ident = str(u.upload_id)
            keys += [objects.video_key(ident)] if u.state == "published" else _keys_of_upload(ident)
        await asyncio.to_thread(storage.delete_keys, keys)
        await store.mark_swept(conn, [u.upload_id for u in uploads])
    return len(uploads)


async def abort_stale_multipart_uploads(storage: Storage) -> int:
    """Multipart uploads of streamed uploads whose process died before completing or aborting."""

    cutoff = datetime.now(UTC) - STALE_MULTIPART
    aborted = await asyncio.to_thread(storage.abort_multipart_older_than, cutoff)
    if aborted:
        log.info("interrupted multipart uploads aborted", extra={"count": aborted})
    return aborted


async def remove_deleted_blobs(pool: AsyncConnectionPool, storage: Storage) -> int:
    """Deletes every object of soft-deleted videos; returns how many videos."""
    async with pool.connection() as conn, conn.transaction():
        videos = await store.deleted_videos_with_blobs(conn, BATCH)
        for v in videos:
            await store.delete_transcode_job(conn, v.video_id)
            await asyncio.to_thread(storage.delete_prefix, objects.hls_prefix(str(v.upload_id)))
        keys = [k for v in videos for k in (v.object_key, v.thumbnail_key)]
        await asyncio.to_thread(storage.delete_keys, keys)
        await store.mark_blobs_removed(conn, [v.video_id for v in videos])
    if videos:
        log.info("blobs of deleted videos removed", extra={"count": len(videos)})
    return len(videos)
