"""Sign-up, sign-in and GetUser over REST through the edge, as a mobile client sees them."""

from __future__ import annotations

import uuid

import jwt
import pytest

from stack.launcher import Stack
from tests.helpers import Http, sign_up, unique_handle

USER_FIELDS = {
    "user_id", "handle", "display_name", "follower_count", "following_count", "video_count",
    "view_count", "created_at",
}  # fmt: skip


def test_sign_up_returns_the_user_and_a_working_token(edge: Http) -> None:
    handle = unique_handle("ana")
    r = edge.post(
        "/v1/users", {"handle": handle, "password": "correct horse", "display_name": "Ana"}
    )
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"user", "access_token", "expires_at", "refresh_token"}
    user = body["user"]
    assert set(user) == USER_FIELDS
    assert user["handle"] == handle and user["display_name"] == "Ana"
    uuid.UUID(user["user_id"])
    # int64 fields are JSON strings (proto3 JSON), and zero values are printed
    assert user["follower_count"] == "0" and user["video_count"] == "0"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["user_id"]
    assert {"iss", "aud", "exp", "iat"} <= set(claims)
    # the token is accepted by the edge on a route that requires one
    r = edge.post("/v1/follows", {"followee_id": str(uuid.uuid4())}, token=body["access_token"])
    assert r.status != 401


def test_sign_in_returns_a_session_for_the_same_user(edge: Http) -> None:
    user = sign_up(edge)
    r = edge.post("/v1/sessions", {"handle": user.handle, "password": user.password})
    assert r.status == 200
    body = r.json()
    assert body["user"]["user_id"] == user.user_id
    assert body["access_token"] and body["expires_at"].endswith("Z")


def test_get_user_is_anonymous_and_returns_counts(edge: Http) -> None:
    user = sign_up(edge)
    r = edge.get(f"/v1/users/{user.user_id}")
    assert r.status == 200
    body = r.json()
    assert set(body) == USER_FIELDS
    assert body["user_id"] == user.user_id
    assert body["following_count"] == "0"


def test_display_name_defaults_to_the_handle(edge: Http) -> None:
    handle = unique_handle()
    r = edge.post("/v1/users", {"handle": handle, "password": "correct horse"})
    assert r.status == 200
    assert r.json()["user"]["display_name"] == handle


def test_duplicate_handle_is_409_and_creates_nothing(edge: Http) -> None:
    user = sign_up(edge)
    r = edge.post("/v1/users", {"handle": user.handle, "password": "another password"})
    assert r.status == 409
    assert r.json()["code"] == 6
    assert user.handle in r.json()["message"]
    # the original password still works: the failed sign-up changed nothing
    assert (
        edge.post("/v1/sessions", {"handle": user.handle, "password": user.password}).status == 200
    )


def test_wrong_password_and_unknown_handle_look_the_same(edge: Http) -> None:
    user = sign_up(edge)
    wrong = edge.post("/v1/sessions", {"handle": user.handle, "password": "not the password"})
    unknown = edge.post("/v1/sessions", {"handle": unique_handle(), "password": "not the password"})
    assert wrong.status == unknown.status == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == 16


def test_unknown_user_is_404(edge: Http) -> None:
    r = edge.get(f"/v1/users/{uuid.uuid4()}")
    assert r.status == 404
    assert r.json()["code"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "correct horse"}, "handle"),
        ({"handle": "ab", "password": "correct horse"}, "handle"),
        ({"handle": "a" * 31, "password": "correct horse"}, "handle"),
        ({"handle": "Ana", "password": "correct horse"}, "handle"),
        ({"handle": "ana-b", "password": "correct horse"}, "handle"),
        ({"handle": "ana b", "password": "correct horse"}, "handle"),
        ({"handle": "{h}"}, "password"),
        ({"handle": "{h}", "password": "short"}, "password"),
        ({"handle": "{h}", "password": "x" * 129}, "password"),
        ({"handle": "{h}", "password": "correct horse", "display_name": "x" * 51}, "display_name"),
        (
            {"handle": "{h}", "password": "correct horse", "display_name": "a\u0000b"},
            "display_name",
        ),
    ],
)
def test_sign_up_rejects_each_bad_field_by_name(edge: Http, body: dict, field: str) -> None:
    handle = unique_handle()
    body = {k: (handle if v == "{h}" else v) for k, v in body.items()}
    r = edge.post("/v1/users", body)
    assert r.status == 400, r.body
    assert r.json()["code"] == 3
    assert r.json()["message"].startswith(f"{field}:")
    # nothing was written: the handle is still free
    if body.get("handle") == handle:
        ok = edge.post("/v1/users", {"handle": handle, "password": "correct horse"})
        assert ok.status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "correct horse"}, "handle"),
        ({"handle": "UPPER", "password": "x" * 8}, "handle"),
        ({"handle": "someone"}, "password"),
    ],
)
def test_sign_in_rejects_malformed_fields_by_name(edge: Http, body: dict, field: str) -> None:
    r = edge.post("/v1/sessions", body)
    assert r.status == 400
    assert r.json()["message"].startswith(f"{field}:")


def test_malformed_user_id_is_400_naming_the_field(edge: Http) -> None:
    r = edge.get("/v1/users/not-a-uuid")
    assert r.status == 400
    assert r.json()["message"].startswith("user_id:")


def test_malformed_json_is_400_with_a_json_error(edge: Http) -> None:
    r = edge.request("POST", "/v1/users", raw=b'{"handle": ')
    assert r.status == 400
    assert r.json()["code"] == 3


def test_wrong_json_type_is_400(edge: Http) -> None:
    r = edge.post("/v1/users", {"handle": 5, "password": "correct horse"})
    assert r.status == 400
    assert r.json()["code"] == 3


def test_unknown_route_is_404_with_a_json_error(edge: Http) -> None:
    r = edge.get("/v1/nothing-here")
    assert r.status == 404
    assert r.json()["code"] == 5


def test_wrong_method_is_404_or_405(edge: Http) -> None:
    assert edge.request("PUT", "/v1/users").status in (404, 405)
    assert edge.request("DELETE", "/v1/sessions").status in (404, 405)


def test_oversized_body_is_413(edge: Http) -> None:
    r = edge.post("/v1/users", {"handle": "big", "password": "x" * (2 * 1024 * 1024)})
    assert r.status == 413
    assert r.json()["code"] == 8


def test_ten_failed_sign_ins_lock_that_handle_out_for_the_window(edge: Http, stack: Stack) -> None:
    victim, bystander = sign_up(edge, "victim"), sign_up(edge, "bystander")
    wrong = {"handle": victim.handle, "password": "not the password"}
    for _ in range(stack.settings.signin_max_failures):
        assert edge.post("/v1/sessions", wrong).status == 401
    right = {"handle": victim.handle, "password": victim.password}
    r = edge.post("/v1/sessions", right)  # even the right password, until the window passes
    assert r.status == 429, r.body
    assert r.json()["code"] == 8 and "failed sign-ins" in r.json()["message"]
    retry_after = int(r.headers["retry-after"])
    assert 0 < retry_after <= stack.settings.signin_failure_window_seconds
    other = {"handle": bystander.handle, "password": bystander.password}
    assert edge.post("/v1/sessions", other).status == 200  # per handle, not global
    # unknown handles count too, so the limit says nothing about who exists
    ghost = {"handle": unique_handle(), "password": "whatever pass"}
    for _ in range(stack.settings.signin_max_failures):
        assert edge.post("/v1/sessions", ghost).status == 401
    assert edge.post("/v1/sessions", ghost).status == 429
