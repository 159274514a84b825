"""Upload benchmark, in one run on its own stack (free ports, temp dir):

1. CreateVideo time for a 60 s 1080p H.264 clip (presigned PUT first; the time is the completion
   call: HEAD, ranged-read probe, thumbnail, transaction).
2. Peak RSS of upload_svc while completing a 64 MiB upload (VmHWM before and after).
3. Media GET throughput through the edge cache vs the same GETs uncached (the origin listener
   behind the cache, which goes to storage every time), interleaved in rounds.

    python -m bench.uploads        (make bench)
"""

from __future__ import annotations

import http.client
import multiprocessing
import statistics
import struct
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import run_on_own_stack
from stack.launcher import Stack
from tests.clips import make_clip
from tests.helpers import Http, sign_up


def _put(url: str, data: bytes, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=300) as r:  # noqa: S310 - our own edge
        assert r.status == 200


def publish_timed(edge: Http, token: str, data: bytes) -> tuple[float, dict]:
    r = edge.post(
        "/v1/uploads", {"content_type": "video/mp4", "size_bytes": len(data)}, token=token
    )
    up = r.json()
    _put(up["upload_url"], data, up["upload_headers"])
    start = time.perf_counter()
    r = edge.post("/v1/videos", {"upload_id": up["upload_id"], "caption": "bench"}, token=token)
    took = time.perf_counter() - start
    assert r.status == 200, r.body
    return took, r.json()


def padded_to(data: bytes, size: int) -> bytes:
    """``data`` (an MP4) followed by a top-level 'free' box: a valid MP4 of exactly ``size``."""
    pad = size - len(data)
    return data + struct.pack(">I", pad) + b"free" + bytes(pad - 8)


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _get_loop(args: tuple[str, float]) -> tuple[int, int]:
    url, seconds = args
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    done = nbytes = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        conn.request("GET", parts.path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, r.status
        done += 1
        nbytes += len(body)
    return done, nbytes


def throughput(pool: multiprocessing.pool.Pool, url: str, clients: int, seconds: float) -> float:
    results = pool.map(_get_loop, [(url, seconds)] * clients)
    return sum(n for n, _ in results) / seconds


def main() -> None:
    run_on_own_stack("uploads", run)


def run(stack: Stack) -> dict:
    edge = Http(stack.topo.edge_port)
    user = sign_up(edge, "bench")
    upload_pid = stack.services["upload_svc-0"].pid
    assert upload_pid

    # 2. peak RSS while completing 64 MiB (first, so no earlier peak hides it)
    big = padded_to(make_clip(5, width=640, height=360, fps=24), 64 * 1024 * 1024)
    rss_before = vm_kib(upload_pid, "VmRSS")
    hwm_before = vm_kib(upload_pid, "VmHWM")
    took_64, _ = publish_timed(edge, user.token, big)
    hwm_after = vm_kib(upload_pid, "VmHWM")

    # 1. CreateVideo for a 60 s 1080p clip, three times
    t0 = time.perf_counter()
    hd = make_clip(60, width=1920, height=1080, fps=24)
    encode_s = time.perf_counter() - t0
    times = []
    video = {}
    for _ in range(3):
        took, video = publish_timed(edge, user.token, hd)
        times.append(took)

    # 3. cached vs uncached media GETs, interleaved: the 1080p clip and its thumbnail
    media = {}
    with multiprocessing.Pool(4) as pool:
        for name, url in (("clip", video["playback_url"]), ("thumbnail", video["thumbnail_url"])):
            uncached_url = url.replace(
                f":{stack.topo.edge_port}/", f":{stack.topo.media_origin_port}/"
            )
            rounds: dict[str, list[float]] = {"cached": [], "uncached": []}
            for _ in range(3):
                rounds["cached"].append(throughput(pool, url, 4, 3.0))
                rounds["uncached"].append(throughput(pool, uncached_url, 4, 3.0))
            cached = statistics.median(rounds["cached"])
            uncached = statistics.median(rounds["uncached"])
            media[name] = {
                "object_bytes": len(urllib.request.urlopen(url, timeout=30).read()),  # noqa: S310
                "cached_req_per_s": round(cached, 1),
                "uncached_req_per_s": round(uncached, 1),
                "cached_over_uncached": round(cached / uncached, 2),
                "rounds": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
            }
    edge.close()
    return {
        "create_video_60s_1080p_seconds": {
            "median": round(statistics.median(times), 3),
            "runs": [round(t, 3) for t in times],
            "clip_bytes": len(hd),
            "clip_encode_seconds": round(encode_s, 1),
        },
        "create_video_64MiB": {
            "seconds": round(took_64, 3),
            "upload_svc_rss_before_mib": round(rss_before / 1024, 1),
            "upload_svc_peak_rss_before_mib": round(hwm_before / 1024, 1),
            "upload_svc_peak_rss_after_mib": round(hwm_after / 1024, 1),
        },
        "media_get": media,
    }


if __name__ == "__main__":
    main()
