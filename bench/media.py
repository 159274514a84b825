"""Media benchmark, in one run on its own stack (free ports, temp dir), load from wrk (C):

1. Origin fetches for one 20 MB object under a herd of 200 concurrent first viewers.
2. Throughput of the media edge (cache hits) vs the origin (the same object straight from
   storage), for a 10 KB object and a 20 MB clip: wrk, rounds interleaved; with the CPU each
   side spent per GB served.
3. The media edge's memory (nginx, master + worker) while 10× its cache limit of distinct
   objects and query strings is requested, and the cache's size on disk after.
4. Transcode time of a 60 s 720p clip with sound (the full ladder) / the clip's duration.
5. Feed p99 at 100 calls/s (wrk, paced) while a transcode runs / the same without, interleaved.

    python -m bench.media        (make bench)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from bench.common import (
    LOAD_ENV,
    RESULTS,
    lua,
    paced_feed_script,
    readers_with_a_feed,
    run_on_own_stack,
    wrk,
)
from bench.uploads import publish_timed
from mesh.clients import s3_client
from stack.launcher import Stack
from stack.media_edge import cache_dir
from stack.media_metrics import cache_bytes
from stack.procs import process_tree, rss_bytes
from tests.helpers import Http, sign_up
from upload_svc.renditions import ffmpeg_binary

CACHE_LIMIT = 128 * 1024 * 1024
ENV = LOAD_ENV | {"MEDIA_CACHE_MAX_BYTES": str(CACHE_LIMIT)}
ROUNDS = 3


def main() -> None:
    results = run_on_own_stack("media", run, ENV)
    plot(results)


def run(stack: Stack) -> dict:
    edge = Http(stack.topo.edge_port)
    user = sign_up(edge, "bench")
    storage = s3_client(stack.settings)
    bucket = stack.settings.s3_bucket

    def put(key: str, data: bytes, content_type: str = "video/mp4") -> None:
        storage.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    herd = measure_herd(stack, put)
    throughput = measure_throughput(stack, put)
    memory = measure_edge_memory(stack, put)
    feed = measure_feed_under_transcoding(stack, edge, user.token)
    edge.close()
    transcode = feed.pop("transcodes")
    ratios = {
        "herd_origin_fetches": herd["origin_fetches"],
        "edge_over_origin_10KB": throughput["10KB"]["edge_over_origin"],
        "edge_over_origin_20MB": throughput["20MB"]["edge_over_origin"],
        "edge_rss_over_limit_plus_64MiB": round(
            memory["peak_rss_bytes"] / (CACHE_LIMIT + 64 * 1024 * 1024), 3
        ),
        "transcode_over_clip_duration": transcode["over_duration_median"],
        "feed_p99_transcoding_over_idle": feed["p99_ratio"],
    }
    return {
        "ratios": ratios,
        "herd": herd,
        "throughput": throughput,
        "edge_memory": memory,
        "transcode_60s_720p": transcode,
        "feed_at_100_per_s": feed,
    }


# --- 1. the herd -------------------------------------------------------------------------------


def _origin_fetches(stack: Stack) -> float:
    url = f"http://127.0.0.1:{stack.topo.media_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("media_edge_origin_fetches_total{")
    )


def _settled_fetches(stack: Stack) -> float:
    """Origin fetches once the exporter has read the access log up to now (flushed every 1 s)."""
    time.sleep(2.5)  # the log's flush interval plus the exporter's poll: a benchmark, not a test
    return _origin_fetches(stack)


def measure_herd(stack: Stack, put) -> dict:
    data = os.urandom(20 * 1000 * 1000)
    key = f"m/{uuid.uuid4()}"
    put(key, data)
    url = f"{stack.media_url}/media/{key}"
    before = _settled_fetches(stack)
    start = threading.Barrier(200)
    statuses: list[int] = []

    def viewer() -> None:
        start.wait()
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - our own edge
            body = r.read()
        statuses.append(r.status if len(body) == len(data) else -1)

    threads = [threading.Thread(target=viewer) for _ in range(200)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {
        "viewers": 200,
        "object_bytes": len(data),
        "whole_answers": statuses.count(200),
        "origin_fetches": int(_settled_fetches(stack) - before),
        "all_served_in_s": round(took, 2),
    }


# --- 2. throughput -----------------------------------------------------------------------------


def _cpu_seconds(root: int | None) -> float:
    """CPU time of a process and its children now (nginx's cache loader comes and goes)."""
    total = 0
    for pid in process_tree(root) if root else []:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def _pid_of(stack: Stack, name: str) -> int:
    proc = next(p for layer in stack.layers for p in layer if p.name == name)
    assert proc.pid is not None
    return proc.pid


def measure_throughput(stack: Stack, put) -> dict:
    edge_pid, origin_pid = _pid_of(stack, "media-edge"), _pid_of(stack, "seaweedfs")
    results = {}
    for name, size in (("10KB", 10_000), ("20MB", 20_000_000)):
        key = f"t/{uuid.uuid4()}.jpg" if size < 1_000_000 else f"m/{uuid.uuid4()}"
        put(key, os.urandom(size))
        edge_url = f"{stack.media_url}/media/{key}"
        origin_url = f"{stack.settings.s3_endpoint}/{stack.settings.s3_bucket}/{key}"
        api_url = f"http://127.0.0.1:{stack.topo.edge_port}/media/{key}"
        urllib.request.urlopen(edge_url, timeout=30).read()  # noqa: S310 - fill the cache
        rounds: dict[str, list[float]] = {"edge": [], "origin": [], "api_host": []}
        cpu: dict[str, float] = {"edge": 0.0, "origin": 0.0}
        served: dict[str, float] = {"edge": 0.0, "origin": 0.0}
        for _ in range(ROUNDS):
            for target, url, pid in (("edge", edge_url, edge_pid),
                                     ("origin", origin_url, origin_pid),
                                     ("api_host", api_url, None)):  # fmt: skip
                before = _cpu_seconds(pid)
                result = wrk(url, 4, 16)
                assert result["non_2xx"] == 0, result
                rounds[target].append(result["req_per_s"])
                if target in cpu:
                    cpu[target] += _cpu_seconds(pid) - before
                    served[target] += result["req_per_s"] * 4 * size
        edge, origin = statistics.median(rounds["edge"]), statistics.median(rounds["origin"])
        results[name] = {
            "object_bytes": size,
            "edge_req_per_s": round(edge, 1),
            "origin_req_per_s": round(origin, 1),
            "via_api_host_req_per_s": round(statistics.median(rounds["api_host"]), 1),
            "edge_over_origin": round(edge / origin, 2),
            "cpu_s_per_GB": {k: round(cpu[k] / (served[k] / 1e9), 3) for k in cpu},
            "rounds": rounds,
        }
    return results


# --- 3. the cache bound ------------------------------------------------------------------------


def measure_edge_memory(stack: Stack, put) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    edge_pid = _pid_of(stack, "media-edge")
    object_size = 4 * 1024 * 1024
    body = os.urandom(object_size)
    keys = [f"m/{uuid.uuid4()}" for _ in range(10 * CACHE_LIMIT // object_size)]
    peak = rss_bytes(edge_pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(edge_pid))
            time.sleep(0.05)

    def fill(key: str) -> None:
        put(key, body)
        for n in range(2):
            urllib.request.urlopen(f"{stack.media_url}/media/{key}?n={n}", timeout=30).read()  # noqa: S310

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fill, keys))
    took = time.perf_counter() - t0
    cache = cache_dir(stack.topo)
    right_after = cache_bytes(cache)
    # nginx's cache manager evicts on its own schedule (it wakes at least every 10 s)
    deadline = time.perf_counter() + 30
    while (on_disk := cache_bytes(cache)) > CACHE_LIMIT + object_size:
        if time.perf_counter() > deadline:
            break
        time.sleep(0.5)
    bounded_after = time.perf_counter() - t0 - took
    stop.set()
    sampler.join()
    return {
        "cache_limit_bytes": CACHE_LIMIT,
        "requested_bytes": len(keys) * object_size * 2,
        "distinct_objects": len(keys),
        "peak_rss_bytes": peak,
        "cache_on_disk_right_after_fill_bytes": right_after,
        "cache_on_disk_bytes": on_disk,
        "seconds_until_disk_within_limit": round(bounded_after, 1),
        "fill_seconds": round(took, 1),
    }


# --- 4 and 5. transcoding, and the feed while it runs --------------------------------------------


def source_clip_720p(seconds: int = 60) -> bytes:
    """A 720×1280 H.264 clip with an AAC tone, like a phone's (ffmpeg's test pattern)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mp4"
        subprocess.run(
            [ffmpeg_binary(), "-v", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=720x1280:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
             "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2500k",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", str(out)],
            check=True,
        )  # fmt: skip
        return out.read_bytes()


def _state(edge: Http, video_id: str) -> str:
    return edge.get(f"/v1/videos/{video_id}").json()["state"]


def measure_feed_under_transcoding(stack: Stack, edge: Http, token: str) -> dict:
    reader = readers_with_a_feed(edge, 1)[0]
    source = source_clip_720p()
    feed_url = f"http://127.0.0.1:{stack.topo.edge_port}/v1/feed?kind=following&page_size=10"
    idle, busy, transcodes = [], [], []
    # 10 connections, each one call every 100 ms: ~100 calls/s
    with lua(paced_feed_script([reader.token])) as script:
        wrk(feed_url, 3, 10, 1, script)  # warm up
        for _ in range(ROUNDS):
            idle.append(wrk(feed_url, 10, 10, 1, script))
            _, video = publish_timed(edge, token, source)
            started = time.perf_counter()
            busy.append(wrk(feed_url, 10, 10, 1, script))
            while (state := _state(edge, video["video_id"])) == "VIDEO_STATE_PROCESSING":
                time.sleep(0.2)
            assert state == "VIDEO_STATE_READY", state
            transcodes.append(time.perf_counter() - started)
    idle_p99 = statistics.median(r["p99_ms"] for r in idle)
    busy_p99 = statistics.median(r["p99_ms"] for r in busy)
    return {
        "idle": idle,
        "transcoding": busy,
        "p99_idle_ms": idle_p99,
        "p99_transcoding_ms": busy_p99,
        "p99_ratio": round(busy_p99 / idle_p99, 2),
        "transcodes": {
            "clip": "60 s, 720x1280, 30 fps, H.264 + AAC",
            "publish_to_ready_s": [round(t, 1) for t in transcodes],
            "over_duration_median": round(statistics.median(transcodes) / 60, 3),
        },
    }


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = results["throughput"]
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(15, 4.5))
    for i, data in enumerate(t.values()):
        left.bar([i - 0.2, i + 0.2], [data["edge_req_per_s"], data["origin_req_per_s"]], 0.4,
                 color=["tab:blue", "tab:gray"])  # fmt: skip
        left.text(i, max(data["edge_req_per_s"], data["origin_req_per_s"]),
                  f"{data['edge_over_origin']}x", ha="center", va="bottom")  # fmt: skip
    left.set_yscale("log")
    left.set_xticks(range(len(t)), list(t))
    left.set_ylabel("requests / s (wrk, median of rounds)")
    left.set_title("Media edge (blue) vs origin (grey)")
    f = results["feed_at_100_per_s"]
    mid.bar(["idle", "transcoding"], [f["p99_idle_ms"], f["p99_transcoding_ms"]],
            color=["tab:gray", "tab:orange"])  # fmt: skip
    mid.set_ylabel("feed p99, ms (100 calls/s)")
    mid.set_title(f"Feed p99 while transcoding: {f['p99_ratio']}x")
    ratios = results["ratios"]
    goals = {
        "herd_origin_fetches": 2, "edge_over_origin_10KB": 5, "edge_over_origin_20MB": 3,
        "edge_rss_over_limit_plus_64MiB": 1, "transcode_over_clip_duration": 1,
        "feed_p99_transcoding_over_idle": 1.5,
    }  # fmt: skip
    right.barh(list(goals), [ratios[k] / goals[k] for k in goals])
    right.axvline(1.0, color="black", linestyle="--")
    right.set_xlabel(
        "measured / goal (≥ 1 is better for the two throughput rows, ≤ 1 for the rest)"
    )
    right.set_title("Figures against their goals")
    fig.tight_layout()
    fig.savefig(RESULTS / "media.png", dpi=110)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
