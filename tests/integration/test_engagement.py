"""Likes, favorites and comments through the edge, and the counters applied from their events:
exact under concurrency, under redelivery and across a killed consumer."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest

from activity_svc.counters import GROUP, prune_applied_events
from mesh import keys, pki
from mesh.clients import redis_client
from mesh.db import open_pool
from stack.launcher import Stack
from tests.conftest import InternalChannels
from tests.helpers import (
    UNKNOWN_ID,
    Http,
    SignedUpUser,
    eventually,
    in_parallel,
    sign_up,
    sign_up_many,
    valkey,
    walk,
)
from tests.videos import publish
from tiktok.v1 import activity_pb2, activity_pb2_grpc, events_pb2


@pytest.fixture
def internal_channel(internal: InternalChannels) -> grpc.Channel:
    """The feed service's identity: a caller of BatchGetVideoCounts."""
    return internal(pki.SERVICE_IDENTITIES["feed"])


def like(http: Http, user: SignedUpUser, video_id: str):
    return http.post("/v1/likes", {"video_id": video_id}, token=user.token)


def video_counts(http: Http, video_id: str) -> tuple[int, int, int]:
    body = http.get(f"/v1/videos/{video_id}").json()
    return int(body["like_count"]), int(body["comment_count"]), int(body["favorite_count"])


def comment(http: Http, user: SignedUpUser, video_id: str, text: str):
    return http.post(f"/v1/videos/{video_id}/comments", {"text": text}, token=user.token)


# --- counters under concurrency ----------------------------------------------------------------


def test_fifty_users_liking_one_video_in_parallel_count_fifty(edge: Http) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    fans = sign_up_many(edge.port, 50, "fan")
    replies = in_parallel(edge.port, [lambda h, f=f: like(h, f, video["video_id"]) for f in fans])
    assert [r.status for r in replies] == [200] * 50
    eventually(lambda: video_counts(edge, video["video_id"]) == (50, 0, 0))


def test_one_user_liking_twenty_times_in_parallel_counts_once(edge: Http) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    fan = sign_up(edge, "fan")
    replies = in_parallel(edge.port, [lambda h: like(h, fan, video["video_id"])] * 20)
    assert {r.status for r in replies} == {200}
    assert len({r.json()["created_at"] for r in replies}) == 1  # one like, returned 20 times
    eventually(lambda: video_counts(edge, video["video_id"]) == (1, 0, 0))
    liked = edge.get(f"/v1/users/{fan.user_id}/likes").json()["videos"]
    assert [v["video_id"] for v in liked] == [video["video_id"]]


def test_counts_stay_exact_when_a_consumer_is_killed_mid_stream(edge: Http, stack: Stack) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    fans = sign_up_many(edge.port, 40, "fan")
    victim = stack.services["activity_svc-1"]
    calls = [lambda h, f=f: like(h, f, video["video_id"]) for f in fans]
    calls.insert(10, lambda h: victim.kill())  # SIGKILL: no drain, entries left unacknowledged
    try:
        in_parallel(edge.port, calls, workers=8)
    finally:
        stack.restart_service("activity_svc-1")
    # a like that failed with the instance may or may not have landed: like again (a no-op for
    # those that did), so exactly 40 likes exist, and the count must say so
    again = in_parallel(edge.port, [lambda h, f=f: like(h, f, video["video_id"]) for f in fans])
    assert {r.status for r in again} == {200}
    eventually(lambda: video_counts(edge, video["video_id"]) == (40, 0, 0), timeout=20)


def test_redelivered_events_are_not_counted_twice(edge: Http, stack: Stack) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    fan = sign_up(edge, "fan")
    assert like(edge, fan, video["video_id"]).status == 200
    eventually(lambda: video_counts(edge, video["video_id"]) == (1, 0, 0))
    r = valkey(stack)
    try:
        entries = r.xrevrange(keys.EVENTS_STREAM, count=200)
        like_entry = next(
            fields
            for _, fields in entries
            if fields[b"type"] == b"like.created"
            and events_pb2.Event.FromString(fields[b"event"]).like.video_id == video["video_id"]
        )
        # the relay sending an event twice, read by a consumer that then dies without XACK; in
        # one transaction, so the live consumers (blocked on the stream) cannot take them first
        pipe = r.pipeline(transaction=True)
        pipe.xadd(keys.EVENTS_STREAM, like_entry)
        pipe.xreadgroup(GROUP, "dead-consumer", {keys.EVENTS_STREAM: ">"}, count=1)
        pipe.xadd(keys.EVENTS_STREAM, like_entry)  # this copy goes to a live consumer
        dead = pipe.execute()[1]
        # a cluster's transaction replies in RESP3's shape: {stream: entries}
        read = next(iter(dead.values())) if isinstance(dead, dict) else dead[0][1]
        assert len(read) == 1  # pending on the dead consumer; a live one must claim it
        # a like after that: applied only once the claimed entries before it were handled
        other = sign_up(edge, "other")
        assert like(edge, other, video["video_id"]).status == 200
        eventually(lambda: video_counts(edge, video["video_id"]) == (2, 0, 0), timeout=20)
        eventually(lambda: r.xpending(keys.EVENTS_STREAM, GROUP)["pending"] == 0, timeout=20)
        assert video_counts(edge, video["video_id"]) == (2, 0, 0)
    finally:
        r.close()


# --- likes and favorites -----------------------------------------------------------------------


def test_like_and_favorite_mistakes_are_named(edge: Http) -> None:
    creator = sign_up(edge, "creator")
    video = publish(edge, creator)
    fan = sign_up(edge, "fan")
    for path in ("/v1/likes", "/v1/favorites"):
        r = edge.post(path, {"video_id": UNKNOWN_ID}, token=fan.token)
        assert r.status == 404
        assert UNKNOWN_ID in r.json()["message"]
        for bad in ("", "xyz"):
            r = edge.post(path, {"video_id": bad}, token=fan.token)
            assert r.status == 400
            assert r.json()["message"].startswith("video_id:")
        assert edge.post(path, {"video_id": video["video_id"]}).status == 401
        assert edge.request("DELETE", f"{path}/xyz", token=fan.token).status == 400
        # removing what is not there succeeds
        assert edge.request("DELETE", f"{path}/{UNKNOWN_ID}", token=fan.token).status == 200
    assert edge.get("/v1/users/xyz/likes").json()["message"].startswith("user_id:")
    assert edge.get(f"/v1/users/{UNKNOWN_ID}/likes").status == 404
    # a deleted video can no longer be liked
    assert edge.request("DELETE", f"/v1/videos/{video['video_id']}", token=creator.token).status
    r = like(edge, fan, video["video_id"])
    assert r.status == 404


def test_liked_videos_are_newest_first_paged_hydrated_and_leave_deleted_out(edge: Http) -> None:
    creator = sign_up(edge, "creator")
    videos = [publish(edge, creator, caption=f"v{i}") for i in range(5)]
    fan = sign_up(edge, "fan")
    for v in videos:
        assert like(edge, fan, v["video_id"]).status == 200
    liked = walk(edge, f"/v1/users/{fan.user_id}/likes", "videos", 2)
    assert [v["video_id"] for v in liked] == [v["video_id"] for v in reversed(videos)]
    assert liked[0]["playback_url"] == videos[-1]["playback_url"]
    eventually(
        lambda: edge.get(f"/v1/users/{fan.user_id}/likes").json()["videos"][0]["like_count"] == "1"
    )
    # deleted videos are left out, and pages still fill up around them
    for v in videos[2:4]:
        assert edge.request("DELETE", f"/v1/videos/{v['video_id']}", token=creator.token).status
    page = edge.get(f"/v1/users/{fan.user_id}/likes?page_size=2").json()
    assert [v["video_id"] for v in page["videos"]] == [videos[4]["video_id"], videos[1]["video_id"]]
    rest = edge.get(
        f"/v1/users/{fan.user_id}/likes?page_size=2&page_token={page['next_page_token']}"
    ).json()
    assert [v["video_id"] for v in rest["videos"]] == [videos[0]["video_id"]]
    assert rest["next_page_token"] == ""


def test_favorites_are_private_and_counted(edge: Http) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    owner, stranger = sign_up(edge, "owner"), sign_up(edge, "stranger")
    r = edge.post("/v1/favorites", {"video_id": video["video_id"]}, token=owner.token)
    assert r.status == 200
    assert r.json()["user_id"] == owner.user_id
    path = f"/v1/users/{owner.user_id}/favorites"
    assert edge.get(path).status == 401
    r = edge.get(path, token=stranger.token)
    assert r.status == 403
    assert "private" in r.json()["message"]
    r = edge.get(path, token=owner.token)
    assert [v["video_id"] for v in r.json()["videos"]] == [video["video_id"]]
    eventually(lambda: video_counts(edge, video["video_id"]) == (0, 0, 1))
    assert edge.request("DELETE", f"/v1/favorites/{video['video_id']}", token=owner.token).status
    eventually(lambda: video_counts(edge, video["video_id"]) == (0, 0, 0))
    assert edge.get(path, token=owner.token).json()["videos"] == []


# --- comments ----------------------------------------------------------------------------------


def test_comments_are_listed_newest_first_and_every_page_walks_once(edge: Http) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    author = sign_up(edge, "author")
    texts = [f"comment {i} ✨" for i in range(7)]
    created = [comment(edge, author, video["video_id"], t).json() for t in texts]
    assert created[0]["author_id"] == author.user_id
    assert created[0]["text"] == texts[0]
    listed = walk(edge, f"/v1/videos/{video['video_id']}/comments", "comments", 3)
    assert [c["comment_id"] for c in listed] == [c["comment_id"] for c in reversed(created)]
    eventually(lambda: video_counts(edge, video["video_id"]) == (0, 7, 0))


def test_only_the_author_or_the_video_creator_deletes_a_comment(edge: Http) -> None:
    creator = sign_up(edge, "creator")
    video = publish(edge, creator)
    author, third = sign_up(edge, "author"), sign_up(edge, "third")
    first = comment(edge, author, video["video_id"], "first").json()
    second = comment(edge, author, video["video_id"], "second").json()
    base = f"/v1/videos/{video['video_id']}/comments"
    r = edge.request("DELETE", f"{base}/{first['comment_id']}", token=third.token)
    assert r.status == 403
    assert edge.request("DELETE", f"{base}/{first['comment_id']}", token=author.token).status == 200
    r = edge.request("DELETE", f"{base}/{second['comment_id']}", token=creator.token)
    assert r.status == 200
    # already deleted: NOT_FOUND, so a retry after success says so
    r = edge.request("DELETE", f"{base}/{second['comment_id']}", token=creator.token)
    assert r.status == 404
    assert edge.get(base).json()["comments"] == []
    eventually(lambda: video_counts(edge, video["video_id"]) == (0, 0, 0))


def test_comment_mistakes_are_named(edge: Http) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    author = sign_up(edge, "author")
    for text in ("", "   ", "x" * 501, "nul\x00byte"):
        r = comment(edge, author, video["video_id"], text)
        assert r.status == 400, text
        assert r.json()["message"].startswith("text:")
    assert comment(edge, author, video["video_id"], "é" * 500).status == 200  # code points
    assert comment(edge, author, UNKNOWN_ID, "hello").status == 404
    r = comment(edge, author, "xyz", "hello")
    assert r.status == 400
    assert r.json()["message"].startswith("video_id:")
    r = edge.request("DELETE", f"/v1/videos/{video['video_id']}/comments/xyz", token=author.token)
    assert r.json()["message"].startswith("comment_id:")
    r = edge.request(
        "DELETE", f"/v1/videos/{video['video_id']}/comments/{UNKNOWN_ID}", token=author.token
    )
    assert r.status == 404
    assert edge.get(f"/v1/videos/{UNKNOWN_ID}/comments").status == 404
    assert edge.post(f"/v1/videos/{video['video_id']}/comments", {"text": "hi"}).status == 401


# --- events and internal reads -----------------------------------------------------------------


def test_each_change_is_one_event_and_repeats_are_none(edge: Http, stack: Stack) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    fan = sign_up(edge, "fan")
    vid = video["video_id"]
    like(edge, fan, vid)
    like(edge, fan, vid)
    edge.post("/v1/favorites", {"video_id": vid}, token=fan.token)
    c = comment(edge, fan, vid, "hi").json()
    edge.request("DELETE", f"/v1/videos/{vid}/comments/{c['comment_id']}", token=fan.token)
    edge.request("DELETE", f"/v1/likes/{vid}", token=fan.token)
    edge.request("DELETE", f"/v1/likes/{vid}", token=fan.token)
    expected = [
        "like.created",
        "favorite.created",
        "comment.created",
        "comment.deleted",
        "like.deleted",
    ]
    r = valkey(stack)

    def events_of_video() -> list[str]:
        found = []
        for _, fields in r.xrange(keys.EVENTS_STREAM):
            event = events_pb2.Event.FromString(fields[b"event"])
            if event.aggregate_id == vid and event.type != "video.published":
                found.append(event.type)
        return found

    try:
        eventually(lambda: events_of_video() == expected)
    finally:
        r.close()


def test_internal_video_counts(edge: Http, internal_channel: grpc.Channel) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    other = publish(edge, sign_up(edge, "creator"))
    fan = sign_up(edge, "fan")
    like(edge, fan, other["video_id"])
    like(edge, fan, video["video_id"])
    stub = activity_pb2_grpc.ActivityServiceStub(internal_channel)

    def counted():
        reply = stub.BatchGetVideoCounts(
            activity_pb2.BatchGetVideoCountsRequest(
                video_ids=[video["video_id"], video["video_id"], str(uuid.uuid4())]
            )
        )
        return {c.video_id: c.like_count for c in reply.counts}

    eventually(lambda: len(counted()) == 2 and counted()[video["video_id"]] == 1)


def test_likes_work_over_grpc_through_the_edge(edge: Http, edge_channel: grpc.Channel) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    fan = sign_up(edge, "fan")
    stub = activity_pb2_grpc.ActivityServiceStub(edge_channel)
    auth = (("authorization", f"Bearer {fan.token}"),)
    reply = stub.CreateLike(
        activity_pb2.CreateLikeRequest(video_id=video["video_id"]), metadata=auth
    )
    assert reply.user_id == fan.user_id
    listed = stub.ListLikedVideos(activity_pb2.ListLikedVideosRequest(user_id=fan.user_id))
    assert [v.video_id for v in listed.videos] == [video["video_id"]]
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateLike(activity_pb2.CreateLikeRequest(video_id=UNKNOWN_ID), metadata=auth)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stub.ListFavoriteVideos(
            activity_pb2.ListFavoriteVideosRequest(user_id=str(uuid.uuid4())), metadata=auth
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_count_repaired_before_the_first_like_does_not_hide_it(
    edge: Http, stack: Stack, internal_channel: grpc.Channel
) -> None:
    """A video counted for the first time after read repair mirrored it as zeros (an old video,
    or its first like in the same batch as its publication) must still show its count."""
    video = publish(edge, sign_up(edge, "creator"))
    vid = video["video_id"]
    eventually(lambda: stack_redis_has(stack, keys.video_counts(vid)))
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM activity.video_counters WHERE video_id = %s", [vid])
    r = valkey(stack)
    try:
        r.delete(keys.video_counts(vid))
    finally:
        r.close()
    stub = activity_pb2_grpc.ActivityServiceStub(internal_channel)
    stub.BatchGetVideoCounts(activity_pb2.BatchGetVideoCountsRequest(video_ids=[vid]))
    assert like(edge, sign_up(edge, "fan"), vid).status == 200
    eventually(lambda: video_counts(edge, vid) == (1, 0, 0))


def stack_redis_has(stack: Stack, key: str) -> bool:
    r = valkey(stack)
    try:
        return bool(r.exists(key))
    finally:
        r.close()


def test_pruning_forgets_only_ids_no_redelivery_can_bring_back(stack: Stack) -> None:
    old, recent = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO activity.applied_events (event_id, applied_at) VALUES"
            " (%s, now() - interval '2 days'), (%s, now())",
            [old, recent],
        )

    async def prune() -> int:
        pool = await open_pool(stack.settings.database_url, "activity", max_size=1)
        client = redis_client(stack.settings.redis_url, cluster=stack.settings.redis_cluster)
        try:
            return await prune_applied_events(pool, client)
        finally:
            await client.aclose()
            await pool.close()

    assert asyncio.run(prune()) >= 1
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        left = {
            r[0]
            for r in conn.execute(
                "SELECT event_id FROM activity.applied_events WHERE event_id = ANY(%s)",
                [[old, recent]],
            ).fetchall()
        }
    assert left == {recent}
