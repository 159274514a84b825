"""Uploads and videos through the edge, as a mobile client drives them: ticket, presigned PUT
straight to storage, completion, media served (and cached) at /media/."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import botocore.exceptions
import grpc
import psycopg
import pytest

from mesh import keys, pki
from mesh.clients import s3_client
from stack.launcher import Stack, mesh_channel
from tests.clips import make_clip, make_png
from tests.conftest import InternalChannels
from tests.helpers import Http, eventually, sign_up, valkey
from tests.videos import (
    LADDER_FIELDS,
    clip,
    complete,
    fetch,
    publish,
    put,
    ticket,
    uploaded,
    without_ladder,
)
from tiktok.v1 import common_pb2, events_pb2

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
def internal_channel(internal: InternalChannels) -> grpc.Channel:
    """The importer's identity: the one caller of UploadVideo."""
    return internal(pki.IMPORTER)


def object_exists(stack: Stack, key: str) -> bool:
    client = s3_client(stack.settings)
    try:
        client.head_object(Bucket=stack.settings.s3_bucket, Key=key)
        return True
    except botocore.exceptions.ClientError:
        return False


def expire_ticket(stack: Stack, upload_id: str) -> None:
    """Moves a ticket's expiry into the past (the clock is the database's)."""
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE upload.uploads SET expires_at = now() - interval '1 minute'"
            " WHERE upload_id = %s",
            [upload_id],
        )


def upload_key(upload_id: str) -> str:
    return f"v/{upload_id}"


# --- the happy path --------------------------------------------------------------------------


def test_upload_flow_publishes_a_video_whose_media_is_served(edge: Http) -> None:
    user = sign_up(edge)
    data = clip()
    up = ticket(edge, user, len(data))
    assert set(up) == {"upload_id", "upload_url", "upload_headers", "expires_at"}
    assert up["upload_headers"]["Content-Type"] == "video/mp4"
    assert "X-Amz-Signature=" in up["upload_url"] and "X-Amz-Expires=900" in up["upload_url"]
    assert put(up["upload_url"], data, up["upload_headers"]) == 200

    r = complete(edge, user, up["upload_id"], "my first clip #hello")
    assert r.status == 200, r.body
    video = r.json()
    assert video["creator_id"] == user.user_id
    assert video["caption"] == "my first clip #hello"
    assert video["duration_ms"] == "2000" and video["size_bytes"] == str(len(data))
    assert video["like_count"] == "0" and video["created_at"].endswith("Z")

    status, headers, body = fetch(video["playback_url"])
    assert status == 200 and body == data
    assert headers["cache-control"] == IMMUTABLE
    status, headers, body = fetch(video["playback_url"], {"Range": "bytes=10-109"})
    assert status == 206 and body == data[10:110]
    assert headers["content-range"] == f"bytes 10-109/{len(data)}"
    status, headers, body = fetch(video["thumbnail_url"])
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert body[:3] == b"\xff\xd8\xff"

    read = edge.get(f"/v1/videos/{video['video_id']}").json()  # anonymous read
    assert without_ladder(read) == without_ladder(video)


def test_completing_the_same_upload_twice_returns_the_same_video(edge: Http) -> None:
    user = sign_up(edge)
    data = clip()
    up = uploaded(edge, user, data)
    first = complete(edge, user, up["upload_id"]).json()
    again = complete(edge, user, up["upload_id"], "another caption")
    assert again.status == 200 and without_ladder(again.json()) == without_ladder(first)


def test_head_and_unknown_media_keys(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    video = publish(edge, user)
    request = urllib.request.Request(video["playback_url"], method="HEAD")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
        assert r.status == 200 and int(r.headers["content-length"]) == len(clip())
    unknown = f"http://127.0.0.1:{stack.topo.edge_port}/media/v/{uuid.uuid4()}"
    assert fetch(unknown)[0] == 404


def test_user_videos_are_listed_newest_first_and_paged(edge: Http) -> None:
    user = sign_up(edge)
    published = [publish(edge, user, caption=f"clip {i}")["video_id"] for i in range(5)]
    seen, token = [], ""
    while True:
        page = edge.get(f"/v1/users/{user.user_id}/videos?page_size=2&page_token={token}").json()
        assert len(page["videos"]) <= 2
        seen += [v["video_id"] for v in page["videos"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(published))
    assert edge.get(f"/v1/users/{uuid.uuid4()}/videos").json() == {
        "videos": [],
        "next_page_token": "",
    }


def test_bad_page_token_and_page_size_are_400(edge: Http) -> None:
    user = sign_up(edge)
    r = edge.get(f"/v1/users/{user.user_id}/videos?page_token=garbage")
    assert r.status == 400 and r.json()["message"].startswith("page_token:")
    r = edge.get(f"/v1/users/{user.user_id}/videos?page_size=101")
    assert r.status == 400 and r.json()["message"].startswith("page_size:")


def test_only_the_owner_deletes_and_the_blobs_go_away(edge: Http, stack: Stack) -> None:
    owner, other = sign_up(edge), sign_up(edge)
    video = publish(edge, owner)
    path = f"/v1/videos/{video['video_id']}"
    r = edge.request("DELETE", path, token=other.token)
    assert r.status == 403 and r.json()["code"] == 7
    assert edge.request("DELETE", path).status == 401
    r = edge.request("DELETE", path, token=owner.token)
    assert r.status == 200 and r.json() == {}
    assert edge.get(path).status == 404
    assert edge.request("DELETE", path, token=owner.token).status == 404
    assert edge.get(f"/v1/users/{owner.user_id}/videos").json()["videos"] == []
    key = video["playback_url"].split("/media/", 1)[1]
    eventually(lambda: not object_exists(stack, key), timeout=15)


def test_publish_and_delete_become_events_and_cards(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    video = publish(edge, user)
    client = valkey(stack)

    def settled_card() -> bytes | None:  # rewritten once more when the ladder is ready
        card = client.get(keys.video_card(video["video_id"]))
        ready = card and common_pb2.Video.FromString(card).state == common_pb2.VIDEO_STATE_READY
        return card if ready else None

    card = eventually(settled_card, timeout=30)
    assert common_pb2.Video.FromString(card).caption == video["caption"]

    def events_for(video_id: str) -> list[str]:
        found = []
        for _, fields in client.xrange(keys.EVENTS_STREAM):
            event = events_pb2.Event.FromString(fields[b"event"])
            if event.aggregate_id == video_id:
                found.append(event.type)
        return found

    assert eventually(lambda: events_for(video["video_id"]) == ["video.published"])
    # a lost card is rebuilt from Postgres by the batch read the feed uses
    from tiktok.v1 import upload_pb2, upload_pb2_grpc

    client.delete(keys.video_card(video["video_id"]))
    internal = f"127.0.0.1:{stack.topo.internal_port}"
    with mesh_channel(stack.settings, internal, pki.SERVICE_IDENTITIES["feed"]) as channel:
        upload_pb2_grpc.UploadServiceStub(channel).BatchGetVideos(
            upload_pb2.BatchGetVideosRequest(video_ids=[video["video_id"], str(uuid.uuid4())])
        )
    # written back in the background, after the reply
    eventually(lambda: client.get(keys.video_card(video["video_id"])) == card)
    edge.request("DELETE", f"/v1/videos/{video['video_id']}", token=user.token)
    eventually(lambda: events_for(video["video_id"]) == ["video.published", "video.deleted"])
    assert client.get(keys.video_card(video["video_id"])) is None


# --- storage refuses what the ticket does not allow -------------------------------------------


def test_storage_refuses_anonymous_tampered_and_mislabelled_puts(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    data = clip()
    up = ticket(edge, user, len(data))
    url, headers = up["upload_url"], up["upload_headers"]
    anonymous = url.split("?", 1)[0]
    assert put(anonymous, data, {"Content-Type": "video/mp4"}) == 403
    other_key = url.replace(up["upload_id"], str(uuid.uuid4()))
    assert put(other_key, data, headers) == 403
    assert put(url, data, {**headers, "Content-Type": "video/webm"}) == 403
    tampered = url.replace("X-Amz-Expires=900", "X-Amz-Expires=90000")
    assert put(tampered, data, headers) == 403
    media = f"http://127.0.0.1:{stack.topo.edge_port}/media/{upload_key(up['upload_id'])}"
    assert put(media, data, headers) in (404, 405)
    assert not object_exists(stack, upload_key(up["upload_id"]))


def test_an_expired_upload_url_is_refused(edge: Http, stack: Stack) -> None:
    presigner = s3_client(stack.settings, endpoint=stack.settings.s3_public_url)
    key = f"v/{uuid.uuid4()}"
    url = presigner.generate_presigned_url(
        "put_object",
        Params={"Bucket": stack.settings.s3_bucket, "Key": key, "ContentType": "video/mp4"},
        ExpiresIn=1,
    )
    signed_at = time.time()
    eventually(lambda: time.time() > signed_at + 2, timeout=5)  # let the URL expire
    assert put(url, b"x", {"Content-Type": "video/mp4"}) == 403
    assert not object_exists(stack, key)


# --- bad input: each a 4xx naming the problem, nothing published, nothing left ---------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content_type": "video/avi", "size_bytes": 1000}, "content_type"),
        ({"content_type": "image/png", "size_bytes": 1000}, "content_type"),
        ({"size_bytes": 1000}, "content_type"),
        ({"content_type": "video/mp4", "size_bytes": 0}, "size_bytes"),
        ({"content_type": "video/mp4", "size_bytes": 64 * 1024 * 1024 + 1}, "size_bytes"),
        ({"content_type": "video/mp4", "size_bytes": -5}, "size_bytes"),
    ],
)
def test_bad_tickets_are_400_naming_the_field(edge: Http, body: dict, field: str) -> None:
    user = sign_up(edge)
    r = edge.post("/v1/uploads", body, token=user.token)
    assert r.status == 400, r.body
    assert r.json()["message"].startswith(f"{field}:")


def test_tickets_need_a_token(edge: Http) -> None:
    assert edge.post("/v1/uploads", {"content_type": "video/mp4", "size_bytes": 10}).status == 401
    assert edge.post("/v1/videos", {"upload_id": str(uuid.uuid4())}).status == 401


def test_caption_over_2200_characters_is_400(edge: Http) -> None:
    user = sign_up(edge)
    up = uploaded(edge, user, clip())
    r = complete(edge, user, up["upload_id"], "x" * 2201)
    assert r.status == 400 and r.json()["message"].startswith("caption:")
    assert complete(edge, user, up["upload_id"], "é" * 2200).status == 200


def test_unknown_and_malformed_upload_ids(edge: Http) -> None:
    user = sign_up(edge)
    r = complete(edge, user, str(uuid.uuid4()))
    assert r.status == 404 and r.json()["code"] == 5
    r = complete(edge, user, "not-a-uuid")
    assert r.status == 400 and r.json()["message"].startswith("upload_id:")


def test_an_expired_ticket_is_404(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    up = uploaded(edge, user, clip())
    expire_ticket(stack, up["upload_id"])
    r = complete(edge, user, up["upload_id"])
    assert r.status == 404 and "expired" in r.json()["message"]


def test_another_users_upload_is_not_found(edge: Http) -> None:
    owner, thief = sign_up(edge), sign_up(edge)
    up = ticket(edge, owner, len(clip()))
    assert put(up["upload_url"], clip(), up["upload_headers"]) == 200
    assert complete(edge, thief, up["upload_id"]).status == 404
    assert complete(edge, owner, up["upload_id"]).status == 200  # untouched for its owner


def test_completing_before_the_bytes_arrive_is_400_and_can_be_retried(edge: Http) -> None:
    user = sign_up(edge)
    up = ticket(edge, user, len(clip()))
    r = complete(edge, user, up["upload_id"])
    assert r.status == 400 and "PUT the bytes" in r.json()["message"]
    assert put(up["upload_url"], clip(), up["upload_headers"]) == 200
    assert complete(edge, user, up["upload_id"]).status == 200


def _rejected(edge: Http, stack: Stack, data: bytes, declared: int | None = None) -> str:
    """Uploads ``data`` (declaring ``declared`` bytes), completes it, and checks nothing is left."""
    user = sign_up(edge)
    up = ticket(edge, user, declared or len(data))
    assert put(up["upload_url"], data, up["upload_headers"]) == 200
    r = complete(edge, user, up["upload_id"])
    assert r.status == 400, r.body
    message = r.json()["message"]
    assert message.startswith("upload_id:")
    assert not object_exists(stack, upload_key(up["upload_id"]))
    assert edge.get(f"/v1/users/{user.user_id}/videos").json()["videos"] == []
    again = complete(edge, user, up["upload_id"])  # the ticket stays rejected
    assert again.status == 400 and "rejected" in again.json()["message"]
    return message


def test_size_different_from_declared_is_rejected(edge: Http, stack: Stack) -> None:
    assert "declared" in _rejected(edge, stack, clip(), declared=len(clip()) + 1)


def test_zero_length_file_is_rejected(edge: Http, stack: Stack) -> None:
    assert "0 bytes were uploaded" in _rejected(edge, stack, b"", declared=1000)


def test_random_bytes_labelled_mp4_are_rejected(edge: Http, stack: Stack) -> None:
    assert "not a video" in _rejected(edge, stack, os.urandom(50_000))


def test_png_renamed_mp4_is_rejected(edge: Http, stack: Stack) -> None:
    assert "png" in _rejected(edge, stack, make_png())


def test_clip_of_70_seconds_is_rejected(edge: Http, stack: Stack) -> None:
    long_clip = make_clip(70, width=64, height=48, fps=2)
    assert "70.0 s" in _rejected(edge, stack, long_clip)


def test_webm_is_accepted_when_declared_as_webm(edge: Http) -> None:
    user = sign_up(edge)
    data = make_clip(1, fmt="webm")
    up = ticket(edge, user, len(data), "video/webm")
    assert put(up["upload_url"], data, up["upload_headers"]) == 200
    assert complete(edge, user, up["upload_id"]).status == 200


def test_malformed_video_ids_are_400(edge: Http) -> None:
    assert edge.get("/v1/videos/nope").json()["message"].startswith("video_id:")
    assert edge.get(f"/v1/videos/{uuid.uuid4()}").status == 404


# --- the client-streaming UploadVideo (internal listener) ------------------------------------


def _stream(
    internal_channel: Any, user_id: str, data: bytes, *, declared: int | None = None,
    content_type: str = "video/mp4", chunk: int = 256 * 1024,
) -> Any:  # fmt: skip
    from tiktok.v1 import upload_pb2, upload_pb2_grpc

    def messages() -> Any:
        yield upload_pb2.UploadVideoRequest(
            metadata=upload_pb2.UploadVideoMetadata(
                content_type=content_type,
                size_bytes=len(data) if declared is None else declared,
                caption="streamed",
            )
        )
        for i in range(0, len(data), chunk):
            yield upload_pb2.UploadVideoRequest(chunk=data[i : i + chunk])

    stub = upload_pb2_grpc.UploadServiceStub(internal_channel)
    return stub.UploadVideo(messages(), metadata=[("x-user-id", user_id)], timeout=60)


def test_streamed_upload_publishes_the_same_video(edge: Http, internal_channel: Any) -> None:
    user = sign_up(edge)
    data = make_clip(3, width=320, height=240)
    video = _stream(internal_channel, user.user_id, data, chunk=4096)
    assert video.creator_id == user.user_id and video.duration_ms == 3000
    status, _, body = fetch(video.playback_url)
    assert status == 200 and body == data
    assert edge.get(f"/v1/videos/{video.video_id}").json()["caption"] == "streamed"


def test_streamed_upload_rejects_bad_streams(edge: Http, internal_channel: Any) -> None:
    import grpc

    user = sign_up(edge)
    data = clip()
    for kwargs, field in (
        ({"declared": len(data) - 1}, "chunk"),
        ({"declared": len(data) + 1}, "size_bytes"),
        ({"content_type": "video/avi"}, "content_type"),
        ({"chunk": 2 * 1024 * 1024, "declared": None}, None),
    ):
        payload = os.urandom(3 * 1024 * 1024) if field is None else data
        with pytest.raises(grpc.RpcError) as e:
            _stream(internal_channel, user.user_id, payload, **kwargs)
        assert e.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
        ), e.value  # fmt: skip
        if field:
            assert e.value.details().startswith(f"{field}:")
    assert edge.get(f"/v1/users/{user.user_id}/videos").json()["videos"] == []
    with pytest.raises(grpc.RpcError) as e:
        _stream(internal_channel, "", data)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_upload_flow_with_generated_stubs_through_the_edge(edge: Http, edge_channel: Any) -> None:
    from tiktok.v1 import upload_pb2, upload_pb2_grpc

    user = sign_up(edge)
    auth = [("authorization", f"Bearer {user.token}")]
    stub = upload_pb2_grpc.UploadServiceStub(edge_channel)
    data = clip()
    up = stub.CreateUpload(
        upload_pb2.CreateUploadRequest(content_type="video/mp4", size_bytes=len(data)),
        metadata=auth,
    )
    assert put(up.upload_url, data, dict(up.upload_headers)) == 200
    video = stub.CreateVideo(
        upload_pb2.CreateVideoRequest(upload_id=up.upload_id, caption="via stubs"), metadata=auth
    )
    assert video.caption == "via stubs" and video.size_bytes == len(data)
    read = stub.GetVideo(upload_pb2.GetVideoRequest(video_id=video.video_id))
    for message in (read, video):
        for field in LADDER_FIELDS:
            message.ClearField(field)
    assert read == video
    listed = stub.ListUserVideos(upload_pb2.ListUserVideosRequest(user_id=user.user_id))
    assert [v.video_id for v in listed.videos] == [video.video_id]


def run_janitor(stack: Stack, job: str) -> None:
    """Runs one of upload_svc's sweeps now, against the stack's database and bucket."""
    import asyncio

    from mesh.db import open_pool
    from upload_svc import janitor
    from upload_svc.storage import Storage

    async def sweep() -> None:
        pool = await open_pool(stack.settings.database_url, "upload", max_size=1)
        try:
            client = s3_client(stack.settings)
            storage = Storage(client, client, stack.settings.s3_bucket, stack.settings.cdn_base_url)
            await getattr(janitor, job)(pool, storage)
        finally:
            await pool.close()

    asyncio.run(sweep())


def test_sweeper_removes_expired_tickets_and_their_objects(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    up = uploaded(edge, user, clip())
    expire_ticket(stack, up["upload_id"])
    run_janitor(stack, "sweep_expired_uploads")
    assert not object_exists(stack, upload_key(up["upload_id"]))
    with psycopg.connect(stack.settings.database_url) as conn:
        row = conn.execute(
            "SELECT 1 FROM upload.uploads WHERE upload_id = %s", [up["upload_id"]]
        ).fetchone()
    assert row is None
    assert complete(edge, user, up["upload_id"]).status == 404


def test_an_upload_put_again_after_publish_is_swept_once_its_url_expired(
    edge: Http, stack: Stack
) -> None:
    user = sign_up(edge)
    data = clip()
    up = uploaded(edge, user, data)
    video = complete(edge, user, up["upload_id"]).json()
    assert put(up["upload_url"], data, up["upload_headers"]) == 200  # the URL is still valid
    assert object_exists(stack, upload_key(up["upload_id"]))
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE upload.uploads SET created_at = now() - interval '1 hour' WHERE upload_id = %s",
            [up["upload_id"]],
        )
    run_janitor(stack, "sweep_reused_upload_urls")
    assert not object_exists(stack, upload_key(up["upload_id"]))
    assert fetch(video["playback_url"])[1:] and fetch(video["playback_url"])[0] == 200


def test_a_still_valid_upload_url_cannot_change_a_published_video(edge: Http) -> None:
    user = sign_up(edge)
    data = clip()
    up = uploaded(edge, user, data)
    video = complete(edge, user, up["upload_id"]).json()
    # the URL is valid for 15 minutes: re-PUTting different bytes must not reach the video
    put(up["upload_url"], os.urandom(len(data)), up["upload_headers"])
    assert fetch(video["playback_url"])[2] == data
    assert complete(edge, user, up["upload_id"]).json() == video


def test_control_characters_and_forged_tokens_are_400_not_500(edge: Http) -> None:
    import base64
    import json as _json

    user = sign_up(edge)
    up = uploaded(edge, user, clip())
    r = complete(edge, user, up["upload_id"], "bad\u0000caption")
    assert r.status == 400 and r.json()["message"].startswith("caption:")
    assert complete(edge, user, up["upload_id"], "multi\nline\tcaption").status == 200
    forged = base64.urlsafe_b64encode(
        _json.dumps({"k": f"videos:{user.user_id}", "p": [5]}).encode()
    ).decode()
    r = edge.get(f"/v1/users/{user.user_id}/videos?page_token={forged}")
    assert r.status == 400 and r.json()["message"].startswith("page_token:")
