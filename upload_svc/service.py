"""UploadService servicer: upload tickets, completing uploads into videos, reading and deleting.

Video bytes never pass through this process on the REST path: clients PUT them to object
storage with a presigned URL; this service checks, probes (ranged reads) and thumbnails them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
from google.protobuf import empty_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from psycopg_pool import AsyncConnectionPool

from mesh.auth import require_caller
from mesh.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from mesh.outbox import new_event, record_event
from mesh.pagination import decode_token, encode_token
from mesh.proto import timestamp
from mesh.validation import page_size, parse_uuid
from readmodels.counters import VIDEO_FIELDS, VideoCountsSource
from tiktok.v1 import common_pb2, events_pb2, upload_pb2, upload_pb2_grpc
from upload_svc import rules, store
from upload_svc.cards import Cards, video_message
from upload_svc.media import ProbeResult, RejectedMedia, S3RangeReader, probe_video
from upload_svc.storage import Storage

log = logging.getLogger("upload_svc")

MAX_BATCH = 500


@dataclass(frozen=True)
class Checked:
    """An upload that passed the checks, and the version (ETag) that passed them."""

    probe: ProbeResult
    etag: str


class UploadService(upload_pb2_grpc.UploadServiceServicer):
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

    def video_message(self, row: store.VideoRow) -> common_pb2.Video:
        return video_message(row, self.storage)

    # --- tickets --------------------------------------------------------------------------

    async def CreateUpload(self, request, context):
        owner = parse_uuid(require_caller(context), "caller")
        content_type = rules.check_content_type(request.content_type)
        size = rules.check_size(request.size_bytes)
        upload_id = uuid.uuid4()  # random: media keys are public, so they must not be guessable
        key = rules.video_key(str(upload_id))
        now = datetime.now(UTC)
        headers = {"Content-Type": content_type, "Cache-Control": rules.IMMUTABLE_CACHE_CONTROL}
        url = await asyncio.to_thread(
            self.storage.presigner.generate_presigned_url,
            "put_object",
            Params={
                "Bucket": self.storage.bucket,
                "Key": key,
                "ContentType": content_type,
                "CacheControl": rules.IMMUTABLE_CACHE_CONTROL,
            },
            ExpiresIn=rules.UPLOAD_URL_SECONDS,
        )
        async with self.pool.connection() as conn:
            await store.insert_upload(
                conn, upload_id, owner, key, content_type, size,
                now + timedelta(seconds=rules.UPLOAD_TICKET_SECONDS),
            )  # fmt: skip
        return upload_pb2.Upload(
            upload_id=str(upload_id),
            upload_url=url,
            upload_headers=headers,
            expires_at=timestamp(now + timedelta(seconds=rules.UPLOAD_URL_SECONDS)),
        )

    # --- completing -----------------------------------------------------------------------

    async def CreateVideo(self, request, context):
        caller = parse_uuid(require_caller(context), "caller")
        upload_id = parse_uuid(request.upload_id, "upload_id")
        caption = rules.check_caption(request.caption)
        async with self.pool.connection() as conn:
            upload = await store.upload_by_id(conn, upload_id)
            if upload is None or upload.owner_id != caller:
                # another user's ticket is indistinguishable from none
                raise NotFound("upload", request.upload_id)
            if upload.state == "published":
                return await self._existing_video(conn, upload_id)
        if upload.state == "rejected":
            raise InvalidArgument(
                "upload_id", f"this upload was rejected ({upload.rejected_reason}); start a new one"
            )
        if upload.expires_at < datetime.now(UTC):
            raise NotFound("upload", f"{request.upload_id} (expired)")
        return await self._publish(upload, caption, await self._check_object(upload))

    async def _existing_video(self, conn: Any, upload_id: uuid.UUID) -> common_pb2.Video:
        video = await store.video_by_upload(conn, upload_id)
        if video is None or video.deleted_at is not None:
            raise NotFound("video for upload", str(upload_id))
        message = self.video_message(video)
        await self.counts.fill([message])
        return message

    async def _check_object(self, upload: store.UploadRow) -> Checked:
        """HEAD then probe the uploaded object; a bad object is deleted and the ticket rejected."""
        s = self.storage
        try:
            head = await asyncio.to_thread(
                s.client.head_object, Bucket=s.bucket, Key=upload.object_key
            )
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FailedPrecondition(
                    "upload_id: nothing has been uploaded yet; PUT the bytes to upload_url first"
                ) from None
            raise
        if head["ContentLength"] != upload.size_bytes:
            await self._reject(
                upload,
                f"{head['ContentLength']} bytes were uploaded"
                f" but {upload.size_bytes} were declared",
            )
        etag = head["ETag"]
        async with self.probe_slots:
            reader = S3RangeReader(s.client, s.bucket, upload.object_key, upload.size_bytes, etag)
            try:
                probe = await asyncio.to_thread(probe_video, reader, upload.content_type)
            except RejectedMedia as e:
                await self._reject(upload, str(e))
                raise AssertionError("unreachable") from None
        return Checked(probe, etag)

    async def _reject(self, upload: store.UploadRow, reason: str) -> None:
        """Deletes the object, marks the ticket rejected, and raises INVALID_ARGUMENT."""
        s = self.storage
        await asyncio.to_thread(s.client.delete_object, Bucket=s.bucket, Key=upload.object_key)
        async with self.pool.connection() as conn:
            await store.reject_upload(conn, upload.upload_id, reason)
        log.info("upload rejected", extra={"upload_id": str(upload.upload_id), "reason": reason})
        raise InvalidArgument("upload_id", reason)

    async def _publish(
        self, upload: store.UploadRow, caption: str, checked: Checked
    ) -> common_pb2.Video:
        s = self.storage
        probe = checked.probe
        thumb_key = rules.thumbnail_key(str(upload.upload_id))
        final_key = rules.published_key(str(upload.upload_id))
        try:
            # exactly the version that was probed, to a key no upload URL can write
            await asyncio.to_thread(
                s.client.copy_object,
                Bucket=s.bucket,
                Key=final_key,
                CopySource={"Bucket": s.bucket, "Key": upload.object_key},
                CopySourceIfMatch=checked.etag,
                MetadataDirective="COPY",
            )
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise FailedPrecondition(
                    "upload_id: the upload changed while it was being checked; complete it again"
                ) from None
            raise
        await asyncio.to_thread(
            s.client.put_object,
            Bucket=s.bucket,
            Key=thumb_key,
            Body=probe.thumbnail_jpeg,
            ContentType="image/jpeg",
            CacheControl=rules.IMMUTABLE_CACHE_CONTROL,
        )
        async with self.pool.connection() as conn, conn.transaction():
            video = await store.insert_video(
                conn, upload, caption, final_key, thumb_key,
                probe.duration_ms, probe.width, probe.height,
            )  # fmt: skip
            if video is None:  # a concurrent completion of the same upload won
                return await self._existing_video(conn, upload.upload_id)
            await store.mark_published(conn, upload.upload_id)
            await store.insert_transcode_job(conn, video.video_id)
            published = events_pb2.VideoPublished(
                video_id=str(video.video_id),
                creator_id=str(video.creator_id),
                created_at=timestamp(video.created_at),
            )
            await record_event(
                conn, new_event("video.published", str(video.video_id), video_published=published)
            )
        self.transcode_wanted.set()
        message = self.video_message(video)
        await self.cards.write([message])
        try:  # the upload copy has served its purpose; the sweeper is not needed for it
            await asyncio.to_thread(s.client.delete_object, Bucket=s.bucket, Key=upload.object_key)
        except botocore.exceptions.BotoCoreError as e:
            log.warning("upload object not deleted: %r", e)
        return message

    # --- streaming upload (internal callers) ----------------------------------------------

    async def UploadVideo(self, request_iterator, context):
        """Metadata first, then chunks of at most 1 MiB, streamed into a multipart upload; then
        the same checks and publication as CreateVideo."""
        caller = parse_uuid(require_caller(context), "caller")
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument("metadata", "the first message must carry the metadata")
        meta = first.metadata
        content_type = rules.check_content_type(meta.content_type)
        size = rules.check_size(meta.size_bytes)
        caption = rules.check_caption(meta.caption)
        upload_id = uuid.uuid4()
        key = rules.video_key(str(upload_id))
        expires = datetime.now(UTC) + timedelta(seconds=rules.UPLOAD_TICKET_SECONDS)
        async with self.pool.connection() as conn:
            await store.insert_upload(conn, upload_id, caller, key, content_type, size, expires)
            upload = await store.upload_by_id(conn, upload_id)
        assert upload is not None
        try:
            await self._stream_to_storage(upload, request_iterator)
        except BaseException as e:
            async with self.pool.connection() as conn:
                await store.reject_upload(conn, upload_id, f"the stream failed: {e}")
            raise
        return await self._publish(upload, caption, await self._check_object(upload))

    async def _stream_to_storage(self, upload: store.UploadRow, messages: Any) -> None:
        s = self.storage
        multipart = await asyncio.to_thread(
            s.client.create_multipart_upload,
            Bucket=s.bucket,
            Key=upload.object_key,
            ContentType=upload.content_type,
            CacheControl=rules.IMMUTABLE_CACHE_CONTROL,
        )
        target = {"Bucket": s.bucket, "Key": upload.object_key, "UploadId": multipart["UploadId"]}
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        received = 0

        async def flush() -> None:
            number = len(parts) + 1
            reply = await asyncio.to_thread(
                s.client.upload_part, PartNumber=number, Body=bytes(buffer), **target
            )
            parts.append({"PartNumber": number, "ETag": reply["ETag"]})
            buffer.clear()

        try:
            async for message in messages:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument("chunk", "only the first message carries metadata")
                if len(message.chunk) > rules.MAX_CHUNK_BYTES:
                    raise InvalidArgument("chunk", "must be at most 1 MiB per message")
                received += len(message.chunk)
                if received > upload.size_bytes:
                    raise InvalidArgument(
                        "chunk", f"more bytes than the declared size_bytes {upload.size_bytes}"
                    )
                buffer += message.chunk
                if len(buffer) >= rules.PART_BYTES:
                    await flush()
            if received != upload.size_bytes:
                raise InvalidArgument(
                    "size_bytes",
                    f"{received} bytes were sent but {upload.size_bytes} were declared",
                )
            if buffer or not parts:
                await flush()
            await asyncio.to_thread(
                s.client.complete_multipart_upload, MultipartUpload={"Parts": parts}, **target
            )
        except BaseException:
            await asyncio.to_thread(s.client.abort_multipart_upload, **target)
            raise

    # --- reads ----------------------------------------------------------------------------

    async def GetVideo(self, request, context):
        video_id = parse_uuid(request.video_id, "video_id")
        async with self.pool.connection() as conn:
            video = await store.video_by_id(conn, video_id)
        if video is None or video.deleted_at is not None:
            raise NotFound("video", request.video_id)
        message = self.video_message(video)
        await self.counts.fill([message])
        return message

    async def ListUserVideos(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        size = page_size(request.page_size)
        position = decode_token(request.page_token, f"videos:{user_id}")
        after = parse_uuid(position[0], "page_token") if position else None
        async with self.pool.connection() as conn:
            rows = await store.videos_by_creator(conn, user_id, after, size + 1)
        page, more = rows[:size], len(rows) > size
        token = encode_token(f"videos:{user_id}", [str(page[-1].video_id)]) if more else ""
        videos = [self.video_message(r) for r in page]
        await self.counts.fill(videos)
        return upload_pb2.ListUserVideosResponse(videos=videos, next_page_token=token)

    async def BatchGetVideos(self, request, context):
        if len(request.video_ids) > MAX_BATCH:
            raise InvalidArgument("video_ids", f"at most {MAX_BATCH} ids per call")
        ids = [parse_uuid(v, "video_ids") for v in request.video_ids]
        mask = _checked_read_mask(request)
        async with self.pool.connection() as conn:
            rows = await store.live_videos_by_ids(conn, ids)
        videos = [self.video_message(r) for r in rows]
        if mask is None:
            # hydrating callers come here for missing cards
            await self.cards.write(videos, background=True)
        if mask is None or any(path in VIDEO_FIELDS for path in mask.paths):
            await self.counts.fill(videos)
        if mask is not None:
            videos = [_pruned(v, mask) for v in videos]
        return upload_pb2.BatchGetVideosResponse(videos=videos)

    # --- delete ---------------------------------------------------------------------------

    async def DeleteVideo(self, request, context):
        caller = parse_uuid(require_caller(context), "caller")
        video_id = parse_uuid(request.video_id, "video_id")
        async with self.pool.connection() as conn, conn.transaction():
            video = await store.video_by_id(conn, video_id)
            if video is None or video.deleted_at is not None:
                raise NotFound("video", request.video_id)
            if video.creator_id != caller:
                raise PermissionDenied("only the video's creator can delete it")
            if await store.soft_delete_video(conn, video_id):
                deleted = events_pb2.VideoDeleted(
                    video_id=str(video_id), creator_id=str(video.creator_id)
                )
                await record_event(
                    conn, new_event("video.deleted", str(video_id), video_deleted=deleted)
                )
        await self.cards.delete(str(video_id))
        return empty_pb2.Empty()


def _checked_read_mask(request: upload_pb2.BatchGetVideosRequest) -> FieldMask | None:
    """The request's read mask, or None for all fields; INVALID_ARGUMENT for unknown fields."""
    if not request.HasField("read_mask") or not request.read_mask.paths:
        return None
    if not request.read_mask.IsValidForDescriptor(common_pb2.Video.DESCRIPTOR):
        raise InvalidArgument(
            "read_mask", f"names a field Video does not have: {', '.join(request.read_mask.paths)}"
        )
    return request.read_mask


def _pruned(video: common_pb2.Video, mask: FieldMask) -> common_pb2.Video:
    out = common_pb2.Video()
    mask.MergeMessage(video, out)
    return out
