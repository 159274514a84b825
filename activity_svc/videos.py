"""What activity_svc needs to know about videos, asked of UploadService (which owns them) over
the internal listener: whether a video exists and who made it, and whole videos for lists.

Single lookups from concurrent requests are coalesced into BatchGetVideos calls, so a burst of
likes on one video costs a few calls, not one per like, and an answer never predates the request
(a video deleted before the like was sent is NOT_FOUND, not served from a cache).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from google.protobuf.field_mask_pb2 import FieldMask

from mesh.batching import BatchLoader
from readmodels.counters import VIDEO_FIELDS
from tiktok.v1 import common_pb2, upload_pb2, upload_pb2_grpc

# everything but the counts, which activity_svc owns and fills in itself
_WITHOUT_COUNTS = FieldMask(
    paths=[f.name for f in common_pb2.Video.DESCRIPTOR.fields if f.name not in VIDEO_FIELDS]
)
_REF = FieldMask(paths=["video_id", "creator_id"])
_PLAYED = FieldMask(paths=["video_id", "creator_id", "duration_ms"])


@dataclass(frozen=True)
class VideoRef:
    """A live (published, not deleted) video, as much as permission checks need."""

    video_id: str
    creator_id: str


@dataclass(frozen=True)
class PlayedVideo:
    """A live video as counting a play of it needs it."""

    creator_id: str
    duration_ms: int


class VideoDirectory:
    def __init__(self, upload: upload_pb2_grpc.UploadServiceAsyncStub, *, timeout: float = 2.0):
        self.upload = upload
        self.timeout = timeout
        self._refs: BatchLoader[str, VideoRef] = BatchLoader(self._fetch_refs, max_in_flight=1)
        self._played: BatchLoader[str, PlayedVideo] = BatchLoader(
            self._fetch_played, max_in_flight=1
        )

    async def live(self, video_id: uuid.UUID) -> VideoRef | None:
        """The video if it is published and not deleted, else None."""
        return await self._refs.load(str(video_id))

    async def played(self, video_ids: Collection[uuid.UUID]) -> dict[str, PlayedVideo]:
        """What counting a play needs of each live video among ``video_ids``, by id;
        coalesced across concurrent calls like ``live``."""
        ids = [str(v) for v in video_ids]
        found = await asyncio.gather(*(self._played.load(i) for i in ids))
        return {i: v for i, v in zip(ids, found, strict=True) if v is not None}

    async def _fetch_played(self, video_ids: list[str]) -> dict[str, PlayedVideo]:
        reply = await self.upload.BatchGetVideos(
            upload_pb2.BatchGetVideosRequest(video_ids=video_ids, read_mask=_PLAYED),
            timeout=self.timeout,
        )
        return {v.video_id: PlayedVideo(v.creator_id, v.duration_ms) for v in reply.videos}

    async def _fetch_refs(self, video_ids: list[str]) -> dict[str, VideoRef]:
        reply = await self.upload.BatchGetVideos(
            upload_pb2.BatchGetVideosRequest(video_ids=video_ids, read_mask=_REF),
            timeout=self.timeout,
        )
        return {v.video_id: VideoRef(v.video_id, v.creator_id) for v in reply.videos}

    async def videos(self, video_ids: Sequence[uuid.UUID]) -> dict[str, common_pb2.Video]:
        """The live videos among ``video_ids`` (at most 500), by id, counts not filled in."""
        if not video_ids:
            return {}
        reply = await self.upload.BatchGetVideos(
            upload_pb2.BatchGetVideosRequest(
                video_ids=[str(v) for v in video_ids], read_mask=_WITHOUT_COUNTS
            ),
            timeout=self.timeout,
        )
        return {v.video_id: v for v in reply.videos}
