"""Likes benchmark, in one run on its own stack (free ports, temp dir):

1. CreateLike throughput through the edge (gRPC, JWT checked by Envoy) when every like hits ONE
   hot video, vs the same load spread over 1,000 videos; rounds interleaved. Every like is a new
   (user, video) pair, so each is a real write and a real event. The ratio hot/spread shows
   whether a hot video queues on a row lock (goal: >= 0.8).
2. Counter convergence under the hot load: for the i-th acknowledged like, the time until the
   Redis mirror of the hot video's like_count reaches i (polled every millisecond).
3. Exactness: after the run, every video's like_count equals the likes acknowledged for it.

Users and videos are seeded with SQL (signing up 40k users through Argon2 would take the run's
whole budget); tokens are signed with the stack's own key, exactly as sign-in signs them.

    python -m bench.likes        (make bench)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import threading
import time
from collections.abc import Mapping

import grpc
import psycopg
import redis

from bench.common import BENCH_SESSION, LOAD_ENV, run_on_own_stack, token_issuer
from mesh import keys
from stack.launcher import Stack
from tests.helpers import Http, eventually
from tiktok.v1 import activity_pb2, activity_pb2_grpc

ROUNDS = 3
ROUND_SECONDS = 4.0
WORKERS = 2  # load generator processes
IN_FLIGHT = 32  # concurrent calls per process
SPREAD_VIDEOS = 1000
USERS = 40_000


# --- seeding -----------------------------------------------------------------------------------


def seed_users(database_url: str, n: int) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(
            "INSERT INTO activity.users (handle, display_name, password_hash)"
            " SELECT 'bench_' || i, 'bench ' || i, 'not-a-hash' FROM generate_series(1, %s) i"
            " RETURNING user_id",
            [n],
        )
        return [str(r[0]) for r in cur.fetchall()]


def seed_videos(database_url: str, creator_id: str, n: int) -> list[str]:
    """``n`` published videos of ``creator_id``, as upload_svc would have stored them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO upload.uploads (upload_id, owner_id, object_key, content_type,"
            " size_bytes, expires_at, state)"
            " SELECT u, %s, 'v/' || u, 'video/mp4', 1000, now(), 'published'"
            " FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, %s)) s",
            [creator_id, n],
        )
        cur = conn.execute(
            "INSERT INTO upload.videos (upload_id, creator_id, caption, object_key,"
            " thumbnail_key, content_type, size_bytes, duration_ms, width, height)"
            " SELECT upload_id, owner_id, 'bench', 'm/' || upload_id, 't/' || upload_id || '.jpg',"
            " 'video/mp4', 1000, 1000, 16, 16 FROM upload.uploads WHERE owner_id = %s"
            " RETURNING video_id",
            [creator_id],
        )
        return [str(r[0]) for r in cur.fetchall()]


# --- load --------------------------------------------------------------------------------------


def _like_worker(args: tuple[int, list[tuple[str, str]], float]) -> tuple[list[float], int]:
    """Sends the (token, video_id) likes with IN_FLIGHT concurrent calls until they run out or
    ``seconds`` pass; returns the monotonic times of the acknowledgements and the error count."""
    port, jobs, seconds = args
    import uvloop

    return uvloop.run(_like_load(port, jobs, seconds))


async def _like_load(
    port: int, jobs: list[tuple[str, str]], seconds: float
) -> tuple[list[float], int]:
    acks: list[float] = []
    errors = 0
    todo = iter(jobs)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = activity_pb2_grpc.ActivityServiceStub(channel)
        deadline = time.monotonic() + seconds

        async def client() -> None:
            nonlocal errors
            for token, video_id in todo:
                if time.monotonic() >= deadline:
                    return
                try:
                    await stub.CreateLike(
                        activity_pb2.CreateLikeRequest(video_id=video_id),
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=10,
                    )
                    acks.append(time.monotonic())
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    return acks, errors


class MirrorPoller:
    """Polls a video's mirrored count (``field``, like_count by default) every millisecond:
    (monotonic time, count)."""

    def __init__(self, redis_url: str, video_id: str, field: str = "like_count") -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.key = keys.video_counts(video_id)
        self.field = field
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            value = self.client.hget(self.key, self.field)
            self.samples.append((time.monotonic(), int(value or 0)))
            self._stop.wait(0.001)

    def __enter__(self) -> MirrorPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


def convergence_ms(
    acks: list[float], samples: list[tuple[float, int]], base: int, step: int = 1
) -> list[float]:
    """For the i-th acknowledgement (each adding ``step``), the time until the mirror showed
    base + step·i."""
    out = []
    j = 0
    for i, acked in enumerate(sorted(acks), start=1):
        while j < len(samples) and samples[j][1] < base + step * i:
            j += 1
        if j == len(samples):
            break
        out.append(max(0.0, samples[j][0] - acked) * 1000)
    return out


def latency_summary(values: list[float]) -> dict:
    """p50, p99 and max of latencies in ms, and how many there were."""
    return {
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1),
        "samples": len(values),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- the run -----------------------------------------------------------------------------------


def main() -> None:
    run_on_own_stack("likes", run, LOAD_ENV)


def run(stack: Stack) -> dict:
    settings = stack.settings
    port = stack.topo.edge_port
    users = seed_users(settings.database_url, USERS)
    creator, likers = users[0], users[1:]
    videos = seed_videos(settings.database_url, creator, SPREAD_VIDEOS + ROUNDS)
    hot_videos, spread = videos[:ROUNDS], videos[ROUNDS:]
    issuer = token_issuer(settings)
    tokens = [issuer.issue(u, BENCH_SESSION).token for u in likers]
    per_round = len(tokens) // (2 * ROUNDS)
    rounds: dict[str, list[float]] = {"hot": [], "spread": []}
    converge: list[float] = []
    errors = 0

    def load(jobs: list[tuple[str, str]], pool) -> tuple[list[float], int]:
        chunks = [jobs[i::WORKERS] for i in range(WORKERS)]
        replies = pool.map(_like_worker, [(port, c, ROUND_SECONDS) for c in chunks])
        return [t for acks, _ in replies for t in acks], sum(e for _, e in replies)

    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        slices = iter(range(0, 2 * ROUNDS * per_round, per_round))
        for r in range(ROUNDS):
            start = next(slices)
            hot_jobs = [(t, hot_videos[r]) for t in tokens[start : start + per_round]]
            with MirrorPoller(settings.redis_url, hot_videos[r]) as poller:
                acks, failed = load(hot_jobs, pool)
            rounds["hot"].append(len(acks) / ROUND_SECONDS)
            converge += convergence_ms(acks, poller.samples, 0)
            errors += failed
            start = next(slices)
            spread_jobs = [
                (t, spread[i % SPREAD_VIDEOS])
                for i, t in enumerate(tokens[start : start + per_round])
            ]
            # the poller runs here too, on a spread video, so both phases carry its CPU cost
            with MirrorPoller(settings.redis_url, spread[0]):
                acks, failed = load(spread_jobs, pool)
            rounds["spread"].append(len(acks) / ROUND_SECONDS)
            errors += failed

    exact = check_exact(stack, hot_videos, spread)
    hot, spread_rate = statistics.median(rounds["hot"]), statistics.median(rounds["spread"])
    return {
        "likes_per_s_one_hot_video": round(hot, 1),
        "likes_per_s_spread_over_1000_videos": round(spread_rate, 1),
        "hot_over_spread": round(hot / spread_rate, 2),
        "rounds": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
        "errors": errors,
        "convergence_ms_under_hot_load": latency_summary(converge),
        "counts_exact": exact,
        "load": f"{WORKERS} processes x {IN_FLIGHT} in flight, gRPC through the edge",
    }


def check_exact(stack: Stack, hot_videos: list[str], spread: list[str]) -> bool:
    """Every video's mirrored and served like_count equals its rows in activity.likes."""
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        rows = dict(
            conn.execute(
                "SELECT video_id::text, count(*) FROM activity.likes GROUP BY video_id"
            ).fetchall()
        )
    wanted = {video_id: rows.get(video_id, 0) for video_id in hot_videos + spread[:50]}
    return served_counts_equal(stack, "like_count", wanted)


def served_counts_equal(stack: Stack, field: str, wanted: Mapping[str, int]) -> bool:
    """Whether every video's served ``field`` reaches its wanted value within 30 s."""
    edge = Http(stack.topo.edge_port)
    try:
        for video_id, want in wanted.items():
            eventually(
                lambda video_id=video_id, want=want: (
                    int(edge.get(f"/v1/videos/{video_id}").json()[field]) == want
                ),
                timeout=30,
            )
    except AssertionError:
        return False
    finally:
        edge.close()
    return True


if __name__ == "__main__":
    main()
