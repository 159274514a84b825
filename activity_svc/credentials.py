"""Passwords (Argon2id) and access tokens (EdDSA JWTs): the pure logic of signing up and in.

Argon2 is deliberately slow and memory-hungry, so hashing runs in worker threads with a small
bound: a burst of sign-ups queues instead of exhausting memory or starving the event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.jwtkeys import ALGORITHM, public_jwk


class Passwords:
    """Hashes and verifies passwords off the event loop, at most ``concurrency`` at a time."""

    def __init__(self, concurrency: int = 2, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()  # Argon2id, RFC 9106 low-memory profile
        self._slots = asyncio.Semaphore(concurrency)
        # verified when the handle is unknown, so that case takes as long as a wrong password
        self._decoy = self._hasher.hash(uuid.uuid4().hex)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; a None hash (unknown user) costs the same and fails."""
        async with self._slots:
            return (
                await asyncio.to_thread(self._verify_sync, password_hash or self._decoy, password)
                and password_hash is not None
            )

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


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

    def issue(self, user_id: str, now: float | None = None) -> AccessToken:
        now = time.time() if now is None else now
        expires = int(now) + self.ttl_seconds
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "iat": int(now),
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})
        return AccessToken(token, datetime.fromtimestamp(expires, UTC))
