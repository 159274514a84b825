"""Plays benchmark (issue 16), in one run on its own stack (free ports, temp dir), load through
the edge over gRPC (the same client as bench/likes.py), rounds interleaved:

1. Plays accepted per second (RecordViews calls of 10 plays, anonymous) vs likes per second
   (CreateLike, each a new pair) on the same stack.
2. Plays per second when every play is of ONE video vs spread over 1,000 videos.
3. Play acknowledged → counted, under the one-video load: for the i-th acknowledged call, the
   time until the mirrored view_count of that video reached 10·i (polled every millisecond).
4. Exactness: after the run, every video's served view_count equals the plays acknowledged for
   it (anonymous plays are never deduplicated).

    python -m bench.views        (make bench)
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import random
import statistics
import time

import grpc

from bench.common import BENCH_SESSION, LOAD_ENV, run_on_own_stack, token_issuer
from bench.likes import (
    IN_FLIGHT,
    ROUND_SECONDS,
    ROUNDS,
    SPREAD_VIDEOS,
    WORKERS,
    MirrorPoller,
    _like_worker,
    convergence_ms,
    latency_summary,
    seed_users,
    seed_videos,
    served_counts_equal,
)
from stack.launcher import Stack
from tiktok.v1 import activity_pb2, activity_pb2_grpc

BATCH = 10
LIKERS = 20_000


def _play_worker(args: tuple[int, list[str], float, int]) -> tuple[list[float], dict, int]:
    """RecordViews calls of BATCH plays of random videos among ``videos`` for ``seconds``:
    (ack times, plays acknowledged per video, errors)."""
    port, videos, seconds, seed = args
    import uvloop

    rng = random.Random(seed)  # noqa: S311 - which video a play is of, not a secret
    return uvloop.run(_play_load(port, videos, seconds, rng))


async def _play_load(
    port: int, videos: list[str], seconds: float, rng: random.Random
) -> tuple[list[float], dict, int]:
    acks: list[float] = []
    counted: collections.Counter[str] = collections.Counter()
    errors = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = activity_pb2_grpc.ActivityServiceStub(channel)
        deadline = time.monotonic() + seconds

        async def client() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                batch = [rng.choice(videos) for _ in range(BATCH)]
                request = activity_pb2.RecordViewsRequest(
                    views=[activity_pb2.View(video_id=v, watched_ms=1500) for v in batch]
                )
                try:
                    await stub.RecordViews(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                acks.append(time.monotonic())
                counted.update(batch)

        await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    return acks, dict(counted), errors


def main() -> None:
    run_on_own_stack("views", run, LOAD_ENV)


def run(stack: Stack) -> dict:
    settings = stack.settings
    port = stack.topo.edge_port
    users = seed_users(settings.database_url, LIKERS)
    creator, likers = users[0], users[1:]
    videos = seed_videos(settings.database_url, creator, SPREAD_VIDEOS + 2 * ROUNDS)
    hot_videos, like_videos, spread = (
        videos[:ROUNDS],
        videos[ROUNDS : 2 * ROUNDS],
        videos[2 * ROUNDS :],
    )
    issuer = token_issuer(settings)
    tokens = [issuer.issue(u, BENCH_SESSION).token for u in likers]
    per_round = len(tokens) // ROUNDS
    rates: dict[str, list[float]] = {"likes": [], "plays_hot": [], "plays_spread": []}
    converge: list[float] = []
    sent: collections.Counter[str] = collections.Counter()
    errors = 0

    def plays(pool, targets: list[str]) -> tuple[list[float], int]:
        nonlocal errors
        replies = pool.map(
            _play_worker,
            [(port, targets, ROUND_SECONDS, seed) for seed in range(WORKERS)],
        )
        acks: list[float] = []
        for worker_acks, counted, failed in replies:
            acks += worker_acks
            sent.update(counted)
            errors += failed
        return acks, len(acks) * BATCH

    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        for r in range(ROUNDS):
            jobs = [(t, like_videos[r]) for t in tokens[r * per_round : (r + 1) * per_round]]
            chunks = [jobs[i::WORKERS] for i in range(WORKERS)]
            replies = pool.map(_like_worker, [(port, c, ROUND_SECONDS) for c in chunks])
            rates["likes"].append(sum(len(a) for a, _ in replies) / ROUND_SECONDS)
            errors += sum(e for _, e in replies)
            with MirrorPoller(settings.redis_url, hot_videos[r], "view_count") as poller:
                acks, n = plays(pool, [hot_videos[r]])
            rates["plays_hot"].append(n / ROUND_SECONDS)
            converge += convergence_ms(acks, poller.samples, 0, step=BATCH)
            with MirrorPoller(settings.redis_url, spread[0], "view_count"):
                _, n = plays(pool, spread)
            rates["plays_spread"].append(n / ROUND_SECONDS)

    exact = served_counts_equal(stack, "view_count", sent)
    likes, hot, spread_rate = (statistics.median(rates[k]) for k in rates)
    return {
        "plays_per_s_batches_of_10": round(hot, 1),
        "likes_per_s": round(likes, 1),
        "plays_over_likes": round(hot / likes, 2),
        "plays_per_s_spread_over_1000_videos": round(spread_rate, 1),
        "one_video_over_spread": round(hot / spread_rate, 2),
        "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "errors": errors,
        "ack_to_counted_ms_under_one_video_load": latency_summary(converge),
        "counts_exact": exact,
        "plays_acknowledged": sum(sent.values()),
        "load": f"{WORKERS} processes x {IN_FLIGHT} in flight, gRPC through the edge",
    }


if __name__ == "__main__":
    main()
