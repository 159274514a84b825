"""BatchLoader: concurrent single lookups become few batch calls, and answers are never older
than the request."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import pytest

from mesh.batching import BatchLoader


def run_async(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(test())

    return wrapper


class Backend:
    """A batch source whose calls can be held open (``gated``) until the test releases them,
    so a test decides exactly what is in flight: no timing involved."""

    def __init__(self, gated: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail: Exception | None = None
        self.released = asyncio.Event()
        if not gated:
            self.released.set()
        self._arrived = asyncio.Condition()

    async def fetch(self, keys: list[int]) -> dict[int, str]:
        self.calls.append(keys)
        async with self._arrived:
            self._arrived.notify_all()
        await self.released.wait()
        if self.fail:
            raise self.fail
        return {k: f"v{k}" for k in keys if k % 2 == 0}

    async def received(self, calls: int) -> None:
        """Returns once ``calls`` calls have arrived (a deadline of one second)."""
        async with asyncio.timeout(1), self._arrived:
            await self._arrived.wait_for(lambda: len(self.calls) >= calls)


@run_async
async def test_concurrent_loads_share_one_call_and_duplicates_one_key() -> None:
    backend = Backend()
    loader = BatchLoader(backend.fetch)
    results = await asyncio.gather(*(loader.load(k) for k in (2, 4, 2, 3)))
    assert results == ["v2", "v4", "v2", None]
    assert backend.calls == [[2, 4, 3]]


@run_async
async def test_keys_arriving_while_calls_are_in_flight_pile_into_the_next_batch() -> None:
    backend = Backend(gated=True)
    loader = BatchLoader(backend.fetch, max_in_flight=1)
    first = asyncio.gather(*(loader.load(k) for k in range(3)))
    await backend.received(1)
    later = asyncio.gather(*(loader.load(k) for k in range(10, 20)))
    backend.released.set()  # the later keys were asked for while the first call was open
    assert await first == ["v0", None, "v2"]
    await later
    assert backend.calls == [[0, 1, 2], list(range(10, 20))]


@run_async
async def test_batches_are_capped() -> None:
    backend = Backend()
    loader = BatchLoader(backend.fetch, max_batch=4)
    await asyncio.gather(*(loader.load(k) for k in range(10)))
    assert sorted(len(c) for c in backend.calls) == [2, 4, 4]


@run_async
async def test_a_key_never_joins_a_call_already_sent() -> None:
    backend = Backend(gated=True)
    loader = BatchLoader(backend.fetch)
    first = asyncio.ensure_future(loader.load(2))
    await backend.received(1)  # the call for 2 is on its way
    second = asyncio.ensure_future(loader.load(2))
    await backend.received(2)
    backend.released.set()
    await asyncio.gather(first, second)
    assert backend.calls == [[2], [2]]


@run_async
async def test_a_failed_call_fails_every_waiter_and_the_loader_recovers() -> None:
    backend = Backend()
    backend.fail = ConnectionError("down")
    loader = BatchLoader(backend.fetch)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    backend.fail = None
    assert await loader.load(2) == "v2"


@run_async
async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    backend = Backend(gated=True)
    loader = BatchLoader(backend.fetch)
    doomed = asyncio.ensure_future(loader.load(2))
    kept = asyncio.ensure_future(loader.load(4))
    await backend.received(1)
    doomed.cancel()
    backend.released.set()
    assert await kept == "v4"
    with pytest.raises(asyncio.CancelledError):
        await doomed
