"""FeedService/StreamFeedBatches as the builder drives it, on the internal listener: acks in
order, at most once per batch id, malformed batches acknowledged and dropped, replace, remove,
the queue cap, one batch for many users, and adds only to queues that exist."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis

from mesh import keys, pki
from stack.launcher import Stack
from tests.conftest import InternalChannels
from tests.helpers import valkey
from tiktok.v1 import feed_pb2, feed_pb2_grpc

FOLLOWING = feed_pb2.FEED_KIND_FOLLOWING


@pytest.fixture
def internal_channel(internal: InternalChannels) -> grpc.Channel:
    """The builder's identity: the one caller of StreamFeedBatches."""
    return internal(pki.SERVICE_IDENTITIES["precache"])


@pytest.fixture
def queues(stack: Stack) -> Iterator[redis.Redis]:
    client = valkey(stack, decode_responses=True)
    yield client
    client.close()


def entry(video: str, score: float, creator: str = "c") -> feed_pb2.FeedEntry:
    return feed_pb2.FeedEntry(video_id=video, creator_id=creator, score=score)


def send(channel: grpc.Channel, batches: list[feed_pb2.FeedBatch]) -> list[str]:
    stub = feed_pb2_grpc.FeedServiceStub(channel)
    return [ack.batch_id for ack in stub.StreamFeedBatches(iter(batches), timeout=10)]


def queue(client: redis.Redis, user: str) -> list[str]:
    return client.zrevrange(keys.feed_queue(user, "following"), 0, -1)


def test_batches_are_applied_in_order_at_most_once_and_acknowledged_in_order(
    internal_channel: grpc.Channel, queues: redis.Redis
) -> None:
    user = str(uuid.uuid4())
    build = feed_pb2.FeedBatch(
        batch_id="b1", user_id=user, kind=FOLLOWING, replace=True,
        add=[entry("v1", 1), entry("v2", 2)],
    )  # fmt: skip
    remove = feed_pb2.FeedBatch(
        batch_id="b2", user_id=user, kind=FOLLOWING, remove_video_ids=["v1"]
    )
    malformed = feed_pb2.FeedBatch(batch_id="b3", user_id=user)  # FEED_KIND_UNSPECIFIED
    acks = send(internal_channel, [build, remove, malformed, build])  # b1 again: applied already
    assert acks == ["b1", "b2", "b3", "b1"]
    assert queue(queues, user) == ["v2"]  # the repeated b1 did not bring v1 back
    rebuild = feed_pb2.FeedBatch(
        batch_id="b4", user_id=user, kind=FOLLOWING, replace=True, add=[entry("v9", 9)]
    )
    assert send(internal_channel, [rebuild]) == ["b4"]
    assert queue(queues, user) == ["v9"]


def test_adds_go_only_to_queues_that_exist(
    internal_channel: grpc.Channel, queues: redis.Redis
) -> None:
    """A user without a queue (never read, or expired) is not pushed to: their queue is built
    when they read, from the replica, and holds the video then."""
    reader, idle = str(uuid.uuid4()), str(uuid.uuid4())
    queues.zadd(keys.feed_queue(reader, "following"), {"old": 1})
    batch = feed_pb2.FeedBatch(
        batch_id="push", user_id=idle, more_user_ids=[reader], kind=FOLLOWING,
        add=[entry("new", 5)],
    )  # fmt: skip
    assert send(internal_channel, [batch]) == ["push"]
    assert queue(queues, reader) == ["new", "old"]
    assert not queues.exists(keys.feed_queue(idle, "following"))


def test_a_queue_keeps_its_500_best_entries(
    internal_channel: grpc.Channel, queues: redis.Redis
) -> None:
    user = str(uuid.uuid4())
    queues.zadd(keys.feed_queue(user, "following"), {"v0": 0})
    batch = feed_pb2.FeedBatch(
        batch_id="big", user_id=user, kind=FOLLOWING, add=[entry(f"v{i}", i) for i in range(600)]
    )
    send(internal_channel, [batch])
    kept = queue(queues, user)
    assert len(kept) == 500
    assert kept[0] == "v599" and kept[-1] == "v100"


def test_one_batch_changes_many_users_queues_once_each(
    internal_channel: grpc.Channel, queues: redis.Redis
) -> None:
    users = [str(uuid.uuid4()) for _ in range(50)]
    for u in users:
        queues.zadd(keys.feed_queue(u, "following"), {"old": 1})
    batch = feed_pb2.FeedBatch(
        batch_id="fan", user_id=users[0], more_user_ids=users[1:], kind=FOLLOWING,
        add=[entry("new", 5)],
    )  # fmt: skip
    assert send(internal_channel, [batch]) == ["fan"]
    assert all(queue(queues, u) == ["new", "old"] for u in users)
    too_many = feed_pb2.FeedBatch(
        batch_id="huge", user_id=users[0], more_user_ids=[str(uuid.uuid4())] * 1001,
        kind=FOLLOWING, add=[entry("dropped", 6)],
    )  # fmt: skip
    assert send(internal_channel, [too_many]) == ["huge"]  # acknowledged, dropped
    assert queue(queues, users[0]) == ["new", "old"]


def test_a_batch_larger_than_a_queue_keeps_its_best_entries(
    internal_channel: grpc.Channel, queues: redis.Redis
) -> None:
    user = str(uuid.uuid4())
    batch = feed_pb2.FeedBatch(
        batch_id="huge-add", user_id=user, kind=FOLLOWING, replace=True,
        add=[entry(f"v{i}", i) for i in range(10_000)],
    )  # fmt: skip
    assert send(internal_channel, [batch]) == ["huge-add"]
    kept = queue(queues, user)
    assert len(kept) == 500
    assert kept[0] == "v9999" and kept[-1] == "v9500"


def test_seen_ids_join_what_the_users_feed_has_served_and_leave_the_queue(
    internal_channel: grpc.Channel, queues: redis.Redis
) -> None:
    user = str(uuid.uuid4())
    for_you = feed_pb2.FEED_KIND_FOR_YOU
    build = feed_pb2.FeedBatch(
        batch_id="fy1", user_id=user, kind=for_you, replace=True,
        add=[entry("a", 2, "c1"), entry("b", 1, "c2")],
    )  # fmt: skip
    done = feed_pb2.FeedBatch(
        batch_id="fy2", user_id=user, kind=for_you, remove_video_ids=["a"], seen_video_ids=["a"]
    )
    assert send(internal_channel, [build, done, done]) == ["fy1", "fy2", "fy2"]
    assert queues.zrevrange(keys.feed_queue(user, "for_you"), 0, -1) == ["b"]
    seen = keys.feed_seen(user, "for_you")
    assert queues.smembers(seen) == {"a"} and 0 < queues.ttl(seen) <= 3600
