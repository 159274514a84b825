"""Upload benchmark, in one run on its own stack (free ports, temp dir):

1. CreateVideo time for a 60 s 1080p H.264 clip (presigned PUT first; the time is the completion
   call: HEAD, ranged-read probe, thumbnail, transaction).
2. Peak RSS of upload_svc while completing a 64 MiB upload (VmHWM before and after).
(Media delivery and renditions: bench/media.py.)

    python -m bench.uploads        (make bench)
"""

from __future__ import annotations

import statistics
import struct
import time
import urllib.request
from pathlib import Path

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
    for _ in range(3):
        took, _ = publish_timed(edge, user.token, hd)
        times.append(took)

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
    }


if __name__ == "__main__":
    main()
