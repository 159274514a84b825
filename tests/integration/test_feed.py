"""The feeds through the edge: every rule of DESIGN.md's "Feed rules", the cold path, the hot
creator (pulled, not pushed) and the for-you list."""

from __future__ import annotations

import base64
import collections
import json

import grpc
import psycopg
import pytest

from mesh import keys, pki
from readmodels.feed import GLOBAL_FEED_USER
from stack.launcher import Stack, mesh_channel
from tests.feeds import feed, follow, ids
from tests.helpers import Http, eventually, sign_up, sign_up_many, valkey
from tests.videos import READY, publish
from tiktok.v1 import feed_pb2, feed_pb2_grpc


def test_a_followed_creators_new_video_is_in_the_next_page_within_2_s(edge: Http) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    video = publish(edge, creator)
    page = eventually(lambda: (p := feed(edge, fan)) and video["video_id"] in ids(p) and p, 2.0)
    item = page["items"][ids(page).index(video["video_id"])]
    assert item["playback_url"] == video["playback_url"]  # hydrated from the card
    assert "like_count" in item


def test_following_feed_is_newest_first_without_own_or_deleted_videos(edge: Http) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    first, second = publish(edge, creator), publish(edge, creator)
    own = publish(edge, fan)
    eventually(lambda: ids(feed(edge, fan))[:2] == [second["video_id"], first["video_id"]])
    assert own["video_id"] not in ids(feed(edge, fan))
    r = edge.request("DELETE", f"/v1/videos/{second['video_id']}", token=creator.token)
    assert r.status == 200
    assert ids(feed(edge, fan)) == [first["video_id"]]  # at once: a deleted video has no card


def test_an_unfollowed_creator_leaves_the_feed_within_2_s(edge: Http) -> None:
    creator, other, fan = sign_up(edge, "creator"), sign_up(edge, "other"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    follow(edge, fan, other)
    gone, kept = publish(edge, creator), publish(edge, other)
    eventually(lambda: set(ids(feed(edge, fan))) == {gone["video_id"], kept["video_id"]})
    assert edge.request("DELETE", f"/v1/follows/{creator.user_id}", token=fan.token).status == 200
    eventually(lambda: ids(feed(edge, fan)) == [kept["video_id"]], 2.0)


def test_following_someone_brings_their_recent_videos(edge: Http) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    videos = [publish(edge, creator) for _ in range(3)]
    follow(edge, fan, creator)
    eventually(lambda: ids(feed(edge, fan)) == [v["video_id"] for v in reversed(videos)], 2.0)


def test_a_session_never_repeats_a_video_and_a_retried_cursor_gets_the_same_page(
    edge: Http,
) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    videos = [publish(edge, creator) for _ in range(7)]
    # settled: a card changes once more, when its video's ladder is ready
    eventually(
        lambda: [v["state"] for v in feed(edge, fan, page_size=50)["items"]] == [READY] * 7, 30
    )
    served, cursor, pages = [], "", []
    for _ in range(10):
        page = feed(edge, fan, page_size=3, cursor=cursor)
        served += ids(page)
        pages.append((cursor, page))
        cursor = page["next_cursor"]
        if not cursor:  # the session has nothing more to serve
            break
    assert [len(p["items"]) for _, p in pages] == [3, 3, 1]
    assert sorted(served) == sorted(v["video_id"] for v in videos)
    assert len(served) == len(set(served))
    for cursor, page in pages:  # a retried cursor gets the same answer, not the next page
        assert feed(edge, fan, page_size=3, cursor=cursor) == page if cursor else True


def test_feed_rules_on_tokens_and_bad_input(edge: Http) -> None:
    fan, other = sign_up(edge, "fan"), sign_up(edge, "other")
    assert edge.get("/v1/feed?kind=following").status == 401
    assert edge.get(f"/v1/feed?user_id={fan.user_id}").status == 401
    r = edge.get(f"/v1/feed?kind=following&user_id={other.user_id}", token=fan.token)
    assert r.status == 403
    assert feed(edge, fan, user_id=fan.user_id)["items"] == []  # the seed's ?user_id= still works
    for query, field in (
        ("kind=trending", "kind:"),
        ("kind=following&page_size=51", "page_size:"),
        ("kind=following&cursor=garbage", "cursor:"),
        ("kind=following&user_id=nope", "user_id:"),
    ):
        r = edge.get(f"/v1/feed?{query}", token=fan.token)
        assert r.status == 400, query
        assert r.json()["message"].startswith(field)
    # a for-you cursor is not a following cursor
    for_you = feed(edge, None, "for_you")
    if for_you["next_cursor"]:
        r = edge.get(f"/v1/feed?kind=following&cursor={for_you['next_cursor']}", token=fan.token)
        assert r.status == 400


def _edited(token: str) -> str:
    """``token`` with its position changed and its tag kept, as a client tampering would."""
    body, _, tag = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["p"][-1] = 10**9 if isinstance(data["p"][-1], int) else "ffffffff"
    raw = json.dumps(data, separators=(",", ":")).encode()
    return f"{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{tag}"


def test_edited_cursors_and_page_tokens_are_400(edge: Http) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    for _ in range(2):
        publish(edge, creator)
    eventually(lambda: len(ids(feed(edge, fan))) == 2)
    cursor = feed(edge, fan, page_size=1)["next_cursor"]
    assert feed(edge, fan, page_size=1, cursor=cursor)["items"]  # the genuine one works
    r = edge.get(f"/v1/feed?kind=following&page_size=1&cursor={_edited(cursor)}", token=fan.token)
    assert r.status == 400 and r.json()["message"].startswith("cursor:")
    videos = f"/v1/users/{creator.user_id}/videos?page_size=1"
    token = edge.get(videos).json()["next_page_token"]
    assert edge.get(f"{videos}&page_token={token}").status == 200
    r = edge.get(f"{videos}&page_token={_edited(token)}")
    assert r.status == 400 and r.json()["message"].startswith("page_token:")


def test_for_you_works_anonymously_with_creator_diversity(edge: Http) -> None:
    creator = sign_up(edge, "prolific")
    videos = {publish(edge, creator)["video_id"] for _ in range(4)}
    # the ranking is refreshed every few seconds
    eventually(lambda: videos & set(ids(feed(edge, None, "for_you", page_size=50))), 15.0)
    cursor = ""
    for _ in range(20):
        page = feed(edge, None, "for_you", page_size=10, cursor=cursor)
        per_creator = collections.Counter(v["creator_id"] for v in page["items"])
        assert max(per_creator.values(), default=0) <= 2
        cursor = page["next_cursor"]
        if not cursor:
            break


def test_a_hot_creators_video_still_reaches_followers(edge: Http, stack: Stack) -> None:
    star = sign_up(edge, "star")
    fans = sign_up_many(edge.port, 3, "fan")
    for fan in fans:
        follow(edge, fan, star)
    eventually(lambda: int(edge.get(f"/v1/users/{star.user_id}").json()["follower_count"]) == 3)
    # the star gets famous: above HOT_CREATOR_FOLLOWERS (10,000), their videos are not pushed
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE activity.user_counters SET follower_count = follower_count + 50000"
            " WHERE user_id = %s",
            [star.user_id],
        )
    video = publish(edge, star)
    for fan in fans:  # not pushed; merged in when the queue is refilled, which reads ask for
        eventually(lambda fan=fan: video["video_id"] in ids(feed(edge, fan)), 5.0)
    pulled = eventually(lambda: _metric(edge, stack, "hot_creator_pulled"))
    assert pulled >= 1


def _metric(edge: Http, stack: Stack, outcome: str) -> float:
    metrics = Http(stack.topo.instances_of("precache")[0].metrics_port)
    try:
        body = metrics.get("/metrics").body.decode()
    finally:
        metrics.close()
    for line in body.splitlines():
        if line.startswith("precache_events_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_missing_queue_is_served_from_the_replica_and_rebuilt(edge: Http, stack: Stack) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    videos = [publish(edge, creator) for _ in range(3)]
    # settled: a card changes once more, when its video's ladder is ready
    eventually(lambda: [v["state"] for v in feed(edge, fan)["items"]] == [READY] * 3, 30)
    r = valkey(stack)
    try:
        r.delete(keys.feed_queue(fan.user_id, "following"))
        page = feed(edge, fan, page_size=2)
        assert ids(page) == [videos[2]["video_id"], videos[1]["video_id"]]
        # a retried cold cursor answers as the first time
        assert feed(edge, fan, page_size=2, cursor=page["next_cursor"]) == feed(
            edge, fan, page_size=2, cursor=page["next_cursor"]
        )
        rest = feed(edge, fan, page_size=2, cursor=page["next_cursor"])
        assert ids(rest) == [videos[0]["video_id"]]
        # as the fan keeps reading (a read of a missing queue asks for it), it is rebuilt
        eventually(lambda: feed(edge, fan) and r.exists(keys.feed_queue(fan.user_id, "following")))
    finally:
        r.close()


def test_the_feed_over_grpc_through_the_edge(edge: Http, edge_channel: grpc.Channel) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    video = publish(edge, creator)
    stub = feed_pb2_grpc.FeedServiceStub(edge_channel)
    auth = (("authorization", f"Bearer {fan.token}"),)

    def served() -> bool:
        reply = stub.GetFeed(feed_pb2.GetFeedRequest(kind="following"), metadata=auth)
        return [v.video_id for v in reply.items] == [video["video_id"]]

    eventually(served, 2.0)
    with pytest.raises(grpc.RpcError) as e:
        stub.GetFeed(feed_pb2.GetFeedRequest(kind="following"))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_feed_cold_path_only_builds_every_page_from_the_replica(edge: Http, stack: Stack) -> None:
    """FEED_COLD_PATH_ONLY (the benchmark's "cold path forced"): the queue is there, but the
    pages still come from the replica, with the same session rules."""
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    follow(edge, fan, creator)
    videos = [publish(edge, creator) for _ in range(3)]
    eventually(lambda: len(ids(feed(edge, fan))) == 3)  # the queue is built
    cold = stack.start_outside_envoy("feed", {"FEED_COLD_PATH_ONLY": "1"})
    as_fan = (("x-user-id", fan.user_id),)  # what the edge derives from the token
    # the edge's identity: the one that may assert a user on a service port
    target = f"127.0.0.1:{cold.grpc_port}"
    with mesh_channel(stack.settings, target, pki.EDGE) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        first = stub.GetFeed(
            feed_pb2.GetFeedRequest(kind="following", page_size=2), metadata=as_fan
        )
        second = stub.GetFeed(
            feed_pb2.GetFeedRequest(kind="following", page_size=2, cursor=first.next_cursor),
            metadata=as_fan,
        )
    assert [v.video_id for v in first.items] == [videos[2]["video_id"], videos[1]["video_id"]]
    assert [v.video_id for v in second.items] == [videos[0]["video_id"]]
    metrics = Http(cold.metrics_port)
    try:
        text = metrics.get("/metrics").body.decode()
    finally:
        metrics.close()
    assert 'feed_reads_total{kind="following",source="cold"} 2.0' in text
    assert 'source="queue"' not in text


def test_a_signed_in_for_you_reader_gets_a_queue_of_their_own(edge: Http, stack: Stack) -> None:
    """Built from the global ranking: the creators the reader liked rank higher, the videos
    they liked (seen) are left out."""
    reader, liked_creator, other = (
        sign_up(edge, "reader"),
        sign_up(edge, "liked"),
        sign_up(edge, "other"),
    )
    liked, more_of_liked = publish(edge, liked_creator), publish(edge, liked_creator)
    newer_of_other = publish(edge, other)
    assert edge.post("/v1/likes", {"video_id": liked["video_id"]}, token=reader.token).status == 200
    r = valkey(stack, decode_responses=True)
    try:
        ranking = keys.feed_queue(GLOBAL_FEED_USER, "for_you")
        eventually(lambda: r.zscore(ranking, newer_of_other["video_id"]) is not None, 30)
        assert feed(edge, reader, "for_you")["items"]  # served (the global queue meanwhile)
        own = keys.feed_queue(reader.user_id, "for_you")
        queue = eventually(lambda: r.zrevrange(own, 0, -1), 10)
    finally:
        r.close()
    assert liked["video_id"] not in queue
    assert queue.index(more_of_liked["video_id"]) < queue.index(newer_of_other["video_id"])
    assert feed(edge, reader, "for_you", page_size=50)["items"]  # now from their own queue
