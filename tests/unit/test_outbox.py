"""Where the outbox may forget relayed rows: below the first entry some consumer group has not
acknowledged."""

from __future__ import annotations

from mesh import keys
from mesh.outbox import acknowledged_below, stream_id


def test_stream_ids_parse_as_milliseconds_and_sequence() -> None:
    assert stream_id(b"1700000000000-7") == (1700000000000, 7)
    assert stream_id("0-0") == (0, 0)


def test_a_group_with_pending_entries_holds_the_bound_at_its_oldest_one() -> None:
    groups = {
        keys.COUNTERS_GROUP: ((500, 0), None),  # all delivered are acknowledged
        keys.PRECACHE_GROUP: ((500, 0), (300, 2)),  # 300-2 was read, not acknowledged
    }
    assert acknowledged_below(groups) == (300, 2)


def test_with_nothing_pending_the_bound_is_just_past_the_last_delivered_entry() -> None:
    groups = {name: ((500, 3), None) for name in keys.CONSUMER_GROUPS}
    assert acknowledged_below(groups) == (500, 4)


def test_the_slowest_group_decides() -> None:
    groups = {keys.COUNTERS_GROUP: ((900, 0), None), keys.PRECACHE_GROUP: ((100, 0), None)}
    assert acknowledged_below(groups) == (100, 1)


def test_a_missing_group_or_stream_has_acknowledged_nothing() -> None:
    assert acknowledged_below({}) == (0, 0)
    assert acknowledged_below({keys.COUNTERS_GROUP: ((900, 0), None)}) == (0, 0)
