"""The counter consumer's pure parts: what a batch of events adds to which counter."""

from __future__ import annotations

import uuid

from activity_svc.counters import deltas_of, parse_entry
from mesh.outbox import new_event
from tiktok.v1 import events_pb2

A, B = str(uuid.uuid4()), str(uuid.uuid4())
V = str(uuid.uuid4())


def like(verb: str, user: str = A) -> events_pb2.Event:
    return new_event(f"like.{verb}", V, like=events_pb2.LikeChanged(user_id=user, video_id=V))


def test_creates_and_deletes_of_one_batch_sum_per_counted_row() -> None:
    follow = events_pb2.FollowChanged(follower_id=A, followee_id=B)
    deltas = deltas_of(
        [
            like("created"),
            like("created", B),
            like("deleted"),
            new_event("comment.created", V, comment=events_pb2.CommentChanged(video_id=V)),
            new_event("favorite.created", V, favorite=events_pb2.FavoriteChanged(video_id=V)),
            new_event("follow.created", A, follow=follow),
        ]
    )
    assert deltas.videos == {uuid.UUID(V): [1, 1, 1, 0, 0, 0]}
    assert deltas.users == {uuid.UUID(B): [1, 0, 0, 0], uuid.UUID(A): [0, 1, 0, 0]}


def test_publishing_counts_a_video_for_its_creator_and_starts_its_counters_at_zero() -> None:
    published = events_pb2.VideoPublished(video_id=V, creator_id=A)
    deltas = deltas_of([new_event("video.published", V, video_published=published)])
    assert deltas.users == {uuid.UUID(A): [0, 0, 1, 0]}
    assert deltas.videos == {uuid.UUID(V): [0] * 6}  # a row to mirror before the first like
    deleted = events_pb2.VideoDeleted(video_id=V, creator_id=A)
    assert deltas_of([new_event("video.deleted", V, video_deleted=deleted)]).users == {
        uuid.UUID(A): [0, 0, -1, 0]
    }


def test_unknown_types_count_nothing() -> None:
    assert not deltas_of([events_pb2.Event(event_id=A, type="video.renamed")]).users


def test_entries_that_are_not_events_are_skipped_not_fatal() -> None:
    event = like("created")
    assert parse_entry({b"type": b"like.created", b"event": event.SerializeToString()}) == event
    assert parse_entry(None) is None  # trimmed from the stream while pending
    assert parse_entry({b"type": b"x"}) is None
    assert parse_entry({b"event": b"\xff\xff not a protobuf"}) is None
    bad_id = like("created", user="not-a-uuid")
    bad_id.like.video_id = "not-a-uuid"
    assert parse_entry({b"event": bad_id.SerializeToString()}) is None


def test_verbs_it_does_not_know_count_nothing_even_with_a_known_payload() -> None:
    reported = new_event("like.reported", V, like=events_pb2.LikeChanged(user_id=A, video_id=V))
    assert not deltas_of([reported]).videos


def test_plays_add_views_watch_time_and_completions_per_video() -> None:
    other = str(uuid.uuid4())
    plays = events_pb2.ViewsRecorded(
        plays=[
            events_pb2.Play(video_id=V, watched_ms=3000, completed=True, creator_id=B),
            events_pb2.Play(video_id=V, watched_ms=1500, creator_id=B),
            events_pb2.Play(video_id=other, watched_ms=2000, creator_id=B),
        ]
    )
    deltas = deltas_of([new_event("views.recorded", A, views=plays)])
    # like, comment, favorite, view, watch_ms, completion
    assert deltas.videos == {
        uuid.UUID(V): [0, 0, 0, 2, 4500, 1],
        uuid.UUID(other): [0, 0, 0, 1, 2000, 0],
    }
    assert deltas.users == {uuid.UUID(B): [0, 0, 0, 3]}  # the creator's total plays
    bad = events_pb2.ViewsRecorded(plays=[events_pb2.Play(video_id="nope", watched_ms=1)])
    event = new_event("views.recorded", A, views=bad)
    assert parse_entry({b"event": event.SerializeToString()}) is None


def test_consumer_lag_is_the_age_of_the_entry_by_its_stream_id() -> None:
    from mesh.consumer import lag_seconds

    assert lag_seconds(b"1700000000000-3", 1700000001.5) == 1.5
    assert lag_seconds("1700000002000-0", 1700000001.0) == 0.0  # clocks: never negative
