"""ActivityService: likes and favorites, the lists of them, and the counts of videos."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import empty_pb2

from activity_svc import store
from activity_svc.servicer import ServicerBase, batch_ids, caller_uuid, seq_position
from mesh.errors import NotFound, PermissionDenied
from mesh.outbox import new_event
from mesh.pagination import encode_token
from mesh.proto import timestamp
from mesh.validation import page_size, parse_uuid
from readmodels.counters import VIDEO_FIELDS, Counts, set_video_counts
from tiktok.v1 import activity_pb2, common_pb2, events_pb2

# rounds of reading a liked/favorite list to fill a page when some videos were deleted
FILL_ROUNDS = 4


class EngagementRpcs(ServicerBase):
    async def CreateLike(
        self, request: activity_pb2.CreateLikeRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.Like:
        row = await self._add_video_pair("likes", request.video_id, context)
        return activity_pb2.Like(**_pair_fields(row))

    async def DeleteLike(
        self, request: activity_pb2.DeleteLikeRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._remove_video_pair("likes", request.video_id, context)
        return empty_pb2.Empty()

    async def CreateFavorite(
        self, request: activity_pb2.CreateFavoriteRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.Favorite:
        row = await self._add_video_pair("favorites", request.video_id, context)
        return activity_pb2.Favorite(**_pair_fields(row))

    async def DeleteFavorite(
        self, request: activity_pb2.DeleteFavoriteRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._remove_video_pair("favorites", request.video_id, context)
        return empty_pb2.Empty()

    async def _add_video_pair(
        self, relation: store.VideoRelation, video_id_text: str, context
    ) -> store.PairRow:
        caller = caller_uuid(context)
        video_id = parse_uuid(video_id_text, "video_id")
        await self.live_video(video_id)
        event = _video_pair_event(relation, "created", caller, video_id)
        async with self.pool.connection() as conn:
            row, _ = await store.add_pair(conn, relation, caller, video_id, event)
        return row

    async def _remove_video_pair(
        self, relation: store.VideoRelation, video_id_text: str, context
    ) -> None:
        caller = caller_uuid(context)
        video_id = parse_uuid(video_id_text, "video_id")
        event = _video_pair_event(relation, "deleted", caller, video_id)
        async with self.pool.connection() as conn:
            await store.remove_pair(conn, relation, caller, video_id, event)

    async def ListLikedVideos(
        self, request: activity_pb2.ListLikedVideosRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.ListLikedVideosResponse:
        user_id = parse_uuid(request.user_id, "user_id")
        async with self.reads.connection() as conn:
            if not await store.user_exists(conn, user_id):
                raise NotFound("user", request.user_id)
        videos, token = await self._video_list("likes", user_id, request)
        return activity_pb2.ListLikedVideosResponse(videos=videos, next_page_token=token)

    async def ListFavoriteVideos(
        self, request: activity_pb2.ListFavoriteVideosRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.ListFavoriteVideosResponse:
        caller = caller_uuid(context)
        user_id = parse_uuid(request.user_id, "user_id")
        if user_id != caller:
            raise PermissionDenied("favorites are private: only their owner can list them")
        videos, token = await self._video_list("favorites", user_id, request)
        return activity_pb2.ListFavoriteVideosResponse(videos=videos, next_page_token=token)

    async def _video_list(
        self, relation: store.VideoRelation, user_id: uuid.UUID, request
    ) -> tuple[list[common_pb2.Video], str]:
        """A page of live videos of a user's likes or favorites, counts filled in. Deleted
        videos are skipped; reading goes on (a few rounds) so the page still fills up."""
        size = page_size(request.page_size)
        kind = f"{relation}:{user_id}"
        cursor = seq_position(request.page_token, kind)
        collected: list[common_pb2.Video] = []
        more = False
        for _ in range(FILL_ROUNDS):
            need = size - len(collected)
            async with self.reads.connection() as conn:
                rows = await store.video_pair_page(conn, relation, user_id, cursor, need + 1)
            chunk, more = rows[:need], len(rows) > need
            live = await self.videos.videos([video_id for _, video_id in chunk])
            collected += [live[str(v)] for _, v in chunk if str(v) in live]
            if chunk:
                cursor = chunk[-1][0]
            if not more or len(collected) >= size:
                break
        await self._fill_video_counts(collected)
        return collected, encode_token(kind, [cursor]) if more else ""

    async def _fill_video_counts(self, videos: list[common_pb2.Video]) -> None:
        async with self.reads.connection() as conn:
            rows = await store.counters_by_ids(
                conn, "video_counters", [uuid.UUID(v.video_id) for v in videos]
            )
        counts = {str(r.entity_id): r.counts for r in rows}
        for video in videos:
            found = counts.get(video.video_id)
            if found:
                set_video_counts(video, found)

    async def BatchGetVideoCounts(
        self, request: activity_pb2.BatchGetVideoCountsRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.BatchGetVideoCountsResponse:
        ids = list(dict.fromkeys(batch_ids(request.video_ids, "video_ids")))
        async with self.reads.reading() as (conn, current):
            rows = await store.counters_by_ids(conn, "video_counters", ids)
        found = {r.entity_id: r for r in rows}
        # a video never counted yet is mirrored as zeros at version 0: the first real count wins
        zeros = (0,) * len(VIDEO_FIELDS)
        entries = [found.get(i) or store.CounterRow(i, zeros, 0) for i in ids]
        mirrored = [
            Counts(str(r.entity_id), r.counts[: len(VIDEO_FIELDS)], r.version) for r in entries
        ]
        # read repair in the background: a hung Redis must not slow this answer down (callers
        # come here precisely when Redis failed them); never from a replica that may be behind
        if current:
            self.repair.videos(mirrored)
        return activity_pb2.BatchGetVideoCountsResponse(
            counts=[
                activity_pb2.VideoCounts(
                    video_id=c.entity_id,
                    **{name: max(0, n) for name, n in zip(VIDEO_FIELDS, c.values, strict=True)},
                )
                for c in mirrored
            ]
        )


def _pair_fields(row: store.PairRow) -> dict[str, Any]:
    """The fields a Like and a Favorite share: who, which video, when."""
    return {
        "user_id": str(row.actor_id),
        "video_id": str(row.target_id),
        "created_at": timestamp(row.created_at),
    }


def _video_pair_event(
    relation: store.VideoRelation, verb: str, user_id: uuid.UUID, video_id: uuid.UUID
) -> events_pb2.Event:
    """The event a like or favorite change records (only if the change happens)."""
    ids = {"user_id": str(user_id), "video_id": str(video_id)}
    if relation == "likes":
        return new_event(f"like.{verb}", str(video_id), like=events_pb2.LikeChanged(**ids))
    return new_event(f"favorite.{verb}", str(video_id), favorite=events_pb2.FavoriteChanged(**ids))
