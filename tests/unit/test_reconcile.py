"""The reconciler's arithmetic: a count should equal its source rows minus what the events not
yet applied will add; the correction is the difference, only in the recounted columns."""

from __future__ import annotations

import uuid

from activity_svc.reconcile import RECOUNTS, corrections

USERS, VIDEOS = RECOUNTS
A, B = uuid.uuid4(), uuid.uuid4()


def test_a_count_that_matches_its_rows_needs_no_correction() -> None:
    # (id, likes, comments, favorites from rows, then as counted)
    assert corrections(VIDEOS, [(A, 3, 1, 0, 3, 1, 0)], {}) == {}


def test_a_count_that_lost_events_is_raised_to_its_rows() -> None:
    fixes = corrections(VIDEOS, [(A, 5, 0, 2, 3, 0, 2)], {})
    assert fixes == {A: [2, 0, 0, 0, 0, 0]}  # like_count +2; views, watch time untouched


def test_events_not_yet_applied_are_not_counted_twice() -> None:
    # 5 like rows, 3 counted, 2 likes still on their way: right as it is
    assert corrections(VIDEOS, [(A, 5, 0, 0, 3, 0, 0)], {A: [2, 0, 0, 0, 0, 0]}) == {}
    # counted as if the pending unlike had landed already: one too few once it does
    fixes = corrections(VIDEOS, [(A, 4, 0, 0, 4, 0, 0)], {A: [-1, 0, 0, 0, 0, 0]})
    assert fixes == {A: [1, 0, 0, 0, 0, 0]}


def test_follow_counts_are_corrected_per_column() -> None:
    # (id, followers, following from rows, then as counted); video_count and views untouched
    fixes = corrections(USERS, [(A, 10, 0, 12, 0), (B, 0, 3, 0, 1)], {})
    assert fixes == {A: [-2, 0, 0, 0], B: [0, 2, 0, 0]}
