"""Failed sign-ins per handle: after ``max_failures`` within ``window_seconds`` of the first,
sign-ins for that handle answer RESOURCE_EXHAUSTED (429, with Retry-After) until the window ends.

The counter lives in Redis, so the limit holds across every activity_svc instance. It counts
well-formed handles only (a junk handle cannot exist and is refused before this), known or not,
so an attacker learns nothing about which handles exist. Redis down: sign-in goes on unlimited,
logged, because locking every user out is the worse failure.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
import redis.exceptions

from mesh import keys
from mesh.errors import ResourceExhausted

log = logging.getLogger(__name__)

# one round trip: count the failure, start the window with the first one
_RECORD_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class SignInLimit:
    def __init__(self, redis: aioredis.Redis, max_failures: int, window_seconds: int) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._record = redis.register_script(_RECORD_FAILURE)

    async def check(self, handle: str) -> None:
        """Raises ResourceExhausted while ``handle`` is locked out."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(keys.signin_failures(handle))
                pipe.ttl(keys.signin_failures(handle))
                count, ttl = await pipe.execute()
        except redis.exceptions.RedisError as e:
            log.warning("sign-in limit unchecked, Redis unavailable: %r", e)
            return
        if count is not None and int(count) >= self.max_failures:
            wait = max(int(ttl), 1)
            raise ResourceExhausted(
                f"too many failed sign-ins for this handle; retry in {wait} s", retry_after=wait
            )

    async def failed(self, handle: str) -> None:
        try:
            await self._record(keys=[keys.signin_failures(handle)], args=[self.window_seconds])
        except redis.exceptions.RedisError as e:
            log.warning("sign-in failure not counted, Redis unavailable: %r", e)
