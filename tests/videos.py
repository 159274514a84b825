"""Client-side helpers for videos: upload tickets, the presigned PUT, publishing."""

from __future__ import annotations

import urllib.error
import urllib.request
from functools import cache
from typing import Any

from tests.clips import make_clip
from tests.helpers import Http, SignedUpUser, eventually

PROCESSING, READY, FAILED = "VIDEO_STATE_PROCESSING", "VIDEO_STATE_READY", "VIDEO_STATE_FAILED"


@cache
def clip() -> bytes:
    return make_clip(2, width=160, height=120)


@cache
def portrait_clip() -> bytes:
    """A 360×640 clip with sound: the ladder's 240 and 360 renditions."""
    return make_clip(5, width=360, height=640, fps=15, audio=True)


def put(url: str, data: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 - our own edge
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def ticket(edge: Http, user: SignedUpUser, size: int, content_type: str = "video/mp4") -> dict:
    r = edge.post(
        "/v1/uploads", {"content_type": content_type, "size_bytes": size}, token=user.token
    )
    assert r.status == 200, r.body
    return r.json()


def uploaded(edge: Http, user: SignedUpUser, data: bytes) -> dict:
    """A ticket whose bytes have been PUT (not yet completed)."""
    up = ticket(edge, user, len(data))
    assert put(up["upload_url"], data, up["upload_headers"]) == 200
    return up


def complete(edge: Http, user: SignedUpUser, upload_id: str, caption: str = "hello") -> Any:
    return edge.post("/v1/videos", {"upload_id": upload_id, "caption": caption}, token=user.token)


def publish(edge: Http, user: SignedUpUser, data: bytes | None = None, caption: str = "hi") -> dict:
    data = clip() if data is None else data
    up = uploaded(edge, user, data)
    r = complete(edge, user, up["upload_id"], caption)
    assert r.status == 200, r.body
    return r.json()


def ready(edge: Http, video_id: str, timeout: float = 60) -> dict:
    def check() -> dict | None:
        video = edge.get(f"/v1/videos/{video_id}").json()
        assert video["state"] != FAILED, video
        return video if video["state"] == READY else None

    return eventually(check, timeout=timeout, interval=0.25)


LADDER_FIELDS = ("state", "hls_url")


def without_ladder(video: dict) -> dict:
    """A video without the fields the transcoder changes a moment after publishing, for
    comparing two reads that may fall on either side of READY."""
    return {k: v for k, v in video.items() if k not in LADDER_FIELDS}
