"""A page picked outside Redis (a cluster's reader of a queue in another slot) is the page the
page script would pick: the first unseen videos, at most so many per creator, and a count of
the unseen ones left after it."""

from __future__ import annotations

from feed_svc.queues import pick_page

RANKED = ["v1", "v2", "v3", "v4", "v5", "v6"]


def test_the_first_unseen_videos_make_the_page_and_the_rest_are_counted() -> None:
    picked, left = pick_page(RANKED, {}, {"v2"}, size=2, per_creator=0, enough=10)
    assert picked == ["v1", "v3"]
    assert left == 3  # v4, v5, v6


def test_counting_what_is_left_stops_at_enough() -> None:
    _, left = pick_page(RANKED, {}, set(), size=2, per_creator=0, enough=2)
    assert left == 2


def test_a_creator_gets_at_most_per_creator_videos_and_the_skipped_count_as_left() -> None:
    creators = {"v1": "a", "v2": "a", "v3": "a", "v4": "b"}
    picked, left = pick_page(RANKED, creators, set(), size=3, per_creator=2, enough=10)
    assert picked == ["v1", "v2", "v4"]
    assert left == 3  # v3 (a's third), v5, v6


def test_everything_seen_is_an_empty_page_with_nothing_left() -> None:
    assert pick_page(RANKED, {}, set(RANKED), size=3, per_creator=0, enough=10) == ([], 0)
