"""Publishing: an upload becomes a video. The object is checked (HEAD, then probed with ranged
reads), copied where no upload URL can write, thumbnailed, and recorded with its event and its
transcode job in one transaction; then its card is written. Also the streaming upload of
internal callers (UploadVideo), which ends in the same publication."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import botocore.exceptions
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from mesh.outbox import new_event, record_event
from mesh.proto import timestamp
from readmodels import objects
from readmodels.counters import VideoCountsSource
from tiktok.v1 import common_pb2, events_pb2, upload_pb2
from upload_svc import rules, store
from upload_svc.cards import Cards, video_message
from upload_svc.media import ProbeResult, RejectedMedia, S3RangeReader, probe_video
from upload_svc.storage import Storage

log = logging.getLogger("upload_svc.publishing")


@dataclass(frozen=True)
class Checked:
    """An upload that passed the checks, and the version (ETag) that passed them."""

    probe: ProbeResult
    etag: str


class Publisher:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        storage: Storage,
        cards: Cards,
        counts: VideoCountsSource,
        transcode_wanted: asyncio.Event,
        probe_slots: int = 2,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.cards = cards
        self.counts = counts
        # set on publish: the rendition worker starts the new job at once instead of polling
        self.transcode_wanted = transcode_wanted
        # probing decodes video: bound it so a burst of completions cannot exhaust CPU/memory
        self.probe_slots = asyncio.Semaphore(probe_slots)

    async def complete(self, upload: store.UploadRow, caption: str) -> common_pb2.Video:
        """Checks the uploaded object and publishes it as a video."""
        return await self._publish(upload, caption, await self._check(upload))

    async def existing_video(self, conn: AsyncConnection, upload_id: uuid.UUID) -> common_pb2.Video:
        """The video an upload was published as (a repeated or concurrent completion)."""
        video = await store.video_by_upload(conn, upload_id)
        if video is None or video.deleted_at is not None:
            raise NotFound("video for upload", str(upload_id))
        message = video_message(video, self.storage)
        await self.counts.fill([message])
        return message

    async def _check(self, upload: store.UploadRow) -> Checked:
        """HEAD then probe the uploaded object; a bad object is deleted and the ticket rejected."""
        s = self.storage
        head = await asyncio.to_thread(s.head, upload.object_key)
        if head is None:
            raise FailedPrecondition(
                "upload_id: nothing has been uploaded yet; PUT the bytes to upload_url first"
            )
        if head.size != upload.size_bytes:
            await self._reject(
                upload, f"{head.size} bytes were uploaded but {upload.size_bytes} were declared"
            )
        async with self.probe_slots:
            reader = S3RangeReader(
                s.client, s.bucket, upload.object_key, upload.size_bytes, head.etag
            )
            try:
                probe = await asyncio.to_thread(probe_video, reader, upload.content_type)
            except RejectedMedia as e:
                await self._reject(upload, str(e))
                raise AssertionError("unreachable") from None
        return Checked(probe, head.etag)

    async def _reject(self, upload: store.UploadRow, reason: str) -> None:
        """Deletes the object, marks the ticket rejected, and raises INVALID_ARGUMENT."""
        await asyncio.to_thread(self.storage.delete, upload.object_key)
        async with self.pool.connection() as conn:
            await store.reject_upload(conn, upload.upload_id, reason)
        log.info("upload rejected", extra={"upload_id": str(upload.upload_id), "reason": reason})
        raise InvalidArgument("upload_id", reason)

    async def _publish(
        self, upload: store.UploadRow, caption: str, checked: Checked
    ) -> common_pb2.Video:
        media_key, thumb_key = await self._store_media(upload, checked)
        async with self.pool.connection() as conn, conn.transaction():
            video = await store.insert_video(
                conn, upload, caption, media_key, thumb_key,
                checked.probe.duration_ms, checked.probe.width, checked.probe.height,
            )  # fmt: skip
            if video is None:  # a concurrent completion of the same upload won
                return await self.existing_video(conn, upload.upload_id)
            await store.mark_published(conn, upload.upload_id)
            await store.insert_transcode_job(conn, video.video_id)
            await record_event(conn, _published_event(video))
        self.transcode_wanted.set()
        message = video_message(video, self.storage)
        await self.cards.write([message])
        try:  # the upload copy has served its purpose; the sweeper is not needed for it
            await asyncio.to_thread(self.storage.delete, upload.object_key)
        except botocore.exceptions.BotoCoreError as e:
            log.warning("upload object not deleted: %r", e)
        return message

    async def _store_media(self, upload: store.UploadRow, checked: Checked) -> tuple[str, str]:
        """The published copy (exactly the probed version, to a key no upload URL can write)
        and the thumbnail; returns their keys."""
        s = self.storage
        media_key = objects.published_key(str(upload.upload_id))
        thumb_key = objects.thumbnail_key(str(upload.upload_id))
        if not await asyncio.to_thread(s.copy_if_match, upload.object_key, media_key, checked.etag):
            raise FailedPrecondition(
                "upload_id: the upload changed while it was being checked; complete it again"
            )
        await asyncio.to_thread(
            s.put_immutable, thumb_key, checked.probe.thumbnail_jpeg, "image/jpeg"
        )
        return media_key, thumb_key

    async def stream_to_storage(
        self, upload: store.UploadRow, messages: AsyncIterator[upload_pb2.UploadVideoRequest]
    ) -> None:
        """The chunks of an UploadVideo stream into a multipart upload of ``upload``'s object,
        in parts of PART_BYTES; aborted whole on any error (a short or long stream included)."""
        multipart = await asyncio.to_thread(
            self.storage.multipart, upload.object_key, upload.content_type
        )
        buffer = bytearray()
        received = 0
        try:
            async for message in messages:
                received += _chunk_size(message, received, upload.size_bytes)
                buffer += message.chunk
                if len(buffer) >= rules.PART_BYTES:
                    await asyncio.to_thread(multipart.upload_part, bytes(buffer))
                    buffer.clear()
            if received != upload.size_bytes:
                raise InvalidArgument(
                    "size_bytes",
                    f"{received} bytes were sent but {upload.size_bytes} were declared",
                )
            if buffer or not multipart.parts:
                await asyncio.to_thread(multipart.upload_part, bytes(buffer))
            await asyncio.to_thread(multipart.complete)
        except BaseException:
            await asyncio.to_thread(multipart.abort)
            raise


def _chunk_size(message: upload_pb2.UploadVideoRequest, received: int, declared: int) -> int:
    """The size of one streamed chunk, checked: a chunk, within its limit and the declared
    size."""
    if message.WhichOneof("part") != "chunk":
        raise InvalidArgument("chunk", "only the first message carries metadata")
    if len(message.chunk) > rules.MAX_CHUNK_BYTES:
        raise InvalidArgument("chunk", "must be at most 1 MiB per message")
    if received + len(message.chunk) > declared:
        raise InvalidArgument("chunk", f"more bytes than the declared size_bytes {declared}")
    return len(message.chunk)


def _published_event(video: store.VideoRow) -> events_pb2.Event:
    published = events_pb2.VideoPublished(
        video_id=str(video.video_id),
        creator_id=str(video.creator_id),
        created_at=timestamp(video.created_at),
    )
    return new_event("video.published", str(video.video_id), video_published=published)
