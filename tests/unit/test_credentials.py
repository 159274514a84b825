"""Password hashing and access tokens."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher

from activity_svc.credentials import Passwords, TokenIssuer
from mesh.errors import ResourceExhausted
from mesh.jwtkeys import (
    ensure_signing_key,
    load_signing_key,
    public_jwk,
    rotate_signing_key,
    write_jwks,
)

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_passwords_verify_and_unknown_user_fails() -> None:
    async def scenario() -> None:
        passwords = Passwords(hasher=FAST)
        h = await passwords.hash("correct horse")
        assert h.startswith("$argon2id$")
        assert await passwords.verify(h, "correct horse")
        assert not await passwords.verify(h, "wrong horse")
        assert not await passwords.verify(None, "correct horse")
        assert not await passwords.verify("not-a-hash", "correct horse")

    asyncio.run(scenario())


def test_signing_key_is_created_once_private_and_published_as_jwks(tmp_path: Path) -> None:
    key_file = tmp_path / "jwt" / "key.pem"
    ensure_signing_key(key_file)
    first = key_file.read_bytes()
    ensure_signing_key(key_file)
    assert key_file.read_bytes() == first
    assert key_file.stat().st_mode & 0o777 == 0o600
    write_jwks(key_file, tmp_path / "jwks.json", tmp_path / "jwt" / "previous.pem")
    jwk = public_jwk(load_signing_key(key_file))
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk
    assert json.loads((tmp_path / "jwks.json").read_text()) == {"keys": [jwk]}


def test_rotation_keeps_exactly_the_current_and_the_previous_key(tmp_path: Path) -> None:
    current, previous, jwks_file = tmp_path / "key.pem", tmp_path / "old.pem", tmp_path / "j"
    ensure_signing_key(current)
    kids = [public_jwk(load_signing_key(current))["kid"]]
    for _ in range(2):
        kids.append(rotate_signing_key(current, previous))
        assert previous.stat().st_mode & 0o777 == 0o600
    write_jwks(current, jwks_file, previous)
    published = [k["kid"] for k in json.loads(jwks_file.read_text())["keys"]]
    assert published == [kids[2], kids[1]]  # the key before the previous one is gone


def test_tokens_carry_the_claims_envoy_checks(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    ensure_signing_key(key_file)
    key = load_signing_key(key_file)
    issuer = TokenIssuer(key, "iss-x", "aud-y", ttl_seconds=60)
    now = time.time()
    token = issuer.issue("user-1", "session-1", now=now)
    claims = jwt.decode(
        token.token, key.public_key(), algorithms=["EdDSA"], audience="aud-y", issuer="iss-x"
    )
    assert (claims["sub"], claims["sid"]) == ("user-1", "session-1")
    assert claims["exp"] == int(now) + 60
    assert jwt.get_unverified_header(token.token)["kid"] == public_jwk(key)["kid"]
    assert int(token.expires_at.timestamp()) == claims["exp"]
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token.token, key.public_key(), algorithms=["EdDSA"], audience="other")


class _Gated(PasswordHasher):
    """FAST, but each hash waits for the gate: a hash that takes as long as the test wants."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.gate = threading.Event()
        self.gate.set()  # the decoy hash at construction passes
        self.entered = threading.Event()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.entered.set()
        self.gate.wait(5)
        return super().hash(password, salt=salt)


def test_an_overloaded_hasher_answers_resource_exhausted_and_slots_outlive_cancels() -> None:
    async def scenario() -> None:
        hasher = _Gated()
        passwords = Passwords(threads=1, queue=1, hasher=hasher)
        hasher.gate.clear()
        hasher.entered.clear()
        running = asyncio.create_task(passwords.hash("a"))  # takes the thread
        waiting = asyncio.create_task(passwords.hash("b"))  # the one place in the queue
        # both tasks have run once the first is inside its thread (they start in one tick)
        assert await asyncio.to_thread(hasher.entered.wait, 5)
        with pytest.raises(ResourceExhausted):
            await passwords.hash("c")
        running.cancel()  # the caller gives up; its thread is still hashing
        with pytest.raises(asyncio.CancelledError):
            await running
        with pytest.raises(ResourceExhausted):  # so its slot is still taken
            await passwords.hash("d")
        hasher.gate.set()
        assert (await waiting).startswith("$argon2id$")
        assert (await passwords.hash("e")).startswith("$argon2id$")
        passwords.close()

    asyncio.run(scenario())


def test_the_default_hasher_is_at_least_owasps_minimum() -> None:
    params = Passwords().needs_rehash
    hashed = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash("x")
    assert not params(hashed)
    assert params(FAST.hash("x"))  # weaker hashes are upgraded at the next sign-in
