"""FeedService servicer: GET /v1/feed from the queues in Redis, and the stream that fills them.

The following feed is the caller's own queue; the for-you feed reads the global ranked queue
(the for-you queue of GLOBAL_FEED_USER) with creator diversity. A feed session is a cursor over
a queue: each page is chosen, memoised and marked seen atomically, so a retried cursor gets the
same page and no video comes twice in a session.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from feed_svc.hydrate import Hydrator
from feed_svc.queues import FeedQueues
from mesh import keys
from mesh.auth import caller_id
from mesh.errors import InvalidArgument, PermissionDenied, Unauthenticated
from mesh.pagination import decode_token, encode_token
from mesh.validation import page_size, parse_uuid
from tiktok.v1 import feed_pb2, feed_pb2_grpc

log = logging.getLogger("feed_svc")

KINDS = ("following", "for_you")
DEFAULT_PAGE, MAX_PAGE = 10, 50
APPLY_CHUNK = 500  # batches applied per Redis pipeline
INBOX = 2000  # batches read ahead of the applier: bounds memory, pushes back on the sender


class FeedService(feed_pb2_grpc.FeedServiceServicer):
    def __init__(self, queues: FeedQueues, hydrator: Hydrator) -> None:
        self.queues = queues
        self.hydrator = hydrator

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
        session, number = _position(decode_token(request.cursor, cursor_kind))
        owner = caller if kind == "following" else keys.GLOBAL_FEED_USER
        page = await self.queues.next_page(owner, kind, caller or session, session, number, size)
        videos = await self.hydrator.videos(page.video_ids)
        next_cursor = encode_token(cursor_kind, [session, number + 1]) if page.video_ids else ""
        return feed_pb2.GetFeedResponse(items=videos, next_cursor=next_cursor)

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
                await self.queues.apply(chunk)
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
