"""Passwords (Argon2id) and access tokens (EdDSA JWTs): the pure logic of signing up and in.

Argon2 is deliberately slow and memory-hungry, so hashing runs on a dedicated, bounded pool of
threads, at a lower CPU priority than the rest of the process. A slot is held until the hash has
finished, not until the caller stops waiting (a cancelled sign-in does not free a slot while its
thread still hashes), and when the queue for slots is full a call fails fast with
RESOURCE_EXHAUSTED instead of piling up work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.errors import ResourceExhausted
from mesh.jwtkeys import ALGORITHM, public_jwk

T = TypeVar("T")


def owasp_argon2id() -> PasswordHasher:
    """OWASP's Password Storage Cheat Sheet, first Argon2id row: m=19 MiB, t=2, p=1."""
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def _lower_priority() -> None:
    """Hashing threads run at nice 10 (a Linux thread's own nice value): when the machine is
    busy, a flood of sign-ins waits for the CPU rather than every other request waiting for it."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Passwords:
    """Hashes and verifies passwords on ``threads`` dedicated threads; at most ``queue`` calls
    wait for one, beyond that RESOURCE_EXHAUSTED."""

    def __init__(
        self, threads: int = 2, queue: int = 16, hasher: PasswordHasher | None = None
    ) -> None:
        self._hasher = hasher or owasp_argon2id()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads, "argon2", initializer=_lower_priority
        )
        self._slots = threads
        self._queue = queue
        self._in_use = 0
        # verified when the handle is unknown, so that case takes as long as a wrong password
        self._decoy = self._hasher.hash(uuid.uuid4().hex)

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; a None hash (unknown user) costs the same and fails."""
        ok = await self._run(self._verify_sync, password_hash or self._decoy, password)
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if self._in_use >= self._slots + self._queue:
            raise ResourceExhausted("too many sign-ins in progress; retry in a moment")
        self._in_use += 1
        loop = asyncio.get_running_loop()
        future = self._pool.submit(fn, *args)
        # released when the work is done (or was cancelled before it started), never earlier
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self._in_use -= 1

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime


class TokenIssuer:
    """Signs access tokens that Envoy's jwt_authn filter verifies against our JWKS."""

    def __init__(
        self, key: Ed25519PrivateKey, issuer: str, audience: str, ttl_seconds: int
    ) -> None:
        self._key = key
        self._kid = public_jwk(key)["kid"]
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: str, session_id: str, now: float | None = None) -> AccessToken:
        """A token for ``user_id`` in session ``session_id`` (the ``sid`` claim, which Envoy
        passes on as x-session-id); ``kid`` in its header names the signing key."""
        now = time.time() if now is None else now
        expires = int(now) + self.ttl_seconds
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "sid": session_id,
            "iat": int(now),
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})
        return AccessToken(token, datetime.fromtimestamp(expires, UTC))
