"""Events survive Redis: a relayed outbox row is kept until every consumer group acknowledged it
and relayed again when Redis lost it; the reconciler recounts the counters from their rows."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import redis

from mesh import keys
from stack.launcher import Stack
from tests.helpers import Http, eventually, in_parallel, sign_up, sign_up_many, valkey
from tests.videos import publish
from tiktok.v1 import events_pb2


def like_count(http: Http, video_id: str) -> int:
    r = http.get(f"/v1/videos/{video_id}")
    assert r.status == 200, r.body
    return int(r.json()["like_count"])


def kept_likes(stack: Stack, video_id: str) -> int:
    """Outbox rows of likes of ``video_id`` relayed and kept (not yet acknowledged by all)."""
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT payload FROM activity.outbox"
            " WHERE event_type = 'like.created' AND stream_ms IS NOT NULL"
        ).fetchall()
    return sum(events_pb2.Event.FromString(row[0]).like.video_id == video_id for row in rows)


def streamed_likes(r: redis.Redis, video_id: str) -> int:
    entries = r.xrange(keys.EVENTS_STREAM)
    return sum(
        events_pb2.Event.FromString(fields[b"event"]).like.video_id == video_id
        for _, fields in entries
        if fields.get(b"type") == b"like.created"
    )


@contextlib.contextmanager
def builders_down(stack: Stack) -> Iterator[None]:
    """Every precache_svc instance killed: its consumer group acknowledges nothing."""
    names = [inst.name for inst in stack.topo.instances_of("precache")]
    for name in names:
        stack.services[name].kill()
    try:
        yield
    finally:
        for name in names:
            stack.restart_service(name)


def test_events_a_flush_of_valkey_lost_are_relayed_again_and_counted_once(
    edge: Http, stack: Stack
) -> None:
    video = publish(edge, sign_up(edge, "creator"))["video_id"]
    fans = sign_up_many(edge.port, 20, "fan")
    r = valkey(stack)
    try:
        with builders_down(stack):
            replies = in_parallel(
                edge.port, [lambda h, f=f: _like(h, f.token, video) for f in fans]
            )
            assert [x.status for x in replies] == [200] * 20
            eventually(lambda: like_count(edge, video) == 20, timeout=10)
            # counted, but the builder's group has not acknowledged them: the outbox keeps them
            assert kept_likes(stack, video) == 20
            r.flushall()  # the stream, both groups and the counter mirror are gone
            eventually(lambda: streamed_likes(r, video) == 20, timeout=10)  # relayed again
            # counted once: the counter consumer knows their ids
            assert like_count(edge, video) == 20
        # the builders are back, read the stream from its start and acknowledge: forgotten
        eventually(lambda: kept_likes(stack, video) == 0, timeout=20)
        assert like_count(edge, video) == 20
    finally:
        r.close()


def _like(http: Http, token: str, video_id: str):
    return http.post("/v1/likes", {"video_id": video_id}, token=token)


def reconcile_command(stack: Stack) -> dict[str, int]:
    """``python -m activity_svc.reconcile`` in the services' environment: the rows it repaired."""
    done = subprocess.run(
        [sys.executable, "-m", "activity_svc.reconcile"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_reconciler_repairs_counts_that_drifted_from_their_rows(
    edge: Http, stack: Stack
) -> None:
    creator = sign_up(edge, "creator")
    video = publish(edge, creator)["video_id"]
    fans = sign_up_many(edge.port, 3, "fan")
    for fan in fans:
        assert _like(edge, fan.token, video).status == 200
        assert (
            edge.post("/v1/follows", {"followee_id": creator.user_id}, token=fan.token).status
            == 200
        )
    eventually(lambda: like_count(edge, video) == 3, timeout=10)
    # drift: counts no event explains (a lost event, a bug, a restored backup)
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE activity.video_counters SET like_count = 40 WHERE video_id = %s", [video]
        )
        conn.execute(
            "UPDATE activity.user_counters SET follower_count = 0 WHERE user_id = %s",
            [creator.user_id],
        )
    valkey(stack).flushall()  # and the mirror with it
    assert like_count(edge, video) == 40
    repaired = reconcile_command(stack)
    assert repaired["video_counters"] >= 1 and repaired["user_counters"] >= 1
    assert like_count(edge, video) == 3
    user = edge.get(f"/v1/users/{creator.user_id}").json()
    assert int(user["follower_count"]) == 3
    # a second run finds nothing more to repair here (others' drift is not this test's)
    assert reconcile_command(stack) == {
        "user_counters": 0,
        "video_counters": 0,
    }
