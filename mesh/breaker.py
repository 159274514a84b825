"""A circuit breaker for a store: after a failure, callers skip the store for a few seconds.

A hung Redis (socket open, no answer) costs each call its full client timeout; the degraded
paths of DESIGN ("Redis down: build from the replica") are only useful if a request does not
first wait that timeout every time. One failure opens the breaker for ``cool_down`` seconds;
the first call after that tries the store again (and closes the breaker if it answers).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("mesh.breaker")

# How long a read on a request's path may wait for Redis before the request degrades: Redis
# answers in well under a millisecond, so this only ever fires on a hung or overloaded server.
FAST_READ_SECONDS = 0.5


class Breaker:
    def __init__(self, name: str, cool_down: float = 5.0) -> None:
        self.name = name
        self.cool_down = cool_down
        self._open_until = 0.0

    def available(self) -> bool:
        """False while the store is presumed down (skip it and degrade)."""
        return time.monotonic() >= self._open_until

    def failed(self, exc: BaseException) -> None:
        if self.available():
            log.warning("%s unavailable, skipped for %.0fs: %r", self.name, self.cool_down, exc)
        self._open_until = time.monotonic() + self.cool_down
