"""How many instances of each service `make run` starts: INSTANCES, then --instances."""

from __future__ import annotations

import pytest

from stack.__main__ import parse_counts


def test_instances_sets_every_service_and_flags_override_one() -> None:
    assert parse_counts([], "2") == {"activity": 2, "upload": 2, "feed": 2, "precache": 2}
    assert parse_counts(["feed=3"], "2")["feed"] == 3
    assert parse_counts([], "activity=2,feed=3") == {"activity": 2, "feed": 3}
    assert parse_counts([], "") == {}


@pytest.mark.parametrize("bad", ["0", "nobody=2", "activity=0", "activity=x"])
def test_bad_instance_counts_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(SystemExit, match=r"INSTANCES|--instances"):
        parse_counts([], bad)
