"""The read replica: a streaming hot standby of the stack's Postgres that the builder and cold
feed pages read from; a read never misses a write acknowledged before it asked; with the
replica down, reads go to the primary and nothing fails."""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.request
from collections.abc import Iterator

import psycopg

from mesh.db import ROUTED_READS, open_reads
from stack.launcher import Stack
from stack.procs import Proc
from tests.feeds import fan_with_one_video, feed, ids
from tests.helpers import Http, eventually, sign_up
from tests.videos import publish


def replica_proc(stack: Stack) -> Proc:
    return next(p for layer in stack.layers for p in layer if p.name == "postgres-replica")


def metric(stack: Stack, service: str, name: str) -> float:
    """The sum of a metric's samples on every instance of ``service``."""
    total = 0.0
    for inst in stack.topo.instances_of(service):
        url = f"http://127.0.0.1:{inst.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        for match in re.finditer(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M):
            total += float(match.group(1))
    return total


def test_the_replica_streams_the_primarys_writes(edge: Http, stack: Stack) -> None:
    user = sign_up(edge, "replicated")
    with psycopg.connect(stack.settings.database_replica_url, autocommit=True) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        status = replica.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
        assert status == ("streaming",)

        def replayed() -> bool:
            row = replica.execute(
                "SELECT 1 FROM activity.users WHERE user_id = %s", [user.user_id]
            ).fetchone()
            return row is not None

        eventually(replayed, timeout=10)
    # feed_svc and precache_svc watch its lag (caught up: 0, never -1)
    eventually(lambda: metric(stack, "feed", "db_replica_lag_seconds") >= 0, timeout=5)


def test_a_routed_read_sees_a_row_written_just_before_once_the_replica_has_replayed_it(
    edge: Http, stack: Stack
) -> None:
    """The router asks the primary where its WAL is, then reads the replica once it has
    replayed that far: a write acknowledged before the read is seen, and from the replica."""
    settings = stack.settings

    async def main() -> tuple[bool, float]:
        # a generous catch-up: this test is about where the read goes, not how fast
        reads = await open_reads(
            settings.database_url, settings.database_replica_url, "activity", catch_up=10.0
        )
        try:
            served = ROUTED_READS.labels("replica")._value.get()
            user = sign_up(edge, "routed")  # acknowledged by the primary
            async with reads.connection() as conn:
                cur = await conn.execute("SELECT 1 FROM users WHERE user_id = %s", [user.user_id])
                found = await cur.fetchone() is not None
            return found, ROUTED_READS.labels("replica")._value.get() - served
        finally:
            await reads.close()

    found, replica_reads = asyncio.run(main())
    assert found
    assert replica_reads == 1


def test_the_builder_reads_through_the_router_and_sees_writes_made_just_before(
    edge: Http, stack: Stack
) -> None:
    routed = 'db_routed_reads_total{target="%s"}'
    targets = ("replica", "primary", "replica_stale")

    def reads() -> float:
        return sum(metric(stack, "precache", routed % t) for t in targets)

    before = reads()
    # a publish is fanned out from the creator's followers read right after the follow (the
    # fan's first page may come from the feed's cold path before the builder gets to it)
    _, fan, video = fan_with_one_video(edge)
    assert ids(feed(edge, fan)) == [video["video_id"]]
    eventually(lambda: reads() > before, timeout=30)
    # and over the session the replica, not the primary, has served the builder's reads
    assert metric(stack, "precache", routed % "replica") > 0


def routed(stack: Stack, service: str) -> float:
    """Reads ``service`` sent through its router, wherever they went."""
    return sum(
        metric(stack, service, f'db_routed_reads_total{{target="{t}"}}')
        for t in ("replica", "primary", "replica_stale")
    )


def test_lists_read_through_the_router_and_show_what_was_written_just_before(
    edge: Http, stack: Stack
) -> None:
    activity, upload = routed(stack, "activity"), routed(stack, "upload")
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    video = publish(edge, creator)["video_id"]
    assert [
        v["video_id"] for v in edge.get(f"/v1/users/{creator.user_id}/videos").json()["videos"]
    ] == [video]
    assert edge.post("/v1/follows", {"followee_id": creator.user_id}, token=fan.token).status == 200
    followers = edge.get(f"/v1/users/{creator.user_id}/followers").json()["users"]
    assert [u["user_id"] for u in followers] == [fan.user_id]
    assert edge.post("/v1/likes", {"video_id": video}, token=fan.token).status == 200
    liked = edge.get(f"/v1/users/{fan.user_id}/likes").json()["videos"]
    assert [v["video_id"] for v in liked] == [video]
    said = edge.post(f"/v1/videos/{video}/comments", {"text": "first"}, token=fan.token)
    assert said.status == 200
    comments = edge.get(f"/v1/videos/{video}/comments").json()["comments"]
    assert [c["comment_id"] for c in comments] == [said.json()["comment_id"]]
    assert routed(stack, "activity") >= activity + 3
    assert routed(stack, "upload") > upload


@contextlib.contextmanager
def stopped(stack: Stack, proc: Proc) -> Iterator[None]:
    proc.send(proc.stop_signal)
    assert proc.wait(15)
    try:
        yield
    finally:
        proc.start()
        url = stack.settings.database_replica_url
        proc.wait_ready(lambda: _ready(url), 60)


def _ready(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=1) as conn:
        conn.execute("SELECT 1")
    return True


def test_with_the_replica_down_reads_go_to_the_primary_and_nothing_fails(
    edge: Http, stack: Stack
) -> None:
    replica = replica_proc(stack)
    with stopped(stack, replica):
        # a new follower's first following page is cold: built from the replica, which is
        # down, so from the primary, with the follow just written
        _, fan, video = fan_with_one_video(edge)
        assert ids(feed(edge, fan)) == [video["video_id"]]
        eventually(lambda: metric(stack, "feed", "db_replica_lag_seconds") == -1, timeout=10)
    # back: it catches up on what it missed and serves reads again
    eventually(lambda: metric(stack, "feed", "db_replica_lag_seconds") >= 0, timeout=20)
    user = sign_up(edge, "after")
    with psycopg.connect(stack.settings.database_replica_url, autocommit=True) as conn:
        eventually(
            lambda: (
                conn.execute(
                    "SELECT 1 FROM activity.users WHERE user_id = %s", [user.user_id]
                ).fetchone()
                is not None
            ),
            timeout=10,
        )
