"""The edge's JWT checks: what a client gets with no token, a bad one, or a forged identity."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from mesh.jwtkeys import load_signing_key, public_jwk
from stack.launcher import Stack
from tests.helpers import Http, eventually, sign_up

PROTECTED = ("POST", "/v1/follows")  # any route that needs a token


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _token(stack: Stack, **overrides: object) -> str:
    key = load_signing_key(stack.settings.jwt_private_key_file)
    now = int(time.time())
    claims = {
        "iss": stack.settings.jwt_issuer,
        "aud": stack.settings.jwt_audience,
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": public_jwk(key)["kid"]})


def _follow(edge: Http, token: str | None, **kw: object) -> object:
    return edge.request(*PROTECTED, {"followee_id": str(uuid.uuid4())}, token=token, **kw)


def test_protected_route_without_token_is_401(edge: Http) -> None:
    r = _follow(edge, None)
    assert r.status == 401
    assert r.json()["code"] == 16


def test_a_token_we_signed_is_accepted(edge: Http, stack: Stack) -> None:
    assert _follow(edge, _token(stack)).status not in (401, 403)


def test_a_token_in_the_query_string_is_not_read(edge: Http, stack: Stack) -> None:
    token = _token(stack)
    r = edge.post(f"/v1/follows?access_token={token}", {"followee_id": str(uuid.uuid4())})
    assert r.status == 401 and r.json()["code"] == 16
    me = edge.get(f"/v1/feed?kind=following&access_token={token}")
    assert me.status == 401  # not signed in: the anonymous following feed is refused


@pytest.mark.parametrize(
    "case", ["tampered", "expired", "wrong_audience", "wrong_issuer", "alg_none", "garbage"]
)
def test_bad_tokens_are_401_on_protected_and_anonymous_routes(
    edge: Http, stack: Stack, case: str
) -> None:
    user = sign_up(edge)
    if case == "tampered":
        header, payload, sig = _token(stack).split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["sub"] = user.user_id  # try to become someone else
        token = f"{header}.{_b64(claims)}.{sig}"
    elif case == "expired":
        token = _token(stack, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    elif case == "wrong_audience":
        token = _token(stack, aud="someone-else")
    elif case == "wrong_issuer":
        token = _token(stack, iss="https://evil.example")
    elif case == "alg_none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': user.user_id})}."
    else:
        token = "not-a-jwt"
    r = _follow(edge, token)
    assert r.status == 401, r.body
    assert r.json()["code"] == 16
    # an anonymous route still refuses a bad token rather than ignoring it
    r = edge.get(f"/v1/users/{user.user_id}", token=token)
    assert r.status == 401, r.body


def test_anonymous_route_works_without_a_token(edge: Http) -> None:
    user = sign_up(edge)
    assert edge.get(f"/v1/users/{user.user_id}").status == 200


def _access_log_lines(stack: Stack) -> list[dict]:
    """The complete lines of the edge's access log (Envoy may be mid-way through writing the
    last one: only lines ended by a newline are parsed)."""
    path = stack.topo.data_dir / "logs" / "envoy-edge-access.log"
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


def test_client_sent_x_user_id_never_reaches_a_service(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    forged = str(uuid.uuid4())
    marker = f"/v1/users/{user.user_id}"
    # anonymous call with a forged identity: the service sees none
    assert edge.get(marker, headers={"x-user-id": forged}).status == 200
    # signed-in call with a forged identity: the service sees the token's subject
    assert edge.get(marker, token=user.token, headers={"x-user-id": forged}).status == 200
    # a protected route with only a forged identity is still unauthenticated
    assert _follow(edge, None, headers={"x-user-id": forged}).status == 401

    def seen() -> list:
        lines = [entry for entry in _access_log_lines(stack) if entry["path"] == marker]
        return lines if len(lines) >= 2 else []

    lines = eventually(seen, timeout=10)
    assert [entry["user_id"] for entry in lines[-2:]] == [None, user.user_id]
    assert all(entry["user_id"] != forged for entry in _access_log_lines(stack))
