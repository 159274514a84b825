"""Text a client developer gets wrong: invalid UTF-8 anywhere is 400 (never 5xx), and a rejected
value is never echoed back whole."""

from __future__ import annotations

import pytest

from tests.helpers import Http, sign_up


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/videos/%ff%fe"),
        ("GET", "/v1/feed?kind=%ff"),
        ("GET", "/v1/users/%C0%AE%C0%AE"),
        ("DELETE", "/v1/follows/%C0%AE%C0%AE"),
        ("GET", "/v1/users/%ff/videos"),
    ],
)
def test_invalid_utf8_in_a_path_or_query_is_400(edge: Http, method: str, path: str) -> None:
    user = sign_up(edge)
    r = edge.request(method, path, token=user.token)
    assert r.status == 400, (path, r.status, r.body[:200])
    assert r.json()["code"] == 3


def test_invalid_utf8_in_a_body_is_400(edge: Http) -> None:
    user = sign_up(edge)
    r = edge.request("POST", "/v1/follows", token=user.token, raw=b'{"followee_id":"\xff\xfe"}')
    assert r.status == 400, (r.status, r.body[:200])
    r = edge.request("POST", "/v1/users", raw=b'{"handle":"ab\xffc","password":"correct horse"}')
    assert r.status == 400, (r.status, r.body[:200])


def test_a_long_rejected_value_is_not_echoed(edge: Http) -> None:
    user = sign_up(edge)
    long = "x" * 100_000
    r = edge.post("/v1/uploads", {"content_type": long, "size_bytes": 10}, token=user.token)
    assert r.status == 400, (r.status, r.body[:200])
    assert len(r.body) < 1000
    r = edge.get(f"/v1/users/{long[:8000]}")
    assert r.status == 400 and len(r.body) < 1000
