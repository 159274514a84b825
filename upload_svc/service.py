"""UploadService servicer: upload tickets, completing uploads into videos, reading and deleting.

Video bytes never pass through this process on the REST path: clients PUT them to object
storage with a presigned URL; this service checks, probes (ranged reads) and thumbnails them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import empty_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.auth import require_caller
from mesh.db import ReadRouter
from mesh.errors import InvalidArgument, NotFound, PermissionDenied
from mesh.outbox import new_event, record_event
from mesh.pagination import decode_token, encode_token
from mesh.proto import timestamp
from mesh.validation import page_size, parse_uuid
from readmodels import objects
from readmodels.counters import VIDEO_FIELDS
from tiktok.v1 import common_pb2, events_pb2, upload_pb2, upload_pb2_grpc
from upload_svc import rules, store
from upload_svc.cards import video_message
from upload_svc.publishing import Publisher

log = logging.getLogger("upload_svc")

MAX_BATCH = 500


class UploadService(upload_pb2_grpc.UploadServiceServicer):
    def __init__(self, publisher: Publisher, reads: ReadRouter) -> None:
        # the servicer reads and deletes through the publisher's dependencies; publishing is its job
        self.publisher = publisher
        self.pool = publisher.pool
        self.reads = reads  # lists and bulk reads: the replica when it is current
        self.storage = publisher.storage
        self.cards = publisher.cards
        self.counts = publisher.counts

    def video_message(self, row: store.VideoRow) -> common_pb2.Video:
        return video_message(row, self.storage)

    # --- tickets --------------------------------------------------------------------------

    async def CreateUpload(
        self, request: upload_pb2.CreateUploadRequest, context: grpc.aio.ServicerContext
    ) -> upload_pb2.Upload:
        owner = parse_uuid(require_caller(context), "caller")
        content_type = rules.check_content_type(request.content_type)
        size = rules.check_size(request.size_bytes)
        upload_id = uuid.uuid4()  # random: media keys are public, so they must not be guessable
        key = objects.video_key(str(upload_id))
        now = datetime.now(UTC)
        headers = {"Content-Type": content_type, "Cache-Control": rules.IMMUTABLE_CACHE_CONTROL}
        url = await asyncio.to_thread(
            self.storage.presigned_put, key, content_type, rules.UPLOAD_URL_SECONDS
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

    async def CreateVideo(
        self, request: upload_pb2.CreateVideoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Video:
        caller = parse_uuid(require_caller(context), "caller")
        upload_id = parse_uuid(request.upload_id, "upload_id")
        caption = rules.check_caption(request.caption)
        async with self.pool.connection() as conn:
            upload = await store.upload_by_id(conn, upload_id)
            if upload is None or upload.owner_id != caller:
                # another user's ticket is indistinguishable from none
                raise NotFound("upload", request.upload_id)
            if upload.state == "published":
                return await self.publisher.existing_video(conn, upload_id)
        if upload.state == "rejected":
            raise InvalidArgument(
                "upload_id", f"this upload was rejected ({upload.rejected_reason}); start a new one"
            )
        if upload.expires_at < datetime.now(UTC):
            raise NotFound("upload", f"{request.upload_id} (expired)")
        return await self.publisher.complete(upload, caption)

    # --- streaming upload (internal callers) ----------------------------------------------

    async def UploadVideo(
        self,
        request_iterator: AsyncIterator[upload_pb2.UploadVideoRequest],
        context: grpc.aio.ServicerContext,
    ) -> common_pb2.Video:
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
        key = objects.video_key(str(upload_id))
        expires = datetime.now(UTC) + timedelta(seconds=rules.UPLOAD_TICKET_SECONDS)
        async with self.pool.connection() as conn:
            await store.insert_upload(conn, upload_id, caller, key, content_type, size, expires)
            upload = await store.upload_by_id(conn, upload_id)
        assert upload is not None
        try:
            await self.publisher.stream_to_storage(upload, request_iterator)
        except BaseException as e:
            async with self.pool.connection() as conn:
                await store.reject_upload(conn, upload_id, f"the stream failed: {e}")
            raise
        return await self.publisher.complete(upload, caption)

    # --- reads ----------------------------------------------------------------------------

    async def GetVideo(
        self, request: upload_pb2.GetVideoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Video:
        video_id = parse_uuid(request.video_id, "video_id")
        video = await self.reads.primary_first(lambda conn: store.video_by_id(conn, video_id))
        if video is None or video.deleted_at is not None:
            raise NotFound("video", request.video_id)
        message = self.video_message(video)
        await self.counts.fill([message])
        return message

    async def ListUserVideos(
        self, request: upload_pb2.ListUserVideosRequest, context: grpc.aio.ServicerContext
    ) -> upload_pb2.ListUserVideosResponse:
        user_id = parse_uuid(request.user_id, "user_id")
        size = page_size(request.page_size)
        position = decode_token(request.page_token, f"videos:{user_id}")
        after = parse_uuid(position[0], "page_token") if position else None
        async with self.reads.connection() as conn:
            rows = await store.videos_by_creator(conn, user_id, after, size + 1)
        page, more = rows[:size], len(rows) > size
        token = encode_token(f"videos:{user_id}", [str(page[-1].video_id)]) if more else ""
        videos = [self.video_message(r) for r in page]
        await self.counts.fill(videos)
        return upload_pb2.ListUserVideosResponse(videos=videos, next_page_token=token)

    async def BatchGetVideos(
        self, request: upload_pb2.BatchGetVideosRequest, context: grpc.aio.ServicerContext
    ) -> upload_pb2.BatchGetVideosResponse:
        if len(request.video_ids) > MAX_BATCH:
            raise InvalidArgument("video_ids", f"at most {MAX_BATCH} ids per call")
        ids = [parse_uuid(v, "video_ids") for v in request.video_ids]
        mask = _checked_read_mask(request)
        async with self.reads.reading() as (conn, current):
            rows = await store.live_videos_by_ids(conn, ids)
        videos = [self.video_message(r) for r in rows]
        if mask is None and current:
            # hydrating callers come here for missing cards (never cached from a replica that
            # may be behind: a video deleted meanwhile would come back for a week)
            await self.cards.write(videos, background=True)
        if mask is None or any(path in VIDEO_FIELDS for path in mask.paths):
            await self.counts.fill(videos)
        if mask is not None:
            videos = [_pruned(v, mask) for v in videos]
        return upload_pb2.BatchGetVideosResponse(videos=videos)

    # --- delete ---------------------------------------------------------------------------

    async def DeleteVideo(
        self, request: upload_pb2.DeleteVideoRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
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
