"""The media edge (nginx, the CDN stand-in) as players and abusers meet it: ranges and HEADs right
whatever came first, the query string not part of an object's identity, one origin fetch for a
herd, pending uploads private, deletions gone within 60 s, and a bound that holds."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from mesh.clients import s3_client
from stack.launcher import Stack
from stack.media_edge import access_log, cache_dir
from stack.media_metrics import cache_bytes
from stack.procs import rss_bytes
from tests.helpers import Http, eventually, sign_up
from tests.videos import clip, fetch, publish, put, ticket

IMMUTABLE = "public, max-age=31536000, immutable"


def origin_fetches(stack: Stack, key: str) -> int:
    """Requests for ``key`` the edge passed to storage (its access log names the origin status)."""
    count = 0
    for line in access_log(stack.topo).read_text().splitlines():
        entry = json.loads(line)
        if entry["uri"].split("?")[0].endswith(key) and entry["origin_status"]:
            count += 1
    return count


def requests_logged(stack: Stack, key: str) -> int:
    return sum(1 for line in access_log(stack.topo).read_text().splitlines() if key in line)


def media_key(url: str) -> str:
    return url.split("/media/", 1)[1]


def head(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, method="HEAD", headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 - our own edge
            return r.status, {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}


def test_playback_urls_name_the_media_edge(edge: Http, stack: Stack) -> None:
    video = publish(edge, sign_up(edge))
    assert video["playback_url"].startswith(f"{stack.media_url}/media/m/")
    assert video["thumbnail_url"].startswith(f"{stack.media_url}/media/t/")


def test_a_first_ranged_request_never_makes_a_later_get_partial(edge: Http, stack: Stack) -> None:
    data = clip()
    url = publish(edge, sign_up(edge), data)["playback_url"]
    status, headers, body = fetch(url, {"Range": "bytes=0-1"})  # what Safari asks first
    assert status == 206 and body == data[:2]
    assert headers["content-range"] == f"bytes 0-1/{len(data)}"

    status, headers, body = fetch(url)
    assert status == 200 and body == data and headers["cache-control"] == IMMUTABLE
    status, headers, body = fetch(url, {"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    status, _, body = fetch(url, {"Range": "bytes=-500"})  # the last 500 bytes (the MP4 index)
    assert status == 206 and body == data[-500:]
    status, _, body = fetch(url, {"Range": f"bytes={len(data) - 10}-"})
    assert status == 206 and body == data[-10:]
    status, headers = head(url)
    assert status == 200 and int(headers["content-length"]) == len(data)
    eventually(lambda: requests_logged(stack, media_key(url)) == 6)
    assert origin_fetches(stack, media_key(url)) == 1


def test_a_first_head_is_answered_and_the_get_after_it_is_whole(edge: Http, stack: Stack) -> None:
    data = clip()
    url = publish(edge, sign_up(edge), data)["playback_url"]
    status, headers = head(url)
    assert status == 200 and int(headers["content-length"]) == len(data)
    assert headers["accept-ranges"] == "bytes"
    status, _, body = fetch(url)
    assert status == 200 and body == data
    status, headers = head(url, {"Range": "bytes=0-99"})
    assert status == 206 and headers["content-range"] == f"bytes 0-99/{len(data)}"


def test_the_query_string_is_not_part_of_an_objects_identity(edge: Http, stack: Stack) -> None:
    data = clip()
    url = publish(edge, sign_up(edge), data)["playback_url"]
    for n in range(20):
        status, _, body = fetch(f"{url}?n={n}&cache-buster={uuid.uuid4()}")
        assert status == 200 and body == data
    eventually(lambda: requests_logged(stack, media_key(url)) == 20)
    assert origin_fetches(stack, media_key(url)) == 1


def test_a_herd_of_first_viewers_costs_storage_one_fetch(edge: Http, stack: Stack) -> None:
    data = os.urandom(3 * 1024 * 1024)
    key = f"m/{uuid.uuid4()}"
    s3_client(stack.settings).put_object(
        Bucket=stack.settings.s3_bucket, Key=key, Body=data, ContentType="video/mp4"
    )
    url = f"{stack.media_url}/media/{key}"
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(lambda _: fetch(url), range(64)))
    assert all(status == 200 and body == data for status, _, body in results)
    eventually(lambda: requests_logged(stack, key) == 64)
    assert origin_fetches(stack, key) <= 2


def test_unknown_keys_are_404_and_never_cached_as_200(stack: Stack) -> None:
    for path in (f"m/{uuid.uuid4()}", f"t/{uuid.uuid4()}.jpg", f"h/{uuid.uuid4()}/master.m3u8",
                 "m/not-a-key", "../videos/x", "secret.txt"):  # fmt: skip
        for _ in range(2):
            assert fetch(f"{stack.media_url}/media/{path}")[0] == 404, path
    assert fetch(f"{stack.media_url}/nothing")[0] == 404


def test_only_get_and_head_are_answered(edge: Http, stack: Stack) -> None:
    url = publish(edge, sign_up(edge))["playback_url"]
    for method in ("POST", "PUT", "DELETE"):
        request = urllib.request.Request(url, data=b"x", method=method)  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
        assert e.value.code == 405


def test_players_on_other_origins_get_one_cors_answer_and_preflights(
    edge: Http, stack: Stack
) -> None:
    """Storage echoes an Origin in its own CORS headers; a cached copy of those plus the edge's
    would be two Allow-Origin values, which browsers refuse (the web client is another origin)."""
    url = publish(edge, sign_up(edge))["playback_url"]
    for origin in ("http://a.example", "http://b.example"):  # a miss, then a hit
        request = urllib.request.Request(url, headers={"Origin": origin})  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
            assert r.headers.get_all("Access-Control-Allow-Origin") == ["*"]
    preflight = urllib.request.Request(  # noqa: S310
        url,
        method="OPTIONS",
        headers={
            "Origin": "http://a.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-player-session",
        },
    )
    with urllib.request.urlopen(preflight, timeout=10) as r:  # noqa: S310
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == "*"


@pytest.mark.parametrize(
    "value",
    [
        "bytes=abc",
        "bytes=5-1",
        "bytes=99999999-",
        "pages=0-1",
        "bytes=",
        "bytes=-0",
        "bytes=0-1,2-3,,",
        "bytes=" + "1" * 300 + "-",
    ],
)
def test_malformed_ranges_are_416_or_the_whole_object_never_5xx(
    edge: Http, stack: Stack, value: str
) -> None:
    data = clip()
    url = publish(edge, sign_up(edge), data)["playback_url"]
    status, _, body = fetch(url, {"Range": value})
    assert status in (200, 206, 416), status
    if status == 200:
        assert body == data
    status, _, body = fetch(url)  # and nothing partial was left behind
    assert status == 200 and body == data


def test_pending_uploads_are_private(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    data = clip()
    up = ticket(edge, user, len(data))
    assert put(up["upload_url"], data, up["upload_headers"]) == 200
    pending = f"v/{up['upload_id']}"
    assert fetch(f"{stack.media_url}/media/{pending}")[0] == 404
    assert fetch(f"http://127.0.0.1:{stack.topo.edge_port}/media/{pending}")[0] == 404
    # storage itself refuses anonymous reads outside the published prefixes
    storage = stack.settings.s3_endpoint
    assert fetch(f"{storage}/{stack.settings.s3_bucket}/{pending}")[0] == 403
    assert fetch(f"{storage}/{stack.settings.s3_bucket}/?list-type=2")[0] == 403
    video = edge.post("/v1/videos", {"upload_id": up["upload_id"]}, token=user.token).json()
    published = f"{storage}/{stack.settings.s3_bucket}/{media_key(video['playback_url'])}"
    assert fetch(published)[0] == 200


def test_the_api_host_serves_media_too(edge: Http, stack: Stack) -> None:
    data = clip()
    key = media_key(publish(edge, sign_up(edge), data)["playback_url"])
    url = f"http://127.0.0.1:{stack.topo.edge_port}/media/{key}"
    status, _, body = fetch(url, {"Range": "bytes=0-1"})
    assert status == 206 and body == data[:2]
    status, _, body = fetch(url)
    assert status == 200 and body == data


def test_a_deleted_videos_media_is_gone_from_the_edge_within_60_s(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    video = publish(edge, user)
    for url in (video["playback_url"], video["thumbnail_url"]):
        assert fetch(url)[0] == 200  # now in the edge's cache
    r = edge.request("DELETE", f"/v1/videos/{video['video_id']}", token=user.token)
    assert r.status == 200
    for url in (video["playback_url"], video["thumbnail_url"]):
        eventually(lambda u=url: fetch(u)[0] == 404, timeout=60, interval=1)


def _cache_bytes(stack: Stack) -> int:
    return cache_bytes(cache_dir(stack.topo))


def test_the_cache_bound_holds_and_the_api_stays_up(edge: Http, stack: Stack) -> None:
    limit = stack.settings.media_cache_max_bytes
    edge_proc = next(p for layer in stack.layers for p in layer if p.name == "media-edge")
    assert edge_proc.pid is not None
    object_size = 2 * 1024 * 1024
    keys = [f"m/{uuid.uuid4()}" for _ in range(10 * limit // object_size)]
    client = s3_client(stack.settings)
    body = os.urandom(object_size)

    def put_and_get(key: str) -> int:
        client.put_object(Bucket=stack.settings.s3_bucket, Key=key, Body=body)
        for n in range(3):  # distinct query strings too
            status, _, got = fetch(f"{stack.media_url}/media/{key}?n={n}")
            assert status == 200 and len(got) == object_size
        return status

    user = sign_up(edge)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(put_and_get, keys)) == {200}
    # the cache manager evicts least recently used entries down to the limit
    eventually(lambda: _cache_bytes(stack) <= limit + object_size, timeout=20, interval=0.5)
    assert rss_bytes(edge_proc.pid) <= 64 * 1024 * 1024
    assert edge.get(f"/v1/users/{user.user_id}").status == 200
    # the most recent objects are still served from the cache, the first ones again from storage
    assert fetch(f"{stack.media_url}/media/{keys[0]}")[0] == 200


def _metric(stack: Stack, name: str, **labels: str) -> float:
    url = f"http://127.0.0.1:{stack.topo.media_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_edge_counts_hits_misses_bytes_and_origin_fetches(edge: Http, stack: Stack) -> None:
    data = clip()
    url = publish(edge, sign_up(edge), data)["playback_url"]
    before = {
        "hits": _metric(stack, "media_edge_requests_total", cache="HIT"),
        "misses": _metric(stack, "media_edge_requests_total", cache="MISS"),
        "fetches": _metric(stack, "media_edge_origin_fetches_total", status="200"),
        "bytes": _metric(stack, "media_edge_response_bytes_total", cache="HIT"),
    }
    for _ in range(3):
        assert fetch(url)[0] == 200

    def counted() -> bool:
        return (
            _metric(stack, "media_edge_requests_total", cache="MISS") >= before["misses"] + 1
            and _metric(stack, "media_edge_requests_total", cache="HIT") >= before["hits"] + 2
            and _metric(stack, "media_edge_origin_fetches_total", status="200")
            >= before["fetches"] + 1
            and _metric(stack, "media_edge_response_bytes_total", cache="HIT")
            >= before["bytes"] + 2 * len(data)
        )

    eventually(counted, timeout=10, interval=0.2)
    eventually(lambda: _metric(stack, "media_edge_cache_bytes") > 0, timeout=10)
