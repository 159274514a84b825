"""The receiving end of StreamFeedBatches: batches read ahead into a bounded inbox, applied in
order a pipeline at a time, acknowledged in order once applied."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator

import redis.exceptions

from feed_svc.queues import FeedQueues
from mesh.errors import Unavailable
from tiktok.v1 import feed_pb2

log = logging.getLogger("feed_svc.applier")

APPLY_CHUNK = 500  # batches applied per Redis pipeline
INBOX = 2000  # batches read ahead of the applier: bounds memory, pushes back on the sender
# Redis replies that mean "not now" (full, a read-only replica after failover), not "never"
UNAVAILABLE_REPLIES = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)


async def apply_stream(
    queues: FeedQueues, batches: AsyncIterable[feed_pb2.FeedBatch]
) -> AsyncIterator[feed_pb2.FeedBatchAck]:
    """Reads ``batches`` ahead into a bounded inbox; applies whatever has arrived in one
    pipeline, in order; yields their acks in order once applied."""
    inbox: asyncio.Queue[feed_pb2.FeedBatch | None] = asyncio.Queue(INBOX)

    async def receive() -> None:
        try:
            async for batch in batches:
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
            chunk = [first, *_arrived(inbox, APPLY_CHUNK - 1)]
            await _apply(queues, chunk)
            for batch in chunk:
                yield feed_pb2.FeedBatchAck(batch_id=batch.batch_id)
    finally:
        receiver.cancel()


def _arrived(
    inbox: asyncio.Queue[feed_pb2.FeedBatch | None], most: int
) -> list[feed_pb2.FeedBatch]:
    """Up to ``most`` batches already in the inbox, without waiting; the end marker stays."""
    arrived: list[feed_pb2.FeedBatch] = []
    while len(arrived) < most and not inbox.empty():
        nxt = inbox.get_nowait()
        if nxt is None:
            inbox.put_nowait(None)
            break
        arrived.append(nxt)
    return arrived


async def _apply(queues: FeedQueues, chunk: list[feed_pb2.FeedBatch]) -> None:
    try:
        await queues.apply(chunk)
    except redis.exceptions.ResponseError as e:
        if isinstance(e, UNAVAILABLE_REPLIES) or str(e).startswith(("BUSY", "NOSCRIPT")):
            raise Unavailable("feed queues are not writable right now") from e
        # Redis refused a script (a batch it cannot apply), not an outage: drop the chunk like
        # a malformed batch, so it cannot stall the stream forever
        log.exception("feed batches dropped: Redis refused them")
