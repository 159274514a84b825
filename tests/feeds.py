"""Client-side helpers for feed tests: reading a page, following, and a fan whose following
feed already shows a creator's video."""

from __future__ import annotations

from typing import Any

from tests.helpers import Http, SignedUpUser, eventually, sign_up
from tests.videos import publish


def feed(http: Http, user: SignedUpUser | None, kind: str = "following", **query: Any) -> dict:
    """One page of ``kind`` (200 asserted), anonymous when ``user`` is None."""
    params = "&".join(f"{k}={v}" for k, v in {"kind": kind, **query}.items())
    r = http.get(f"/v1/feed?{params}", token=user.token if user else None)
    assert r.status == 200, r.body
    return r.json()


def ids(page: dict) -> list[str]:
    return [v["video_id"] for v in page["items"]]


def follow(http: Http, user: SignedUpUser, followee: SignedUpUser) -> None:
    r = http.post("/v1/follows", {"followee_id": followee.user_id}, token=user.token)
    assert r.status == 200, r.body


def fan_with_one_video(http: Http) -> tuple[SignedUpUser, SignedUpUser, dict]:
    """(creator, fan, video): a new fan following a new creator, once the creator's one video
    is in the fan's feed."""
    creator, fan = sign_up(http, "creator"), sign_up(http, "fan")
    follow(http, fan, creator)
    video = publish(http, creator)
    eventually(lambda: ids(feed(http, fan)) == [video["video_id"]])
    return creator, fan, video
