"""Follows through the edge: idempotent writes, the lists (newest first, paged), the counts,
and the builder's id lists on the internal listener."""

from __future__ import annotations

import random
import threading
import time

import grpc
import pytest

from tests.helpers import (
    UNKNOWN_ID,
    Http,
    SignedUpUser,
    eventually,
    in_parallel,
    sign_up,
    sign_up_many,
    walk,
)
from tiktok.v1 import activity_pb2, activity_pb2_grpc


def follow(http: Http, user: SignedUpUser, followee_id: str):
    return http.post("/v1/follows", {"followee_id": followee_id}, token=user.token)


def unfollow(http: Http, user: SignedUpUser, followee_id: str):
    return http.request("DELETE", f"/v1/follows/{followee_id}", token=user.token)


def counts(http: Http, user_id: str) -> tuple[int, int]:
    body = http.get(f"/v1/users/{user_id}").json()
    return int(body["follower_count"]), int(body["following_count"])


def test_follow_is_idempotent_and_counted_once(edge: Http) -> None:
    ana, bob = sign_up(edge, "ana"), sign_up(edge, "bob")
    first = follow(edge, ana, bob.user_id)
    assert first.status == 200, first.body
    assert first.json()["follower_id"] == ana.user_id
    assert first.json()["followee_id"] == bob.user_id
    again = follow(edge, ana, bob.user_id)
    assert again.status == 200
    assert again.json() == first.json()  # the existing follow, unchanged
    eventually(lambda: counts(edge, bob.user_id) == (1, 0))
    eventually(lambda: counts(edge, ana.user_id) == (0, 1))
    assert unfollow(edge, ana, bob.user_id).status == 200
    assert unfollow(edge, ana, bob.user_id).status == 200  # absent: still a success
    eventually(lambda: counts(edge, bob.user_id) == (0, 0))
    assert edge.get(f"/v1/users/{bob.user_id}/followers").json()["users"] == []


def test_follow_mistakes_are_named(edge: Http) -> None:
    ana = sign_up(edge, "ana")
    r = follow(edge, ana, ana.user_id)
    assert r.status == 400
    assert r.json()["message"].startswith("followee_id:")
    r = follow(edge, ana, UNKNOWN_ID)
    assert r.status == 404
    assert UNKNOWN_ID in r.json()["message"]
    for bad in ("", "not-a-uuid"):
        r = follow(edge, ana, bad)
        assert r.status == 400
        assert r.json()["message"].startswith("followee_id:")
    assert unfollow(edge, ana, "not-a-uuid").status == 400
    assert edge.post("/v1/follows", {"followee_id": ana.user_id}).status == 401
    assert edge.get("/v1/users/not-a-uuid/followers").json()["message"].startswith("user_id:")
    assert edge.get(f"/v1/users/{UNKNOWN_ID}/following").status == 404
    r = edge.get(f"/v1/users/{ana.user_id}/followers?page_size=101")
    assert r.status == 400
    assert r.json()["message"].startswith("page_size:")
    r = edge.get(f"/v1/users/{ana.user_id}/followers?page_token=garbage")
    assert r.status == 400
    assert r.json()["message"].startswith("page_token:")


def test_followers_and_following_are_newest_first_and_walk_every_item_once(edge: Http) -> None:
    star = sign_up(edge, "star")
    fans = sign_up_many(edge.port, 7, "fan")
    for fan in fans:  # one by one: the order of follows is the expected order of the list
        assert follow(edge, fan, star.user_id).status == 200
    followers = walk(edge, f"/v1/users/{star.user_id}/followers", "users", 3)
    assert [u["user_id"] for u in followers] == [f.user_id for f in reversed(fans)]
    assert {u["handle"] for u in followers} == {f.handle for f in fans}
    # a re-follow moves to the top
    assert unfollow(edge, fans[0], star.user_id).status == 200
    assert follow(edge, fans[0], star.user_id).status == 200
    top = edge.get(f"/v1/users/{star.user_id}/followers?page_size=1").json()
    assert top["users"][0]["user_id"] == fans[0].user_id
    # a token of one list is refused by another
    r = edge.get(f"/v1/users/{fans[1].user_id}/followers?page_token={top['next_page_token']}")
    assert r.status == 400

    fan = fans[1]
    stars = sign_up_many(edge.port, 5, "star")
    for s in stars:
        assert follow(edge, fan, s.user_id).status == 200
    following = walk(edge, f"/v1/users/{fan.user_id}/following", "users", 2)
    assert [u["user_id"] for u in following] == [s.user_id for s in reversed(stars)] + [
        star.user_id
    ]
    eventually(lambda: counts(edge, fan.user_id) == (0, 6))
    eventually(lambda: counts(edge, star.user_id) == (7, 0))


def test_interleaved_follow_and_unfollow_end_in_the_last_acknowledged_state(edge: Http) -> None:
    ana, bob = sign_up(edge, "ana"), sign_up(edge, "bob")
    calls: list[tuple[float, float, str]] = []  # (sent, acknowledged, action)
    lock = threading.Lock()

    def act(action: str):
        def call(http: Http) -> None:
            sent = time.monotonic()
            r = (
                follow(http, ana, bob.user_id)
                if action == "follow"
                else unfollow(http, ana, bob.user_id)
            )
            assert r.status == 200, r.body
            with lock:
                calls.append((sent, time.monotonic(), action))

        return call

    for _ in range(2):  # 2 x 16 calls stay within the edge's per-user burst (40 in tests)
        calls.clear()
        actions = [random.choice(("follow", "unfollow")) for _ in range(16)]
        in_parallel(edge.port, [act(a) for a in actions], workers=8)
        # the last acknowledged call, up to calls that overlapped it (no order between those)
        last = {a for _, acked, a in calls if not any(sent > acked for sent, _, _ in calls)}
        followers = edge.get(f"/v1/users/{bob.user_id}/followers").json()["users"]
        state = "follow" if [u["user_id"] for u in followers] == [ana.user_id] else "unfollow"
        assert len(followers) <= 1
        assert state in last, (state, last)
        # the counter, applied from the events, agrees with the rows
        expected = (1, 0) if state == "follow" else (0, 0)
        eventually(lambda expected=expected: counts(edge, bob.user_id) == expected)


def test_follows_work_over_grpc_through_the_edge(edge: Http, edge_channel: grpc.Channel) -> None:
    ana, bob = sign_up(edge, "ana"), sign_up(edge, "bob")
    stub = activity_pb2_grpc.ActivityServiceStub(edge_channel)
    auth = (("authorization", f"Bearer {ana.token}"),)
    reply = stub.CreateFollow(
        activity_pb2.CreateFollowRequest(followee_id=bob.user_id), metadata=auth
    )
    assert reply.followee_id == bob.user_id
    listed = stub.ListFollowers(activity_pb2.ListFollowersRequest(user_id=bob.user_id))
    assert [u.user_id for u in listed.users] == [ana.user_id]
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateFollow(activity_pb2.CreateFollowRequest(followee_id=ana.user_id), metadata=auth)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stub.DeleteFollow(activity_pb2.DeleteFollowRequest(followee_id=bob.user_id), metadata=auth)
    assert not stub.ListFollowing(activity_pb2.ListFollowingRequest(user_id=ana.user_id)).users
