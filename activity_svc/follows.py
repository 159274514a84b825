"""ActivityService: following and unfollowing, and the follow lists."""

from __future__ import annotations

import uuid

import grpc
import psycopg.errors
from google.protobuf import empty_pb2

from activity_svc import store
from activity_svc.servicer import ServicerBase, caller_uuid, seq_position, user_message
from mesh.errors import InvalidArgument, NotFound
from mesh.outbox import new_event
from mesh.pagination import encode_token
from mesh.proto import timestamp
from mesh.validation import page_size, parse_uuid
from tiktok.v1 import activity_pb2, common_pb2, events_pb2


class FollowRpcs(ServicerBase):
    async def CreateFollow(
        self, request: activity_pb2.CreateFollowRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.Follow:
        caller = caller_uuid(context)
        followee = parse_uuid(request.followee_id, "followee_id")
        if followee == caller:
            raise InvalidArgument("followee_id", "is the caller; a user cannot follow themselves")
        event = _follow_event("follow.created", caller, followee)
        async with self.pool.connection() as conn:
            try:
                row, _ = await store.add_pair(conn, "follows", caller, followee, event)
            except psycopg.errors.ForeignKeyViolation:
                raise NotFound("user", request.followee_id) from None
        return activity_pb2.Follow(
            follower_id=str(row.actor_id),
            followee_id=str(row.target_id),
            created_at=timestamp(row.created_at),
        )

    async def DeleteFollow(
        self, request: activity_pb2.DeleteFollowRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        caller = caller_uuid(context)
        followee = parse_uuid(request.followee_id, "followee_id")
        event = _follow_event("follow.deleted", caller, followee)
        async with self.pool.connection() as conn:
            await store.remove_pair(conn, "follows", caller, followee, event)
        return empty_pb2.Empty()

    async def ListFollowers(
        self, request: activity_pb2.ListFollowersRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.ListFollowersResponse:
        users, token = await self._follow_list("followers", request)
        return activity_pb2.ListFollowersResponse(users=users, next_page_token=token)

    async def ListFollowing(
        self, request: activity_pb2.ListFollowingRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.ListFollowingResponse:
        users, token = await self._follow_list("following", request)
        return activity_pb2.ListFollowingResponse(users=users, next_page_token=token)

    async def _follow_list(self, side: store.Side, request) -> tuple[list[common_pb2.User], str]:
        user_id = parse_uuid(request.user_id, "user_id")
        size = page_size(request.page_size)
        kind = f"{side}:{user_id}"
        after = seq_position(request.page_token, kind)
        async with self.reads.connection() as conn:
            if not await store.user_exists(conn, user_id):
                raise NotFound("user", request.user_id)
            rows = await store.follow_page(conn, side, user_id, after, size + 1)
        page = rows[:size]
        token = encode_token(kind, [page[-1][0]]) if len(rows) > size else ""
        return [user_message(user) for _, user in page], token


def _follow_event(event_type: str, follower: uuid.UUID, followee: uuid.UUID) -> events_pb2.Event:
    change = events_pb2.FollowChanged(follower_id=str(follower), followee_id=str(followee))
    return new_event(event_type, str(follower), follow=change)
