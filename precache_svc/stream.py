"""The builder's end of FeedService/StreamFeedBatches: one long-lived bidirectional stream
through the internal Envoy, with acknowledgements.

Every batch stays in an in-order window until feed_svc acknowledges it (acks come back in the
order sent). When the stream breaks, a new one is opened and the whole window is sent again
first; feed_svc applies a batch id at most once, so a resent batch that had been applied is only
acknowledged. The window is bounded: ``send`` waits for room, so a slow feed_svc slows the
builder instead of growing its memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
from prometheus_client import Gauge

from tiktok.v1 import feed_pb2, feed_pb2_grpc

log = logging.getLogger("precache_svc.stream")

IN_FLIGHT = Gauge(
    "feed_stream_batches_in_flight", "Batches sent to feed_svc, not yet acknowledged."
)


class FeedStream:
    def __init__(self, stub: feed_pb2_grpc.FeedServiceAsyncStub, *, window: int = 5000) -> None:
        self.stub = stub
        self._room = asyncio.Semaphore(window)
        # batches not yet acknowledged, oldest first, each with the future its sender awaits
        self._window: collections.deque[tuple[feed_pb2.FeedBatch, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._written = 0  # how many of the window the current stream has been sent
        self._more = asyncio.Event()
        self._generation = 0
        self.reconnects = 0

    async def send(self, batches: Sequence[feed_pb2.FeedBatch]) -> None:
        """Queues the batches and returns once feed_svc has applied all of them."""
        loop = asyncio.get_running_loop()
        futures = []
        for batch in batches:
            await self._room.acquire()
            future: asyncio.Future[None] = loop.create_future()
            self._window.append((batch, future))
            futures.append(future)
            self._more.set()
        IN_FLIGHT.set(len(self._window))
        await asyncio.gather(*futures)

    async def run(self) -> None:
        """Keeps a stream open until cancelled, reconnecting with backoff."""
        backoff = 0.1
        while True:
            # a new stream starts by resending the whole window; the generation makes the
            # request iterator of a broken stream stop instead of taking batches from the new one
            self._written = 0
            call = self.stub.StreamFeedBatches(self._requests(self._generation))
            try:
                async for ack in call:
                    self._acknowledge(ack.batch_id)
                    backoff = 0.1
                log.warning("feed stream ended by feed_svc; reconnecting")
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                log.warning("feed stream broke (%s); reconnecting", e.code().name)
            except Exception:  # never let the sender die: every send() would wait forever
                log.exception("feed stream failed; reconnecting")
            finally:
                self._generation += 1
                call.cancel()
                self._more.set()  # wakes the old iterator so it sees it is stale and ends
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _requests(self, generation: int) -> AsyncIterator[feed_pb2.FeedBatch]:
        while generation == self._generation:
            while generation == self._generation and self._written < len(self._window):
                batch = self._window[self._written][0]
                self._written += 1
                yield batch
            if generation != self._generation:
                return
            self._more.clear()
            await self._more.wait()

    def _acknowledge(self, batch_id: str) -> None:
        if not self._window or self._window[0][0].batch_id != batch_id:
            # acks come in order; anything else is a bug on one side: resend from scratch
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(),
                details=f"unexpected ack {batch_id}", debug_error_string=None,
            )  # fmt: skip
        _, future = self._window.popleft()
        self._written -= 1
        self._room.release()
        IN_FLIGHT.set(len(self._window))
        if not future.done():
            future.set_result(None)
