"""The builder's refill queue: one entry per (user, kind) until a worker takes it, following
builds before for-you builds, and a bound per priority."""

import asyncio

import pytest

import precache_svc.service as service
from mesh.errors import Unavailable
from precache_svc.service import RefillQueue
from tiktok.v1 import feed_pb2

FOLLOWING, FOR_YOU = feed_pb2.FEED_KIND_FOLLOWING, feed_pb2.FEED_KIND_FOR_YOU


class RecordingBuilder:
    def __init__(self) -> None:
        self.built: list[tuple[str, str]] = []
        self.done = asyncio.Event()
        self.expected = 0

    async def _record(self, what: str, user: str) -> None:
        self.built.append((what, user))
        if len(self.built) == self.expected:
            self.done.set()

    async def build_following(self, user: str) -> None:
        await self._record("following", user)

    async def build_for_you(self, user: str) -> None:
        await self._record("for_you", user)

    async def refresh_trending(self) -> None:
        await self._record("trending", "")


def test_following_builds_go_first_and_each_pair_is_queued_once() -> None:
    async def main() -> list[tuple[str, str]]:
        builder = RecordingBuilder()
        queue = RefillQueue(builder, workers=1)  # type: ignore[arg-type]
        assert queue.request("a", FOR_YOU)
        assert not queue.request("a", FOR_YOU)  # already queued
        assert queue.request("b", FOLLOWING)
        assert queue.request("c", FOR_YOU)
        assert queue.request("d", FOLLOWING)
        builder.expected = 4
        worker = asyncio.create_task(queue.run())
        await asyncio.wait_for(builder.done.wait(), 5)
        worker.cancel()
        assert queue.request("a", FOR_YOU)  # taken by a worker: may be asked for again
        return builder.built

    assert asyncio.run(main()) == [
        ("following", "b"),
        ("following", "d"),
        ("for_you", "a"),
        ("for_you", "c"),
    ]


def test_a_full_for_you_queue_does_not_refuse_following_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "MAX_QUEUED", 2)

    async def main() -> None:
        queue = RefillQueue(RecordingBuilder())  # type: ignore[arg-type]
        queue.request("a", FOR_YOU)
        queue.request("b", FOR_YOU)
        with pytest.raises(Unavailable):
            queue.request("c", FOR_YOU)
        assert queue.request("d", FOLLOWING)

    asyncio.run(main())


def test_a_personal_ranking_leaves_out_what_the_user_liked_completed_or_made() -> None:
    from readmodels.feed import personal_ranking

    ranking = [("v1", "c1", 5.0), ("v2", "c2", 4.0), ("v3", "me", 3.0), ("v4", "c1", 2.0)]
    personal = personal_ranking(ranking, "me", liked=[("v1", "c1")], completed=["v2"])
    assert [v for v, _, _ in personal] == ["v4"]  # and c1's other video ranks higher for it
    assert personal[0][2] > 2.0
