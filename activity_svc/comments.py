"""ActivityService: comments on videos."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2
from psycopg import AsyncConnection

from activity_svc import rules, store
from activity_svc.servicer import ServicerBase, caller_uuid
from mesh.errors import NotFound, PermissionDenied
from mesh.outbox import new_event, record_event
from mesh.pagination import decode_token, encode_token
from mesh.proto import timestamp
from mesh.validation import page_size, parse_uuid
from tiktok.v1 import activity_pb2, events_pb2


def comment_message(row: store.CommentRow) -> activity_pb2.Comment:
    return activity_pb2.Comment(
        comment_id=str(row.comment_id),
        video_id=str(row.video_id),
        author_id=str(row.author_id),
        text=row.text,
        created_at=timestamp(row.created_at),
    )


class CommentRpcs(ServicerBase):
    async def CreateComment(
        self, request: activity_pb2.CreateCommentRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.Comment:
        caller = caller_uuid(context)
        video_id = parse_uuid(request.video_id, "video_id")
        text = rules.check_comment_text(request.text)
        await self.live_video(video_id)
        async with self.pool.connection() as conn, conn.transaction():
            row = await store.insert_comment(conn, video_id, caller, text)
            await _record_comment_event(conn, "comment.created", row)
        return comment_message(row)

    async def ListComments(
        self, request: activity_pb2.ListCommentsRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.ListCommentsResponse:
        video_id = parse_uuid(request.video_id, "video_id")
        size = page_size(request.page_size)
        kind = f"comments:{video_id}"
        position = decode_token(request.page_token, kind)
        after = parse_uuid(str(position[0]), "page_token") if position else None
        await self.live_video(video_id)
        async with self.reads.connection() as conn:
            rows = await store.comments_page(conn, video_id, after, size + 1)
        page = rows[:size]
        token = encode_token(kind, [str(page[-1].comment_id)]) if len(rows) > size else ""
        return activity_pb2.ListCommentsResponse(
            comments=[comment_message(r) for r in page], next_page_token=token
        )

    async def DeleteComment(
        self, request: activity_pb2.DeleteCommentRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        caller = caller_uuid(context)
        video_id = parse_uuid(request.video_id, "video_id")
        comment_id = parse_uuid(request.comment_id, "comment_id")
        async with self.pool.connection() as conn:
            comment = await store.comment_on_video(conn, video_id, comment_id)
        if comment is None:
            raise NotFound("comment", request.comment_id)
        if comment.author_id != caller:
            video = await self.videos.live(video_id)
            if video is None or video.creator_id != str(caller):
                raise PermissionDenied(
                    "only the comment's author or the video's creator can delete it"
                )
        async with self.pool.connection() as conn, conn.transaction():
            if not await store.delete_comment(conn, comment_id):
                raise NotFound("comment", request.comment_id)  # deleted meanwhile
            await _record_comment_event(conn, "comment.deleted", comment)
        return empty_pb2.Empty()


async def _record_comment_event(
    conn: AsyncConnection, event_type: str, row: store.CommentRow
) -> None:
    change = events_pb2.CommentChanged(
        comment_id=str(row.comment_id), video_id=str(row.video_id), author_id=str(row.author_id)
    )
    await record_event(conn, new_event(event_type, str(row.video_id), comment=change))
