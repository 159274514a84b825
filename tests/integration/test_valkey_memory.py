"""Valkey's memory policy is explicit: bounded, and only keys with a TTL (the caches) may be
evicted; the events stream has none, so it is never dropped to make room."""

from __future__ import annotations

from mesh import keys
from stack.launcher import Stack
from stack.servers import MAXMEMORY_POLICY
from tests.helpers import Http, eventually, sign_up, valkey
from tests.videos import publish


def test_caches_are_evictable_and_the_events_stream_is_not(edge: Http, stack: Stack) -> None:
    r = valkey(stack)
    config = r.config_get("maxmemory*")
    assert config["maxmemory-policy"] == MAXMEMORY_POLICY == "volatile-lru"
    assert int(config["maxmemory"]) == 1024**3
    video = publish(edge, sign_up(edge))
    card = keys.video_card(video["video_id"])
    eventually(lambda: r.exists(card) == 1)
    assert r.ttl(card) > 0  # a cache: evictable
    assert r.ttl(keys.EVENTS_STREAM) == -1  # no TTL: never evicted
    r.close()
