"""ActivityService servicer: validate the request, call the store, build the reply.

Writes that change state record their event in the same transaction; counters are not touched
here (the counter consumer applies the events). Reads of the builder's id lists go to the read
replica; everything a user just wrote and reads back goes to the primary.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import psycopg.errors
from google.protobuf import empty_pb2
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from activity_svc import rules, store
from activity_svc.credentials import Passwords, TokenIssuer
from activity_svc.videos import VideoDirectory, VideoRef
from mesh.auth import require_caller
from mesh.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from mesh.outbox import new_event, record_event
from mesh.pagination import decode_token, encode_token
from mesh.proto import timestamp
from mesh.validation import page_size, parse_uuid
from readmodels.counters import CounterMirror, Counts
from tiktok.v1 import activity_pb2, activity_pb2_grpc, common_pb2, events_pb2

log = logging.getLogger("activity_svc")

WRONG_CREDENTIALS = "handle or password is wrong"
MAX_BATCH = 500
ID_PAGE_DEFAULT, ID_PAGE_MAX = 1000, 10_000
RECENT_LIKES_DEFAULT, RECENT_LIKES_MAX = 100, 1000
# rounds of reading a liked/favorite list to fill a page when some videos were deleted
FILL_ROUNDS = 4
MAX_REPAIRS = 100  # mirror repairs in flight at once


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
    return user


def comment_message(row: store.CommentRow) -> activity_pb2.Comment:
    return activity_pb2.Comment(
        comment_id=str(row.comment_id),
        video_id=str(row.video_id),
        author_id=str(row.author_id),
        text=row.text,
        created_at=timestamp(row.created_at),
    )


def _seq_position(token: str, kind: str) -> int | None:
    """The keyset position (a seq) of a page token of list ``kind``; None for the first page."""
    position = decode_token(token, kind)
    if position is None:
        return None
    if len(position) != 1 or not isinstance(position[0], int) or isinstance(position[0], bool):
        raise InvalidArgument("page_token", "is not a token this list returned")
    return position[0]


class ActivityService(activity_pb2_grpc.ActivityServiceServicer):
    def __init__(
        self,
        pool: AsyncConnectionPool,
        replica: AsyncConnectionPool,
        passwords: Passwords,
        tokens: TokenIssuer,
        videos: VideoDirectory,
        mirror: CounterMirror,
    ) -> None:
        self.pool = pool
        self.replica = replica
        self.passwords = passwords
        self.tokens = tokens
        self.videos = videos
        self.mirror = mirror
        self._repairs: set[asyncio.Task[None]] = set()

    # --- accounts ---------------------------------------------------------------------------

    def _session(self, row: store.UserRow) -> activity_pb2.Session:
        token = self.tokens.issue(str(row.user_id))
        return activity_pb2.Session(
            user=user_message(row),
            access_token=token.token,
            expires_at=timestamp(token.expires_at),
        )

    async def CreateUser(self, request, context):
        handle = rules.check_handle(request.handle)
        password = rules.check_password(request.password)
        display_name = rules.check_display_name(request.display_name, handle)
        password_hash = await self.passwords.hash(password)
        async with self.pool.connection() as conn:
            row = await store.insert_user(conn, handle, display_name, password_hash)
        if row is None:
            raise AlreadyExists(f"handle {handle!r} is already taken")
        log.info("user created", extra={"new_user_id": str(row.user_id)})
        return self._session(row)

    async def CreateSession(self, request, context):
        # Malformed input is still a client mistake worth naming; only the outcome of a
        # well-formed attempt is kept vague.
        rules.check_handle(request.handle)
        if not request.password:
            rules.check_password(request.password)
        async with self.pool.connection() as conn:
            row = await store.user_by_handle(conn, request.handle)
        ok = await self.passwords.verify(row.password_hash if row else None, request.password)
        if row is None or not ok:
            raise Unauthenticated(WRONG_CREDENTIALS)
        if self.passwords.needs_rehash(row.password_hash):
            new_hash = await self.passwords.hash(request.password)
            async with self.pool.connection() as conn:
                await store.update_password_hash(conn, row.user_id, new_hash)
        return self._session(row)

    async def GetUser(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        async with self.pool.connection() as conn:
            rows = await store.user_views(conn, [user_id])
        if not rows:
            raise NotFound("user", request.user_id)
        return user_message(rows[0])

    async def BatchGetUsers(self, request, context):
        ids = _batch_ids(request.user_ids, "user_ids")
        async with self.pool.connection() as conn:
            rows = await store.user_views(conn, ids)
        return activity_pb2.BatchGetUsersResponse(users=[user_message(r) for r in rows])

    # --- follows ----------------------------------------------------------------------------

    async def CreateFollow(self, request, context):
        caller = _caller(context)
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
            follower_id=str(row.a), followee_id=str(row.b), created_at=timestamp(row.created_at)
        )

    async def DeleteFollow(self, request, context):
        caller = _caller(context)
        followee = parse_uuid(request.followee_id, "followee_id")
        event = _follow_event("follow.deleted", caller, followee)
        async with self.pool.connection() as conn:
            await store.remove_pair(conn, "follows", caller, followee, event)
        return empty_pb2.Empty()

    async def ListFollowers(self, request, context):
        users, token = await self._follow_list("followers", request)
        return activity_pb2.ListFollowersResponse(users=users, next_page_token=token)

    async def ListFollowing(self, request, context):
        users, token = await self._follow_list("following", request)
        return activity_pb2.ListFollowingResponse(users=users, next_page_token=token)

    async def _follow_list(self, side: store.Side, request) -> tuple[list[common_pb2.User], str]:
        user_id = parse_uuid(request.user_id, "user_id")
        size = page_size(request.page_size)
        kind = f"{side}:{user_id}"
        after = _seq_position(request.page_token, kind)
        async with self.pool.connection() as conn:
            if not await store.user_exists(conn, user_id):
                raise NotFound("user", request.user_id)
            rows = await store.follow_page(conn, side, user_id, after, size + 1)
        page = rows[:size]
        token = encode_token(kind, [page[-1][0]]) if len(rows) > size else ""
        return [user_message(user) for _, user in page], token

    async def ListFollowerIds(self, request, context):
        ids, token = await self._follow_ids("followers", request)
        return activity_pb2.ListFollowerIdsResponse(user_ids=ids, next_page_token=token)

    async def ListFolloweeIds(self, request, context):
        ids, token = await self._follow_ids("following", request)
        return activity_pb2.ListFolloweeIdsResponse(user_ids=ids, next_page_token=token)

    async def _follow_ids(self, side: store.Side, request) -> tuple[list[str], str]:
        user_id = parse_uuid(request.user_id, "user_id")
        size = page_size(request.page_size, ID_PAGE_DEFAULT, ID_PAGE_MAX)
        kind = f"{side}-ids:{user_id}"
        after = _seq_position(request.page_token, kind)
        async with self.replica.connection() as conn:
            rows = await store.follow_ids_page(conn, side, user_id, after, size + 1)
        page = rows[:size]
        token = encode_token(kind, [page[-1][0]]) if len(rows) > size else ""
        return [str(other) for _, other in page], token

    # --- likes and favorites ----------------------------------------------------------------

    async def CreateLike(self, request, context):
        row = await self._add_video_pair("likes", request.video_id, context)
        return activity_pb2.Like(
            user_id=str(row.a), video_id=str(row.b), created_at=timestamp(row.created_at)
        )

    async def DeleteLike(self, request, context):
        await self._remove_video_pair("likes", request.video_id, context)
        return empty_pb2.Empty()

    async def CreateFavorite(self, request, context):
        row = await self._add_video_pair("favorites", request.video_id, context)
        return activity_pb2.Favorite(
            user_id=str(row.a), video_id=str(row.b), created_at=timestamp(row.created_at)
        )

    async def DeleteFavorite(self, request, context):
        await self._remove_video_pair("favorites", request.video_id, context)
        return empty_pb2.Empty()

    async def _add_video_pair(
        self, relation: store.VideoRelation, video_id_text: str, context
    ) -> store.PairRow:
        caller = _caller(context)
        video_id = parse_uuid(video_id_text, "video_id")
        await self._live_video(video_id)
        event = _video_pair_event(relation, "created", caller, video_id)
        async with self.pool.connection() as conn:
            row, _ = await store.add_pair(conn, relation, caller, video_id, event)
        return row

    async def _remove_video_pair(
        self, relation: store.VideoRelation, video_id_text: str, context
    ) -> None:
        caller = _caller(context)
        video_id = parse_uuid(video_id_text, "video_id")
        event = _video_pair_event(relation, "deleted", caller, video_id)
        async with self.pool.connection() as conn:
            await store.remove_pair(conn, relation, caller, video_id, event)

    async def ListLikedVideos(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        async with self.pool.connection() as conn:
            if not await store.user_exists(conn, user_id):
                raise NotFound("user", request.user_id)
        videos, token = await self._video_list("likes", user_id, request)
        return activity_pb2.ListLikedVideosResponse(videos=videos, next_page_token=token)

    async def ListFavoriteVideos(self, request, context):
        caller = _caller(context)
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
        cursor = _seq_position(request.page_token, kind)
        collected: list[common_pb2.Video] = []
        more = False
        for _ in range(FILL_ROUNDS):
            need = size - len(collected)
            async with self.pool.connection() as conn:
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
        async with self.pool.connection() as conn:
            rows = await store.counters_by_ids(
                conn, "video_counters", [uuid.UUID(v.video_id) for v in videos]
            )
        counts = {str(r.entity_id): r.counts for r in rows}
        for video in videos:
            found = counts.get(video.video_id)
            if found:
                video.like_count, video.comment_count, video.favorite_count = (
                    max(0, n) for n in found
                )

    async def ListRecentLikes(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        if not 0 <= request.limit <= RECENT_LIKES_MAX:
            raise InvalidArgument("limit", f"must be between 1 and {RECENT_LIKES_MAX}")
        limit = request.limit or RECENT_LIKES_DEFAULT
        async with self.replica.connection() as conn:
            rows = await store.video_pair_page(conn, "likes", user_id, None, limit)
        return activity_pb2.ListRecentLikesResponse(video_ids=[str(v) for _, v in rows])

    async def BatchGetVideoCounts(self, request, context):
        ids = list(dict.fromkeys(_batch_ids(request.video_ids, "video_ids")))
        async with self.pool.connection() as conn:
            rows = await store.counters_by_ids(conn, "video_counters", ids)
        found = {r.entity_id: r for r in rows}
        # a video never counted yet is mirrored as zeros at version 0: the first real count wins
        entries = [found.get(i) or store.CounterRow(i, (0, 0, 0), 0) for i in ids]
        # read repair in the background: a hung Redis must not slow this answer down (callers
        # come here precisely when Redis failed them)
        self._repair(videos=[Counts(str(r.entity_id), r.counts, r.version) for r in entries])
        return activity_pb2.BatchGetVideoCountsResponse(
            counts=[
                activity_pb2.VideoCounts(
                    video_id=str(r.entity_id),
                    like_count=max(0, r.counts[0]),
                    comment_count=max(0, r.counts[1]),
                    favorite_count=max(0, r.counts[2]),
                )
                for r in entries
            ]
        )

    def _repair(self, videos: list[Counts]) -> None:
        if len(self._repairs) >= MAX_REPAIRS:  # Redis is slow or down: skip, the next read asks
            return

        async def write() -> None:
            try:
                await self.mirror.write(videos=videos)
            except Exception as e:  # noqa: BLE001 - read repair is best effort
                log.warning("counter mirror not repaired: %r", e)

        task = asyncio.create_task(write())
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    # --- comments ---------------------------------------------------------------------------

    async def CreateComment(self, request, context):
        caller = _caller(context)
        video_id = parse_uuid(request.video_id, "video_id")
        text = rules.check_comment_text(request.text)
        await self._live_video(video_id)
        async with self.pool.connection() as conn, conn.transaction():
            row = await store.insert_comment(conn, video_id, caller, text)
            await _record_comment_event(conn, "comment.created", row)
        return comment_message(row)

    async def ListComments(self, request, context):
        video_id = parse_uuid(request.video_id, "video_id")
        size = page_size(request.page_size)
        kind = f"comments:{video_id}"
        position = decode_token(request.page_token, kind)
        after = parse_uuid(str(position[0]), "page_token") if position else None
        await self._live_video(video_id)
        async with self.pool.connection() as conn:
            rows = await store.comments_page(conn, video_id, after, size + 1)
        page = rows[:size]
        token = encode_token(kind, [str(page[-1].comment_id)]) if len(rows) > size else ""
        return activity_pb2.ListCommentsResponse(
            comments=[comment_message(r) for r in page], next_page_token=token
        )

    async def DeleteComment(self, request, context):
        caller = _caller(context)
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

    # --- shared -----------------------------------------------------------------------------

    async def _live_video(self, video_id: uuid.UUID) -> VideoRef:
        video = await self.videos.live(video_id)
        if video is None:
            raise NotFound("video", str(video_id))
        return video


def _caller(context) -> uuid.UUID:
    return parse_uuid(require_caller(context), "caller")


def _batch_ids(values, field: str) -> list[uuid.UUID]:
    if len(values) > MAX_BATCH:
        raise InvalidArgument(field, f"at most {MAX_BATCH} ids per call, got {len(values)}")
    return [parse_uuid(v, field) for v in values]


def _follow_event(event_type: str, follower: uuid.UUID, followee: uuid.UUID) -> events_pb2.Event:
    change = events_pb2.FollowChanged(follower_id=str(follower), followee_id=str(followee))
    return new_event(event_type, str(follower), follow=change)


def _video_pair_event(
    relation: store.VideoRelation, verb: str, user_id: uuid.UUID, video_id: uuid.UUID
) -> events_pb2.Event:
    """The event a like or favorite change records (only if the change happens)."""
    ids = {"user_id": str(user_id), "video_id": str(video_id)}
    if relation == "likes":
        return new_event(f"like.{verb}", str(video_id), like=events_pb2.LikeChanged(**ids))
    return new_event(f"favorite.{verb}", str(video_id), favorite=events_pb2.FavoriteChanged(**ids))


async def _record_comment_event(
    conn: AsyncConnection, event_type: str, row: store.CommentRow
) -> None:
    change = events_pb2.CommentChanged(
        comment_id=str(row.comment_id), video_id=str(row.video_id), author_id=str(row.author_id)
    )
    await record_event(conn, new_event(event_type, str(row.video_id), comment=change))
