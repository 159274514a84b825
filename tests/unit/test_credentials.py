"""Password hashing and access tokens."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher

from activity_svc.credentials import Passwords, TokenIssuer
from mesh.jwtkeys import ensure_signing_key, load_signing_key, public_jwk, write_jwks

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
    write_jwks(key_file, tmp_path / "jwks.json")
    jwk = public_jwk(load_signing_key(key_file))
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk
    assert jwk["kid"] in (tmp_path / "jwks.json").read_text()


def test_tokens_carry_the_claims_envoy_checks(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    ensure_signing_key(key_file)
    key = load_signing_key(key_file)
    issuer = TokenIssuer(key, "iss-x", "aud-y", ttl_seconds=60)
    now = time.time()
    token = issuer.issue("user-1", now=now)
    claims = jwt.decode(
        token.token, key.public_key(), algorithms=["EdDSA"], audience="aud-y", issuer="iss-x"
    )
    assert claims["sub"] == "user-1"
    assert claims["exp"] == int(now) + 60
    assert jwt.get_unverified_header(token.token)["kid"] == public_jwk(key)["kid"]
    assert int(token.expires_at.timestamp()) == claims["exp"]
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token.token, key.public_key(), algorithms=["EdDSA"], audience="other")
