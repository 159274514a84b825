"""The shape checks of a RecordViews call, before anything is looked up."""

from __future__ import annotations

import uuid

import pytest

from activity_svc.views import MAX_VIEWS, Play, check_length, check_views
from mesh.errors import InvalidArgument
from tiktok.v1 import activity_pb2

V = str(uuid.uuid4())


def view(video_id: str = V, watched_ms: int = 1500) -> activity_pb2.View:
    return activity_pb2.View(video_id=video_id, watched_ms=watched_ms)


def test_well_formed_plays_keep_their_position() -> None:
    plays = check_views([view(), view(watched_ms=0)])
    assert [(p.index, str(p.video_id), p.watched_ms) for p in plays] == [
        (0, V, 1500),
        (1, V, 0),
    ]


@pytest.mark.parametrize(
    ("views", "field"),
    [
        ([], "views"),
        ([view()] * (MAX_VIEWS + 1), "views"),
        ([view(), view("x")], "views[1].video_id"),
        ([view(watched_ms=-5)], "views[0].watched_ms"),
    ],
)
def test_a_malformed_entry_refuses_the_call_naming_it(views: list, field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        check_views(views)
    assert e.value.field == field


def test_a_play_may_run_five_seconds_past_the_end_not_more() -> None:
    check_length(Play(3, uuid.UUID(V), 15_000, False), 10_000)
    with pytest.raises(InvalidArgument) as e:
        check_length(Play(3, uuid.UUID(V), 15_001, False), 10_000)
    assert e.value.field == "views[3].watched_ms" and "10000 ms" in e.value.message


def test_a_play_flagged_completed_must_have_lasted_about_the_whole_video() -> None:
    from activity_svc.views import _ended_or_not

    short = Play(0, uuid.UUID(V), 2_000, True)
    assert not _ended_or_not(short, 60_000).completed  # a play, not a completion
    assert _ended_or_not(Play(0, uuid.UUID(V), 56_000, True), 60_000).completed
    assert _ended_or_not(short, 3_000).completed  # a short video's end is within the slack
