"""Coalescing single-key lookups into batch calls (the DataLoader pattern).

Concurrent requests that each need one record (does video X exist?) await ``load(x)``; the
loader sends the keys gathered meanwhile as one batch call. At most ``max_in_flight`` calls run
at once, so under load the keys pile up and batches grow instead of calls multiplying. A key only
joins a batch that has not been sent yet, so every answer comes from a call that started after
the request asked: nothing older than the request is served (no cache, no staleness).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchLoader(Generic[K, V]):
    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        *,
        max_batch: int = 500,
        max_in_flight: int = 4,
    ) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(max_in_flight)
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._gathering = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, key: K) -> V | None:
        """The value for ``key`` from a batch call, or None when the call did not return it."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        self._schedule()
        return await future

    def _schedule(self) -> None:
        # At most one batch is being gathered at a time: it is scheduled for the next loop
        # iteration (collecting every key asked for in this one), then waits for a free slot
        # (collecting every key asked for meanwhile), and only then takes its keys.
        if not self._gathering:
            self._gathering = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        task = asyncio.create_task(self._run_batch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self) -> None:
        async with self._slots:
            self._gathering = False
            keys = list(self._waiting)[: self._max_batch]
            if not keys:
                return
            batch = {key: self._waiting.pop(key) for key in keys}
            if self._waiting:  # more than one batch's worth: the next one starts gathering
                self._schedule()
            try:
                found = await self._fetch(keys)
            except asyncio.CancelledError:
                for futures in batch.values():
                    for f in futures:
                        f.cancel()
                raise
            except Exception as e:  # noqa: BLE001 - handed to every waiter, not swallowed
                for futures in batch.values():
                    for f in futures:
                        if not f.done():
                            f.set_exception(e)
                return
            for key, futures in batch.items():
                for f in futures:
                    if not f.done():
                        f.set_result(found.get(key))
