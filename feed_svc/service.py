"""FeedService servicer: GET /v1/feed from the queues in Redis, and the stream that fills them.

The following feed is the caller's own queue; the for-you feed reads the global ranked queue
(the for-you queue of GLOBAL_FEED_USER) with creator diversity. A feed session is a cursor over
a queue: each page is chosen, memoised and marked seen atomically, so a retried cursor gets the
same page and no video comes twice in a session.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc
import redis.exceptions
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from feed_svc.hydrate import Hydrator
from feed_svc.queues import MAX_PER_CREATOR, FeedQueues, Page
from mesh import keys
from mesh.auth import caller_id
from mesh.breaker import FAST_READ_SECONDS, Breaker
from mesh.errors import InvalidArgument, PermissionDenied, Unauthenticated, Unavailable
from mesh.feedreads import following_videos, trending
from mesh.interceptors import DEPENDENCY_ERRORS
from mesh.pagination import decode_token, encode_token
from mesh.validation import page_size, parse_uuid
from tiktok.v1 import feed_pb2, feed_pb2_grpc, precache_pb2, precache_pb2_grpc

log = logging.getLogger("feed_svc")

KINDS = ("following", "for_you")
DEFAULT_PAGE, MAX_PAGE = 10, 50
URGENT_INTERVAL = 0.5  # a missing queue is asked for again after this, not on every read
LOW_WATER = 20  # unseen entries left below which the builder is asked for a refill
COLD_DEADLINE_SECONDS = 0.5
TRENDING_DAYS = 7
APPLY_CHUNK = 500
# Redis replies that mean "not now" (full, a read-only replica after failover), not "never"
UNAVAILABLE_REPLIES = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)  # batches applied per Redis pipeline
INBOX = 2000  # batches read ahead of the applier: bounds memory, pushes back on the sender


# what a missing queue reads as (FEED_COLD_PATH_ONLY reads every queue as missing)
NO_QUEUE = Page(video_ids=[], replayed=False, unseen_left=0, queue_exists=False, hydration={})

READS = Counter(
    "feed_reads_total",
    "Feed pages served, by where they came from: queue (a hit), cold (built on demand from the"
    " replica: a miss), replay (a retried cursor).",
    ["kind", "source"],
)
UNSEEN_LEFT = Histogram(
    "feed_queue_unseen_entries",
    "Entries of the queue a session has not been served yet, at each page read.",
    ["kind"],
    buckets=(0, 10, 20, 50, 100, 200, 300, 500),
)


class RefillRequests:
    """Asks the builder for refills without waiting for it (the builder deduplicates across
    processes). From this process: one ask in flight per user and kind, and at most one every
    ``interval`` seconds (a missing queue: every URGENT_INTERVAL, not on every read; a queue
    that builds empty, say a user who follows nobody, stays missing)."""

    def __init__(self, stub: precache_pb2_grpc.PrecacheServiceStub, interval: float = 2.0):
        self.stub = stub
        self.interval = interval
        self._last: dict[tuple[str, int, bool], float] = {}  # (user, kind, urgent)
        self._in_flight: dict[tuple[str, int, bool], asyncio.Task[None]] = {}

    def request(self, user_id: str, kind: int, *, urgent: bool = False) -> None:
        key = (user_id, kind, urgent)  # an urgent ask never waits behind a routine one
        now = time.monotonic()
        interval = URGENT_INTERVAL if urgent else self.interval
        if key in self._in_flight or now - self._last.get(key, -1e9) < interval:
            return
        if len(self._last) > 100_000:
            self._last.clear()
        self._last[key] = now
        task = asyncio.create_task(self._send(user_id, kind))
        self._in_flight[key] = task
        task.add_done_callback(lambda _: self._in_flight.pop(key, None))

    async def _send(self, user_id: str, kind: int) -> None:
        try:
            await self.stub.RequestRefill(
                precache_pb2.RequestRefillRequest(user_id=user_id, kind=kind), timeout=1.0
            )
        except grpc.aio.AioRpcError as e:
            log.warning("refill request not delivered: %s", e.code().name)


class FeedService(feed_pb2_grpc.FeedServiceServicer):
    def __init__(
        self,
        queues: FeedQueues,
        hydrator: Hydrator,
        refills: RefillRequests,
        replica: AsyncConnectionPool,
        breaker: Breaker,
        *,
        cold_path_only: bool = False,
    ) -> None:
        self.queues = queues
        self.hydrator = hydrator
        self.refills = refills
        self.replica = replica
        self.breaker = breaker
        self.cold_path_only = cold_path_only  # FEED_COLD_PATH_ONLY

    async def GetFeed(self, request, context):
        caller = caller_id(context)
        kind = request.kind or "for_you"
        if kind not in KINDS:
            raise InvalidArgument("kind", f"must be 'following' or 'for_you', got {kind[:40]!r}")
        if request.user_id:
            if caller is None:
                raise Unauthenticated("user_id needs a signed-in user: send a token")
            if parse_uuid(request.user_id, "user_id") != uuid.UUID(caller):
                raise PermissionDenied("user_id must be the signed-in user: feeds are personal")
        if kind == "following" and caller is None:
            raise Unauthenticated("the following feed needs a signed-in user: send a token")
        size = page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE)
        cursor_kind = f"feed:{kind}:{caller or 'anonymous'}"
        session, number = _position(decode_token(request.cursor, cursor_kind, "cursor"))
        reader = caller or session
        if not self.breaker.available():
            return await self._degraded_page(kind, caller, cursor_kind, session, number, size)
        try:
            async with asyncio.timeout(FAST_READ_SECONDS):
                page, owner = await self._queue_page(kind, caller, reader, session, number, size)
        except DEPENDENCY_ERRORS as e:
            self.breaker.failed(e)  # then the replica, for this and the next few seconds
            return await self._degraded_page(kind, caller, cursor_kind, session, number, size)
        personal = kind == "for_you" and owner != keys.GLOBAL_FEED_USER
        video_ids = page.video_ids
        source = "replay" if page.replayed else "queue"
        refill = not self.cold_path_only
        if kind == "following" and not page.replayed:
            assert caller is not None
            if not page.queue_exists:
                # cold: a first page from the replica now, the whole queue from the builder
                if refill:
                    self.refills.request(caller, feed_pb2.FEED_KIND_FOLLOWING, urgent=True)
                candidates = await self._cold_candidates(caller, size, number)
                video_ids = await self.queues.record_page(reader, session, number, size, candidates)
                source = "cold"
            elif page.unseen_left < LOW_WATER and refill:
                self.refills.request(caller, feed_pb2.FEED_KIND_FOLLOWING)
            UNSEEN_LEFT.labels(kind).observe(max(page.unseen_left, 0))
        elif personal and not page.replayed and page.unseen_left < LOW_WATER and refill:
            self.refills.request(owner, feed_pb2.FEED_KIND_FOR_YOU)
        elif kind == "for_you" and not page.queue_exists and not page.replayed:
            # no ranking in Redis (a fresh or flushed one): the builder computes one now, and
            # this page comes from the replica's ranking
            if refill:
                self.refills.request(keys.GLOBAL_FEED_USER, feed_pb2.FEED_KIND_FOR_YOU, urgent=True)
            candidates = await self._cold_ranking(size, number)
            video_ids = await self.queues.record_page(reader, session, number, size, candidates)
            source = "cold"
        READS.labels(kind, source).inc()
        # a queue's page comes with its cards and counts, read by the same script
        read = page.hydration if source != "cold" else None
        videos = await self.hydrator.videos(video_ids, read)
        # no cursor once the session has nothing more right now (a later session will)
        more = bool(video_ids) and (source == "cold" or page.unseen_left > 0)
        next_cursor = encode_token(cursor_kind, [session, number + 1]) if more else ""
        return feed_pb2.GetFeedResponse(items=videos, next_cursor=next_cursor)

    async def _queue_page(
        self, kind: str, caller: str | None, reader: str, session: str, number: int, size: int
    ) -> tuple[Page, str]:
        """The session's page from the caller's queue (the global one when anonymous), and
        whose queue that was. A signed-in for-you reader without a queue of their own (not yet
        built, or expired) reads the global one meanwhile, and theirs is asked for."""
        owner = caller or keys.GLOBAL_FEED_USER
        if self.cold_path_only:
            return NO_QUEUE, owner
        # a signed-in for-you reader skips what any of their recent sessions served
        seen_scope = "for_you" if kind == "for_you" and caller else None
        page = await self.queues.next_page(owner, kind, reader, session, number, size, seen_scope)
        if kind == "for_you" and owner != keys.GLOBAL_FEED_USER and not page.queue_exists:
            self.refills.request(owner, feed_pb2.FEED_KIND_FOR_YOU, urgent=True)
            owner = keys.GLOBAL_FEED_USER
            page = await self.queues.next_page(
                owner, kind, reader, session, number, size, seen_scope
            )
        return page, owner

    async def _degraded_page(
        self, kind: str, caller: str | None, cursor_kind: str, session: str, number: int, size: int
    ) -> feed_pb2.GetFeedResponse:
        """Redis is down: page ``number`` of a list computed from the replica (the following
        videos, or the ranking), by offset; no memo, so a session is as stable as the list."""
        limit = size * (number + 1)
        try:
            async with asyncio.timeout(COLD_DEADLINE_SECONDS):
                async with self.replica.connection() as conn:
                    if kind == "following":
                        assert caller is not None
                        rows = await following_videos(conn, uuid.UUID(caller), limit)
                        listed = [str(r.video_id) for r in rows]
                    else:
                        ranked = await trending(conn, TRENDING_DAYS, limit * 3)
                        listed = _diverse(ranked)
        except (TimeoutError, *DEPENDENCY_ERRORS) as e:
            log.warning("degraded feed page not built either: %r", e)
            listed = []
        video_ids = listed[number * size : limit]
        READS.labels(kind, "degraded").inc()
        videos = await self.hydrator.videos(video_ids)
        more = len(video_ids) == size
        return feed_pb2.GetFeedResponse(
            items=videos,
            next_cursor=encode_token(cursor_kind, [session, number + 1]) if more else "",
        )

    async def _cold_ranking(self, size: int, number: int) -> list[str]:
        try:
            async with asyncio.timeout(COLD_DEADLINE_SECONDS):
                async with self.replica.connection() as conn:
                    ranked = await trending(conn, TRENDING_DAYS, size * (number + 2) * 3)
        except (TimeoutError, *DEPENDENCY_ERRORS) as e:
            log.warning("cold for-you page not built: %r", e)
            return []
        return _diverse(ranked)

    async def _cold_candidates(self, user_id: str, size: int, number: int) -> list[str]:
        """The newest videos of the user's followees, straight from the replica, within a tight
        deadline (a slow replica gives an empty page, not a slow one)."""
        # enough to skip what earlier pages of the session served (a first page has none)
        limit = size * (number + 1) + (size if number else 0)
        try:
            async with asyncio.timeout(COLD_DEADLINE_SECONDS):
                async with self.replica.connection() as conn:
                    rows = await following_videos(conn, uuid.UUID(user_id), limit)
        except (TimeoutError, *DEPENDENCY_ERRORS) as e:
            log.warning("cold feed page not built: %r", e)
            return []
        return [str(r.video_id) for r in rows]

    async def StreamFeedBatches(self, request_iterator, context):
        """Reads batches ahead into a bounded inbox; applies whatever has arrived in one
        pipeline, in order; acknowledges them in order once applied."""
        inbox: asyncio.Queue[feed_pb2.FeedBatch | None] = asyncio.Queue(INBOX)

        async def receive() -> None:
            try:
                async for batch in request_iterator:
                    await inbox.put(batch)
            finally:
                await inbox.put(None)

        receiver = asyncio.create_task(receive())
        # a client that goes away ends receive() with an error: seen here, not logged as lost
        receiver.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            while True:
                first = await inbox.get()
                if first is None:
                    return
                chunk = [first]
                while len(chunk) < APPLY_CHUNK and not inbox.empty():
                    nxt = inbox.get_nowait()
                    if nxt is None:
                        inbox.put_nowait(None)
                        break
                    chunk.append(nxt)
                try:
                    await self.queues.apply(chunk)
                except redis.exceptions.ResponseError as e:
                    if isinstance(e, UNAVAILABLE_REPLIES) or str(e).startswith(
                        ("BUSY", "NOSCRIPT")
                    ):
                        raise Unavailable("feed queues are not writable right now") from e
                    # Redis refused a script (a batch it cannot apply), not an outage: drop
                    # the chunk like a malformed batch, so it cannot stall the stream forever
                    log.exception("feed batches dropped: Redis refused them")
                for batch in chunk:
                    yield feed_pb2.FeedBatchAck(batch_id=batch.batch_id)
        finally:
            receiver.cancel()


def _position(position: list | None) -> tuple[str, int]:
    """(session id, page number) of a cursor; a new session for no cursor."""
    if position is None:
        return uuid.uuid4().hex, 0
    if (
        len(position) != 2
        or not isinstance(position[0], str)
        or len(position[0]) != 32
        or not isinstance(position[1], int)
        or isinstance(position[1], bool)
        or not 0 < position[1] < 100_000
    ):
        raise InvalidArgument(
            "cursor", "is not a cursor this feed returned; start again without one"
        )
    return position[0], position[1]


def _diverse(ranked: list[tuple[uuid.UUID, uuid.UUID, float]]) -> list[str]:
    """The ranked video ids with at most MAX_PER_CREATOR of any creator in the whole list, so
    every page cut from it keeps the for-you diversity rule."""
    per_creator: dict[uuid.UUID, int] = {}
    kept = []
    for video_id, creator_id, _ in ranked:
        if per_creator.get(creator_id, 0) < MAX_PER_CREATOR:
            per_creator[creator_id] = per_creator.get(creator_id, 0) + 1
            kept.append(str(video_id))
    return kept
