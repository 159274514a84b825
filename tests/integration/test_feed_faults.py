"""Feeds under faults: services restarted in the middle of a fan-out, Redis flushed, Postgres
hung. A stale feed beats an error."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mesh import keys
from stack.launcher import Stack
from stack.procs import Proc
from tests.feeds import fan_with_one_video, feed, ids
from tests.helpers import Http, eventually, sign_up, valkey
from tests.videos import publish

FANOUT_FOLLOWERS = 5000
OLD_VIDEO = str(uuid.UUID(int=1))  # what the readers' queues held before


def add_followers(stack: Stack, creator_id: str, n: int, *, reading: bool = True) -> list[str]:
    """``n`` followers for ``creator_id``, written straight into the table (a large audience
    without signing up thousands of users; fan-out only needs the follows). ``reading``: each
    has a following queue already, as an active reader does (fan-out skips users without)."""
    followers = [str(uuid.uuid4()) for _ in range(n)]
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        with conn.cursor().copy("COPY activity.follows (follower_id, followee_id) FROM STDIN") as c:
            for f in followers:
                c.write_row((f, creator_id))
    if reading:
        r = valkey(stack)
        try:
            pipe = r.pipeline(transaction=False)
            for f in followers:
                pipe.zadd(keys.feed_queue(f, "following"), {OLD_VIDEO: 1})
            pipe.execute()
        finally:
            r.close()
    return followers


def queues_holding(stack: Stack, followers: list[str], video_id: str) -> int:
    r = valkey(stack)
    try:
        pipe = r.pipeline(transaction=False)
        for f in followers:
            pipe.zscore(keys.feed_queue(f, "following"), video_id)
        return sum(score is not None for score in pipe.execute())
    finally:
        r.close()


@pytest.mark.parametrize(
    "service",
    [
        "feed_svc-0",  # SIGKILL: batches in flight are never acknowledged, so they are resent
        "precache_svc-0",  # its event stays pending; the restart resumes it
    ],
)
def test_a_service_restarted_mid_fan_out_loses_nothing(
    edge: Http, stack: Stack, service: str
) -> None:
    creator = sign_up(edge, "creator")
    followers = add_followers(stack, creator.user_id, FANOUT_FOLLOWERS)
    video = publish(edge, creator)
    stack.services[service].kill()
    stack.restart_service(service)
    eventually(lambda: queues_holding(stack, followers, video["video_id"]) == len(followers), 30)


def test_fan_out_writes_only_the_queues_of_readers_and_the_rest_read_it_from_the_replica(
    edge: Http, stack: Stack
) -> None:
    creator = sign_up(edge, "creator")
    readers = add_followers(stack, creator.user_id, 1500)
    idle = add_followers(stack, creator.user_id, 1500, reading=False)
    video = publish(edge, creator)
    eventually(lambda: queues_holding(stack, readers, video["video_id"]) == len(readers), 30)
    # the idle followers were in the same batches (one script each): none got a queue
    r = valkey(stack)
    try:
        assert not any(r.exists(keys.feed_queue(f, "following")) for f in idle[:100])
        assert r.zscore(keys.feed_queue(readers[0], "following"), OLD_VIDEO) == 1  # kept
    finally:
        r.close()


def test_after_redis_is_flushed_the_next_read_answers_and_the_queue_is_rebuilt(
    edge: Http, stack: Stack
) -> None:
    creator, fan, video = fan_with_one_video(edge)
    r = valkey(stack)
    try:
        r.flushall()
        assert ids(feed(edge, fan)) == [video["video_id"]]  # cold: from the replica
        assert video["video_id"] in ids(feed(edge, None, "for_you", page_size=50))  # idem
        # as the fan keeps reading (each read of a missing queue asks for it), it is rebuilt
        eventually(
            lambda: (
                ids(feed(edge, fan)) is not None
                and r.exists(keys.feed_queue(fan.user_id, "following"))
            ),
            10,
        )
        eventually(lambda: video["video_id"] in ids(feed(edge, None, "for_you", page_size=50)))
    finally:
        r.close()
    # and the rest of the mesh carries on: new events are relayed, consumed and fanned out
    second = publish(edge, creator)
    eventually(lambda: second["video_id"] in ids(feed(edge, fan)), 5)


@contextlib.contextmanager
def hung(*procs: Proc) -> Iterator[None]:
    """The processes and their children stopped (SIGSTOP): sockets open, nothing answers."""
    pids = []
    for proc in procs:
        assert proc.pid is not None
        pids += [proc.pid, *children(proc.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_with_postgres_hung_the_feeds_are_still_served(edge: Http, stack: Stack) -> None:
    _, fan, video = fan_with_one_video(edge)
    eventually(lambda: video["video_id"] in ids(feed(edge, None, "for_you", page_size=50)), 15)
    # what a hung primary leaves is what the replica has (it replays nothing more meanwhile)
    with psycopg.connect(stack.settings.database_replica_url, autocommit=True) as replica:
        query = "SELECT 1 FROM upload.videos WHERE video_id = %s"
        eventually(lambda: replica.execute(query, [video["video_id"]]).fetchone(), 10)
    postgres = next(p for layer in stack.layers for p in layer if p.name == "postgres")
    with hung(postgres):
        # every read answers (feed() asserts 200); a first one may miss the video while the
        # hung primary costs its hydration a timeout, and the next ones have it
        eventually(lambda: ids(feed(edge, fan)) == [video["video_id"]], 10)
        assert video["video_id"] in ids(feed(edge, None, "for_you", page_size=50))


def test_with_redis_hung_the_following_feed_comes_from_the_replica(
    edge: Http, stack: Stack
) -> None:
    _, fan, video = fan_with_one_video(edge)
    # one node, or every node of a cluster
    valkeys = [p for layer in stack.layers for p in layer if p.name.startswith("valkey")]
    with hung(*valkeys):
        # the first reads pay the client timeouts and open the breakers; then the page is
        # built from the replica and hydrated through the services, never an error
        eventually(lambda: ids(feed(edge, fan)) == [video["video_id"]], 15)
    eventually(lambda: ids(feed(edge, fan)) == [video["video_id"]], 15)  # and after recovery
