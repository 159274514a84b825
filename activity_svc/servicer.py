"""What every part of the ActivityService servicer shares: its dependencies, and the checks and
messages several RPC groups use. The servicer is one class (gRPC serves one per service) put
together from one mixin per group of RPCs: accounts, follows, engagement, comments."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import grpc
from psycopg_pool import AsyncConnectionPool

from activity_svc import store
from activity_svc.credentials import Passwords, TokenIssuer
from activity_svc.repair import MirrorRepair
from activity_svc.sessions import Sessions
from activity_svc.signin_limit import SignInLimit
from activity_svc.videos import VideoDirectory, VideoRef
from mesh.auth import require_caller
from mesh.db import ReadRouter
from mesh.errors import InvalidArgument, NotFound
from mesh.pagination import decode_token
from mesh.proto import timestamp
from mesh.validation import parse_uuid
from tiktok.v1 import common_pb2

MAX_BATCH = 500


class ServicerBase:
    """The dependencies of every RPC group (set by ActivityService.__init__)."""

    pool: AsyncConnectionPool  # the primary
    reads: ReadRouter  # lists and bulk reads: the replica when it is current
    passwords: Passwords
    signin_limit: SignInLimit
    tokens: TokenIssuer
    sessions: Sessions
    videos: VideoDirectory  # UploadService, asked whether a video exists
    repair: MirrorRepair

    async def live_video(self, video_id: uuid.UUID) -> VideoRef:
        video = await self.videos.live(video_id)
        if video is None:
            raise NotFound("video", str(video_id))
        return video


def user_message(row: store.UserRow | store.UserView) -> common_pb2.User:
    user = common_pb2.User(
        user_id=str(row.user_id),
        handle=row.handle,
        display_name=row.display_name,
        created_at=timestamp(row.created_at),
    )
    if isinstance(row, store.UserView):
        user.follower_count = row.follower_count
        user.following_count = row.following_count
        user.video_count = row.video_count
        user.view_count = row.view_count
    return user


def seq_position(token: str, kind: str) -> int | None:
    """The keyset position (a seq) of a page token of list ``kind``; None for the first page."""
    position = decode_token(token, kind)
    if position is None:
        return None
    if len(position) != 1 or not isinstance(position[0], int) or isinstance(position[0], bool):
        raise InvalidArgument("page_token", "is not a token this list returned")
    return position[0]


def caller_uuid(context: grpc.aio.ServicerContext) -> uuid.UUID:
    return parse_uuid(require_caller(context), "caller")


def batch_ids(values: Sequence[str], field: str) -> list[uuid.UUID]:
    if len(values) > MAX_BATCH:
        raise InvalidArgument(field, f"at most {MAX_BATCH} ids per call, got {len(values)}")
    return [parse_uuid(v, field) for v in values]
