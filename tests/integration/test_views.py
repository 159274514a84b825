"""Plays through the edge (POST /v1/views): validation, dedup, skipping, and counts that
converge exactly, across a restart of every counting instance."""

from __future__ import annotations

from mesh import keys
from stack.launcher import Stack
from tests.helpers import UNKNOWN_ID, Http, eventually, in_parallel, random_address, sign_up, valkey
from tests.videos import publish


def views(http: Http, plays: list[dict], token: str | None = None):
    return http.post("/v1/views", {"views": plays}, token=token)


def play(video_id: str, watched_ms: int = 2500, completed: bool = False) -> dict:
    return {"video_id": video_id, "watched_ms": watched_ms, "completed": completed}


def view_count(http: Http, video_id: str) -> int:
    return int(http.get(f"/v1/videos/{video_id}").json()["view_count"])


def eventually_count(http: Http, video_id: str, want: int, timeout: float = 10) -> None:
    eventually(lambda: view_count(http, video_id) == want, timeout=timeout)


def test_plays_from_several_viewers_converge_and_show_everywhere(edge: Http) -> None:
    creator = sign_up(edge, "creator")
    video = publish(edge, creator)
    fans = [sign_up(edge, "fan") for _ in range(2)]
    for fan in fans:
        r = views(edge, [play(video["video_id"])], token=fan.token)
        assert (r.status, r.json()) == (200, {})
    for _ in range(3):  # anonymous viewers are never deduplicated
        assert views(edge, [play(video["video_id"], completed=True)]).status == 200
    eventually_count(edge, video["video_id"], 5)
    listed = edge.get(f"/v1/users/{creator.user_id}/videos").json()["videos"]
    assert int(listed[0]["view_count"]) == 5
    # the creator's total over all their videos
    second = publish(edge, creator)
    assert views(edge, [play(second["video_id"])]).status == 200
    eventually(lambda: int(edge.get(f"/v1/users/{creator.user_id}").json()["view_count"]) == 6)


def test_a_signed_in_viewer_counts_once_per_video_per_ten_minutes(edge: Http) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    fan = sign_up(edge, "fan")
    twice = [play(video["video_id"]), play(video["video_id"])]
    assert views(edge, twice, token=fan.token).status == 200
    assert views(edge, [play(video["video_id"])], token=fan.token).status == 200
    eventually_count(edge, video["video_id"], 1)
    # a second viewer still counts: the count is not stuck
    assert views(edge, [play(video["video_id"])], token=sign_up(edge).token).status == 200
    eventually_count(edge, video["video_id"], 2)


def test_short_plays_and_unknown_or_deleted_videos_are_skipped_not_refused(edge: Http) -> None:
    creator = sign_up(edge, "creator")
    kept, deleted = publish(edge, creator), publish(edge, creator)
    edge.request("DELETE", f"/v1/videos/{deleted['video_id']}", token=creator.token)
    batch = [
        play(kept["video_id"], watched_ms=999),  # under 1 s: not a view
        play(UNKNOWN_ID),
        play(deleted["video_id"]),
        play(kept["video_id"], watched_ms=1000),
    ]
    assert views(edge, batch).status == 200
    eventually_count(edge, kept["video_id"], 1)


def test_malformed_batches_are_400_naming_the_entry(edge: Http) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    vid = video["video_id"]
    too_long = int(video["duration_ms"]) + 5001
    for batch, named in [
        ([], "views"),
        ([play(vid)] * 51, "views"),
        ([play(vid), play("not-a-uuid")], "views[1].video_id"),
        ([play(vid, watched_ms=-1)], "views[0].watched_ms"),
        ([play(vid), play(vid, watched_ms=too_long)], "views[1].watched_ms"),
    ]:
        r = views(edge, batch)
        assert r.status == 400, (named, r.body)
        assert r.json()["message"].startswith(named), r.json()
    # nothing of a refused call was counted
    assert views(edge, [play(vid)]).status == 200
    eventually_count(edge, vid, 1)
    assert view_count(edge, vid) == 1


def test_acknowledged_plays_are_counted_exactly_once_across_a_restart(
    edge: Http, stack: Stack
) -> None:
    video = publish(edge, sign_up(edge, "creator"))
    batch = [play(video["video_id"])] * 10
    replies = in_parallel(edge.port, [lambda h: views(h, batch)] * 20, workers=8)
    assert {r.status for r in replies} == {200}
    # every counting instance dies at once, with plays in the outbox, on the stream or read
    # but not acknowledged; the restarted ones must count each exactly once
    names = [inst.name for inst in stack.topo.instances_of("activity")]
    for name in names:
        stack.services[name].kill()
    for name in names:
        stack.restart_service(name)
    eventually_count(edge, video["video_id"], 200, timeout=30)
    assert view_count(edge, video["video_id"]) == 200


def _for_you_served(http: Http, until: set[str], token: str | None = None) -> list[str]:
    """A for-you session's videos, page after page, until ``until`` were all served (or the
    session ends)."""
    served: list[str] = []
    cursor = ""
    for _ in range(30):
        r = http.get(f"/v1/feed?kind=for_you&page_size=50&cursor={cursor}", token=token)
        assert r.status == 200, r.body
        page = r.json()
        served += [v["video_id"] for v in page["items"]]
        cursor = page["next_cursor"]
        if until <= set(served) or not cursor:
            break
    return served


def _for_you_order(http: Http, wanted: set[str]) -> list[str]:
    """Where ``wanted`` stand in the anonymous for-you feed (the global ranking); each walk a
    new anonymous reader (a client address of its own: polling this is many calls)."""
    http.client_address = random_address()
    return [v for v in _for_you_served(http, wanted) if v in wanted]


def test_a_video_that_holds_viewers_outranks_one_with_equal_likes_swiped_away(
    edge: Http,
) -> None:
    held = publish(edge, sign_up(edge, "creator"))  # the older of the two: decay favours the other
    swiped = publish(edge, sign_up(edge, "creator"))
    ids = {held["video_id"], swiped["video_id"]}
    # equal likes (none) and equal watch time; only completion differs
    assert views(edge, [play(held["video_id"], 2000, completed=True)] * 20).status == 200
    assert views(edge, [play(swiped["video_id"], 2000, completed=False)] * 20).status == 200
    eventually_count(edge, held["video_id"], 20)
    eventually_count(edge, swiped["video_id"], 20)
    # the builder re-ranks every 10 s
    eventually(
        lambda: _for_you_order(edge, ids) == [held["video_id"], swiped["video_id"]],
        timeout=30,
        interval=0.5,
    )


def test_a_video_a_reader_played_to_the_end_leaves_their_for_you(edge: Http, stack: Stack) -> None:
    done, other = publish(edge, sign_up(edge, "creator")), publish(edge, sign_up(edge, "creator"))
    ids = {done["video_id"], other["video_id"]}
    eventually(lambda: set(_for_you_order(edge, ids)) == ids, timeout=30, interval=0.5)
    reader = sign_up(edge, "reader")
    assert views(edge, [play(done["video_id"], completed=True)], token=reader.token).status == 200
    client = valkey(stack)
    try:  # the builder has passed it on (it marks the video served in the reader's for-you)
        seen = keys.feed_seen(reader.user_id, "for_you")
        eventually(lambda: client.sismember(seen, done["video_id"]), timeout=10)
    finally:
        client.close()
    served = _for_you_served(edge, {other["video_id"]}, token=reader.token)
    assert other["video_id"] in served
    assert done["video_id"] not in served
