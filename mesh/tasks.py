"""Background work inside a service: named periodic tasks that survive their own failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from mesh.interceptors import DEPENDENCY_ERRORS

log = logging.getLogger("mesh.tasks")


async def every(seconds: float, name: str, job: Callable[[], Awaitable[object]]) -> None:
    """Runs ``job`` every ``seconds`` until cancelled; failures are logged, never fatal."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except DEPENDENCY_ERRORS as e:
            log.warning("%s: a store is unavailable: %r", name, e)
        except Exception:
            log.exception("%s failed", name)
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def running(*coroutines: Awaitable[None]) -> AsyncIterator[None]:
    """Runs the coroutines as tasks for the duration of the block, then cancels them."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
