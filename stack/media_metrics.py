"""python -m stack.media_metrics: Prometheus counters for the media edge, read from its access log.

nginx's open-source build has no counters for its cache, but it logs each request's cache status,
bytes and origin status as one JSON line (cdn/nginx.conf.j2). This process follows that log and
serves ``/metrics``: requests and bytes by cache status, origin fetches and bytes, and the size
of the cache on disk. It shares nothing with the edge but the file, so it cannot slow it down.

python -m stack.media_metrics --log LOG --cache-dir DIR --port PORT [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from prometheus_client import Counter, Gauge, start_http_server

REQUESTS = Counter(
    "media_edge_requests_total", "Requests answered by the media edge.", ["cache", "status"]
)
BYTES = Counter("media_edge_response_bytes_total", "Body bytes sent to clients.", ["cache"])
ORIGIN_FETCHES = Counter(
    "media_edge_origin_fetches_total", "Requests the edge sent to storage.", ["status"]
)
ORIGIN_BYTES = Counter("media_edge_origin_bytes_total", "Bytes received from storage.")
CACHE_BYTES = Gauge("media_edge_cache_bytes", "Bytes of cached objects on disk.")


def record(line: str) -> None:
    """Counts one access-log line; lines that are not the edge's JSON are skipped."""
    try:
        entry = json.loads(line)
    except ValueError:
        return
    cache = entry.get("cache") or "NONE"  # no cache status: not a media object (404, 405)
    REQUESTS.labels(cache, str(entry.get("status", ""))).inc()
    BYTES.labels(cache).inc(int(entry.get("bytes") or 0))
    # "502, 200" when nginx tried twice; "-" for the tries that got no answer
    for status in filter(None, (s.strip() for s in str(entry.get("origin_status", "")).split(","))):
        ORIGIN_FETCHES.labels(status).inc()
    for received in str(entry.get("origin_bytes", "")).split(","):
        if received.strip().isdigit():
            ORIGIN_BYTES.inc(int(received))


def follow(log: Path, poll: float = 0.2) -> None:
    """Reads ``log`` from its start and then as it grows (and from the start again if it is
    truncated or replaced)."""
    while not log.exists():
        time.sleep(poll)
    handle = log.open()
    inode = os.fstat(handle.fileno()).st_ino
    pending = ""
    while True:
        chunk = handle.read()
        if chunk:
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                record(line)
            continue
        time.sleep(poll)
        try:
            stat = log.stat()
        except FileNotFoundError:
            continue
        if stat.st_ino != inode or stat.st_size < handle.tell():
            handle.close()
            handle = log.open()
            inode, pending = os.fstat(handle.fileno()).st_ino, ""


def cache_bytes(cache_dir: Path) -> int:
    total = 0
    for path in cache_dir.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:  # evicted while we looked
            pass
    return total


def measure_cache(cache_dir: Path, every: float = 5.0) -> None:
    while True:
        CACHE_BYTES.set(cache_bytes(cache_dir))
        time.sleep(every)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stack.media_metrics")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    threading.Thread(target=measure_cache, args=(args.cache_dir,), daemon=True).start()
    start_http_server(args.port, addr=args.host)
    follow(args.log)


if __name__ == "__main__":
    main()
