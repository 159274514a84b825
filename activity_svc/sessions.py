"""Sessions: refresh tokens that rotate on every use, and revocation.

A session starts at sign-up or sign-in with one refresh token. Each refresh spends the presented
token and issues the next (rotation). A spent token presented again can only be a copy, the
client's or a thief's, and we cannot tell which: the whole session is revoked, so whoever holds
the latest token must sign in again too (the OAuth 2.0 Security BCP's reuse detection).
Tokens are 256 random bits, stored as their SHA-256; the tokens themselves are never stored or
logged.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from activity_svc import store
from mesh.errors import InvalidArgument, Unauthenticated

log = logging.getLogger("activity_svc.sessions")

TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
SIGN_IN_AGAIN = "sign in again"
# how long an ended session's row stays; its tokens answer "unknown" afterwards, still 401
PRUNE_AFTER_SECONDS = 86400
# how long a spent refresh token is remembered, for reuse detection
SPENT_KEPT_SECONDS = 7 * 86400


def new_refresh_token() -> tuple[str, bytes]:
    """A fresh refresh token and the digest that is stored in its place."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_refresh_token(token: str) -> bytes:
    """The digest of a well-formed refresh token; INVALID_ARGUMENT for anything else."""
    if not token:
        raise InvalidArgument("refresh_token", "is required")
    if not _TOKEN_SHAPE.fullmatch(token):
        raise InvalidArgument("refresh_token", "is not a refresh token this service issued")
    return digest(token)


@dataclass(frozen=True)
class Refreshed:
    user: store.UserRow
    session_id: uuid.UUID
    refresh_token: str


class Sessions:
    def __init__(self, pool: AsyncConnectionPool, ttl_seconds: int) -> None:
        self.pool = pool
        self.ttl_seconds = ttl_seconds

    async def start(self, conn: AsyncConnection, user_id: uuid.UUID) -> tuple[uuid.UUID, str]:
        """Starts a session on ``conn`` (inside the caller's transaction): its id and its first
        refresh token."""
        token, token_hash = new_refresh_token()
        session_id = await store.insert_session(conn, user_id, token_hash, self.ttl_seconds)
        return session_id, token

    async def refresh(self, token: str) -> Refreshed:
        """Spends ``token`` and issues the next one; UNAUTHENTICATED when it cannot be used."""
        spent = check_refresh_token(token)
        fresh_token, fresh = new_refresh_token()
        user = None
        async with self.pool.connection() as conn, conn.transaction():
            row = await store.refresh_token_for_update(conn, spent)
            refusal = _refusal(row)
            if row is not None and refusal is None:
                await store.rotate_refresh_token(
                    conn, row.session_id, spent, fresh, self.ttl_seconds
                )
                user = await store.user_by_id(conn, row.user_id)
            elif row is not None and row.spent_at is not None and row.revoked_at is None:
                await store.revoke_session(conn, row.session_id, row.user_id, "reused")
                log.warning(
                    "spent refresh token presented again: session revoked",
                    extra={"session_id": str(row.session_id), "owner": str(row.user_id)},
                )
        # raised after the commit, so that a revocation lands
        if row is None or user is None:
            raise Unauthenticated(refusal or f"this session has ended; {SIGN_IN_AGAIN}")
        return Refreshed(user, row.session_id, fresh_token)

    async def end(self, session_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Signs the session out (idempotent; another user's session is left alone)."""
        async with self.pool.connection() as conn:
            await store.revoke_session(conn, session_id, user_id, "signed_out")

    async def prune(self) -> None:
        async with self.pool.connection() as conn:
            while await store.prune_sessions(conn, PRUNE_AFTER_SECONDS, 1000) == 1000:
                pass
            while await store.prune_spent_tokens(conn, SPENT_KEPT_SECONDS, 1000) == 1000:
                pass


def _refusal(row: store.RefreshRow | None) -> str | None:
    """Why a refresh with this token is refused, or None when it may go ahead."""
    if row is None:
        return f"refresh token is unknown; {SIGN_IN_AGAIN}"
    if row.revoked_at is not None:
        return f"this session has ended; {SIGN_IN_AGAIN}"
    if row.spent_at is not None:
        return f"refresh token was already used, so the session is revoked; {SIGN_IN_AGAIN}"
    if row.expires_at <= row.now:
        return f"this session has expired; {SIGN_IN_AGAIN}"
    return None
