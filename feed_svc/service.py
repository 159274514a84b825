"""FeedService servicer: GET /v1/feed from the queues in Redis, and the stream that fills them.

The following feed is the caller's own queue; the for-you feed reads the caller's personal
queue, else the global ranked one (the for-you queue of GLOBAL_FEED_USER), with creator
diversity. A feed session is a cursor over a queue: each page is chosen, memoised and marked
seen atomically, so a retried cursor gets the same page and no video comes twice in a session.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from prometheus_client import Counter, Histogram

from feed_svc.applier import apply_stream
from feed_svc.hydrate import Hydrator
from feed_svc.queues import FeedQueues, Page
from feed_svc.refills import RefillRequests
from feed_svc.replicafeed import ReplicaFeed
from mesh.auth import caller_id
from mesh.breaker import FAST_READ_SECONDS, Breaker
from mesh.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    shown,
)
from mesh.interceptors import DEPENDENCY_ERRORS
from mesh.pagination import decode_token, encode_token
from mesh.validation import page_size, parse_uuid
from readmodels.feed import GLOBAL_FEED_USER, LOW_WATER
from tiktok.v1 import feed_pb2, feed_pb2_grpc

# A feed's name in the API (GetFeedRequest.kind) and in Redis keys; the builder's FeedKind
FEED_KINDS = {"following": feed_pb2.FEED_KIND_FOLLOWING, "for_you": feed_pb2.FEED_KIND_FOR_YOU}
DEFAULT_PAGE, MAX_PAGE = 10, 50

# what a missing queue reads as (FEED_COLD_PATH_ONLY reads every queue as missing)
NO_QUEUE = Page(video_ids=[], replayed=False, unseen_left=0, queue_exists=False, hydration={})

READS = Counter(
    "feed_reads_total",
    "Feed pages served, by where they came from: queue (a hit), cold (built on demand from the"
    " replica: a miss), replay (a retried cursor).",
    ["kind", "source"],
)
ANONYMOUS_REFUSED = Counter(
    "feed_anonymous_sessions_refused_total",
    "New anonymous feed sessions refused because the per-minute cap was reached.",
)
UNSEEN_LEFT = Histogram(
    "feed_queue_unseen_entries",
    "Entries of the queue a session has not been served yet, at each page read.",
    ["kind"],
    buckets=(0, 10, 20, 50, 100, 200, 300, 500),
)


@dataclass(frozen=True)
class PageAsk:
    """One GetFeed call, validated: page ``number`` of ``session`` over the ``feed`` feed."""

    feed: str  # a FEED_KINDS name
    caller: str | None  # the signed-in user
    session: str
    number: int
    size: int
    cursor_scope: str  # what the session's cursors are bound to (mesh.pagination)

    @property
    def reader(self) -> str:
        """Whose served set the page is checked against: the user, else the session."""
        return self.caller or self.session

    def next_cursor(self) -> str:
        return encode_token(self.cursor_scope, [self.session, self.number + 1])


class FeedService(feed_pb2_grpc.FeedServiceServicer):
    def __init__(
        self,
        queues: FeedQueues,
        hydrator: Hydrator,
        refills: RefillRequests,
        replica: ReplicaFeed,
        breaker: Breaker,
        *,
        cold_path_only: bool = False,
        anonymous_sessions_per_minute: int = 6000,
    ) -> None:
        self.queues = queues
        self.hydrator = hydrator
        self.refills = refills
        self.replica = replica
        self.breaker = breaker
        self.cold_path_only = cold_path_only  # FEED_COLD_PATH_ONLY
        self.anonymous_sessions_per_minute = anonymous_sessions_per_minute

    async def GetFeed(
        self, request: feed_pb2.GetFeedRequest, context: grpc.aio.ServicerContext
    ) -> feed_pb2.GetFeedResponse:
        ask = _page_ask(request, caller_id(context))
        if not self.breaker.available():
            return await self._degraded_page(ask)
        try:
            async with asyncio.timeout(FAST_READ_SECONDS):
                if ask.caller is None and ask.number == 0:
                    await self._admit_anonymous_session()
                page, owner = await self._queue_page(ask)
        except DEPENDENCY_ERRORS as e:
            self.breaker.failed(e)  # then the replica, for this and the next few seconds
            return await self._degraded_page(ask)
        video_ids, source = await self._settle(ask, page, owner)
        READS.labels(ask.feed, source).inc()
        # a queue's page comes with its cards and counts, read by the same script
        read = page.hydration if source != "cold" else None
        videos = await self.hydrator.videos(video_ids, read)
        # no cursor once the session has nothing more right now (a later session will)
        more = bool(video_ids) and (source == "cold" or page.unseen_left > 0)
        return feed_pb2.GetFeedResponse(items=videos, next_cursor=ask.next_cursor() if more else "")

    async def _admit_anonymous_session(self) -> None:
        """Every anonymous session holds a seen set for a while; past the per-minute cap new
        ones are refused (429 with Retry-After) instead of growing Redis without bound."""
        started, wait = await self.queues.count_anonymous_session(time.time())
        if started > self.anonymous_sessions_per_minute:
            ANONYMOUS_REFUSED.inc()
            raise ResourceExhausted(
                "too many new anonymous feed sessions right now: sign in, or retry later",
                retry_after=wait,
            )

    async def _queue_page(self, ask: PageAsk) -> tuple[Page, str]:
        """The session's page from the caller's queue (the global one when anonymous), and
        whose queue that was. A signed-in for-you reader without a queue of their own (not yet
        built, or expired) reads the global one meanwhile, and theirs is asked for."""
        owner = ask.caller or GLOBAL_FEED_USER
        if self.cold_path_only:
            return NO_QUEUE, owner
        # a signed-in for-you reader skips what any of their recent sessions served
        seen_scope = "for_you" if ask.feed == "for_you" and ask.caller else None
        page = await self._next_page(owner, ask, seen_scope)
        if ask.feed == "for_you" and owner != GLOBAL_FEED_USER and not page.queue_exists:
            self.refills.request(owner, feed_pb2.FEED_KIND_FOR_YOU, urgent=True)
            owner = GLOBAL_FEED_USER
            page = await self._next_page(owner, ask, seen_scope)
        return page, owner

    def _next_page(self, owner: str, ask: PageAsk, seen_scope: str | None):
        return self.queues.next_page(
            owner, ask.feed, ask.reader, ask.session, ask.number, ask.size, seen_scope
        )

    async def _settle(self, ask: PageAsk, page: Page, owner: str) -> tuple[list[str], str]:
        """What a queue read means: the page's ids and their source. A replay is served as it
        was; a missing queue (a miss) is asked of the builder and this page is built from the
        replica ("cold"); a queue running low is asked to be refilled."""
        if page.replayed:
            return page.video_ids, "replay"
        refill = not self.cold_path_only
        kind = FEED_KINDS[ask.feed]
        if ask.feed == "following":
            UNSEEN_LEFT.labels(ask.feed).observe(max(page.unseen_left, 0))
        if not page.queue_exists:
            # following: the caller's queue; for-you: the global ranking (a fresh or flushed
            # Redis) is built now, and this page comes from the replica
            queue_owner = ask.caller if ask.feed == "following" else GLOBAL_FEED_USER
            if refill:
                assert queue_owner is not None
                self.refills.request(queue_owner, kind, urgent=True)
            candidates = await self._cold_candidates(ask)
            recorded = await self.queues.record_page(
                ask.reader, ask.session, ask.number, ask.size, candidates
            )
            return recorded, "cold"
        # the global ranking is rebuilt on a timer, not on demand
        if page.unseen_left < LOW_WATER and refill and owner != GLOBAL_FEED_USER:
            self.refills.request(owner, kind)
        return page.video_ids, "queue"

    async def _cold_candidates(self, ask: PageAsk) -> list[str]:
        if ask.feed == "following":
            assert ask.caller is not None
            # enough to skip what earlier pages of the session served (a first page has none)
            limit = ask.size * (ask.number + 1) + (ask.size if ask.number else 0)
            return await self.replica.following(ask.caller, limit, "cold feed page")
        return await self.replica.ranking(ask.size * (ask.number + 2) * 3, "cold for-you page")

    async def _degraded_page(self, ask: PageAsk) -> feed_pb2.GetFeedResponse:
        """Redis is down: page ``number`` of a list computed from the replica (the following
        videos, or the ranking), by offset; no memo, so a session is as stable as the list."""
        limit = ask.size * (ask.number + 1)
        what = "degraded feed page"
        if ask.feed == "following":
            assert ask.caller is not None
            listed = await self.replica.following(ask.caller, limit, what)
        else:
            listed = await self.replica.ranking(limit * 3, what)
        video_ids = listed[ask.number * ask.size : limit]
        READS.labels(ask.feed, "degraded").inc()
        videos = await self.hydrator.videos(video_ids)
        more = len(video_ids) == ask.size
        return feed_pb2.GetFeedResponse(items=videos, next_cursor=ask.next_cursor() if more else "")

    async def StreamFeedBatches(
        self, request_iterator: AsyncIterator[feed_pb2.FeedBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[feed_pb2.FeedBatchAck]:
        async for ack in apply_stream(self.queues, request_iterator):
            yield ack


def _page_ask(request: feed_pb2.GetFeedRequest, caller: str | None) -> PageAsk:
    """The request checked against the caller: feeds are personal, following needs a user."""
    feed = request.kind or "for_you"
    if feed not in FEED_KINDS:
        raise InvalidArgument("kind", f"must be 'following' or 'for_you', got {shown(feed)}")
    if request.user_id:
        if caller is None:
            raise Unauthenticated("user_id needs a signed-in user: send a token")
        if parse_uuid(request.user_id, "user_id") != uuid.UUID(caller):
            raise PermissionDenied("user_id must be the signed-in user: feeds are personal")
    if feed == "following" and caller is None:
        raise Unauthenticated("the following feed needs a signed-in user: send a token")
    size = page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE)
    scope = f"feed:{feed}:{caller or 'anonymous'}"
    session, number = _position(decode_token(request.cursor, scope, "cursor"))
    return PageAsk(feed, caller, session, number, size, scope)


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
