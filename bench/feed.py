"""Feed benchmark, in one run on its own stack (free ports, temp dir). `BENCH_SCALE=0.1` for a
quick run; the default is the full dataset (100k users, 1M videos, 200 follows each).

1. Load the dataset (bench/dataset.py) with COPY; build the following queues of a sample of
   readers through the real builder (RequestRefill), and warm the caches with one pass.
2. In rounds, interleaved, with the same load generator (processes × calls in flight):
   - GET /v1/feed?kind=following through the edge, REST;
   - FeedService/GetFeed through the edge, gRPC;
   - GetFeed straight to the feed_svc instance (no Envoy), against the same call to a second
     feed_svc started with FEED_COLD_PATH_ONLY=1, which builds every page on demand from the
     replica (the cold path forced: the same code, Redis still holding cards and sessions);
   - the same page by the best SQL query alone (bench/queries.py), straight to Postgres:
     the cost of the query without any service in front;
   - a no-op through the same Envoy path (GET /v1/feed?kind=unknown: feed_svc answers 400 before
     touching a store): the ceiling of the edge + transcoder + Python gRPC server.
   Then the same rounds for REST, gRPC straight to each feed_svc, and SQL at a fixed rate
   (open loop, FIXED_RATE calls/s): latency at a load the cold path can carry too, where the
   closed-loop percentiles above are mostly queueing at saturation.
3. Fan-out of one post to a celebrity's followers (every user, each given a queue first, as
   active readers: fan-out skips users without one) through precache_svc → stream → feed_svc,
   against raw pipelined ZADDs of one id to as many keys from one Python client.
4. Publish → visible: a follower polls their feed while a followed creator publishes.

Results: bench/results/feed.json, feed_*.png; the table goes in bench/README.md and README.md.

    python -m bench.feed        (make bench)
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import time
import uuid

import redis
from hdrh.histogram import HdrHistogram

from activity_svc.credentials import TokenIssuer
from bench.common import BENCH_SESSION, LOAD_ENV, RESULTS, run_on_own_stack, token_issuer
from bench.dataset import Scale, load
from bench.load import Job, Result, run_job
from mesh import keys, pki
from stack.launcher import Stack, mesh_channel
from tests.clips import make_clip
from tests.helpers import Http, sign_up
from tests.videos import publish
from tiktok.v1 import feed_pb2, precache_pb2, precache_pb2_grpc

READERS = 2000
ROUNDS = 3
ROUND_SECONDS = 5.0
WORKERS = 2
IN_FLIGHT = 32
PAGE = 10
# one instance each, as make run: on 2 cores a second feed_svc gained ~5%
INSTANCES: dict[str, int] = {}
TARGETS = ("rest", "grpc", "direct", "cold", "sql", "noop")
# latency at a load every target carries (the cold path saturates at ~300/s on this box):
# open loop, calls started on a fixed schedule, rounds interleaved like the others
FIXED_RATE = 100  # calls per second, all load processes together
AT_RATE = ("rest", "direct", "cold", "sql")


def main() -> None:
    # the fan-out measurement pushes to a celebrity's followers: not "hot" here
    env = {**LOAD_ENV, "HOT_CREATOR_FOLLOWERS": "10000000"}
    plot(run_on_own_stack("feed", run, env, INSTANCES))


def run(stack: Stack) -> dict:
    settings = stack.settings
    scale = Scale.from_env()
    print(f"loading {scale} ...", flush=True)
    data = load(settings.database_url, scale)
    print(f"loaded in {data.load_seconds:.0f}s: {data.follows} follows", flush=True)
    rng = random.Random(1)  # noqa: S311 - a reproducible sample, not a secret
    readers = rng.sample(data.users[scale.celebrities :], min(READERS, len(data.users) // 2))
    issuer = token_issuer(settings)
    tokens = [issuer.issue(u, BENCH_SESSION).token for u in readers]
    build_seconds = build_queues(stack, readers)
    print(f"{len(readers)} queues built in {build_seconds:.1f}s", flush=True)

    # the cold path forced: a second feed_svc that builds every page from the replica
    cold = stack.start_outside_envoy("feed", {"FEED_COLD_PATH_ONLY": "1"})
    ports = {
        "direct": stack.topo.instances_of("feed")[0].grpc_port,
        "cold": cold.grpc_port,
    }
    jobs = {
        t: Job(
            t,
            ports.get(t, stack.topo.edge_port),
            settings.database_url,
            tokens,
            readers,
            PAGE,
            IN_FLIGHT,
            0,
            pki_dir=str(settings.pki_dir) if settings.mesh_tls else "",
        )
        for t in TARGETS
    }
    samples: dict[str, list[Result]] = {t: [] for t in TARGETS}
    rates: dict[str, list[float]] = {t: [] for t in TARGETS}
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        for target in TARGETS:  # warm-up: cards, mirrors, plans, connections
            _measure(pool, jobs[target], 2.0)
        for _ in range(ROUNDS):
            for target in TARGETS:
                results = _measure(pool, jobs[target], ROUND_SECONDS)
                samples[target] += results
                rates[target].append(sum(r.count for r in results) / ROUND_SECONDS)
        paced: dict[str, list[Result]] = {t: [] for t in AT_RATE}
        for _ in range(ROUNDS):
            for target in AT_RATE:
                job = Job(**{**jobs[target].__dict__, "rate": FIXED_RATE / WORKERS})
                paced[target] += _measure(pool, job, ROUND_SECONDS)

    summary = {t: _summary(samples[t], rates[t]) for t in TARGETS}
    at_rate = {
        t: {
            **_summary(paced[t], [sum(r.count for r in paced[t]) / ROUND_SECONDS / ROUNDS]),
            "start_lag_max_ms": max(r.start_lag_max_ms for r in paced[t]),
        }
        for t in AT_RATE
    }
    fanout = measure_fanout(stack, data.celebrities[0], issuer)
    visible = measure_publish_to_visible(stack)
    rest, sql, noop = summary["rest"], summary["sql"], summary["noop"]
    direct, cold_path = summary["direct"], summary["cold"]
    return {
        "dataset": {
            "users": len(data.users),
            "follows": data.follows,
            "videos": data.videos,
            "load_seconds": round(data.load_seconds, 1),
            "readers": len(readers),
            "queues_built_seconds": round(build_seconds, 1),
        },
        "load": f"{WORKERS} processes x {IN_FLIGHT} in flight, {ROUNDS} rounds of "
        f"{ROUND_SECONDS:.0f}s per target, interleaved; page_size {PAGE}",
        "targets": summary,
        "at_fixed_rate": {"calls_per_s": FIXED_RATE, **at_rate},
        "ratios": {
            "feed_p99_over_cold_path_p99_at_fixed_rate": round(
                at_rate["direct"]["p99_ms"] / at_rate["cold"]["p99_ms"], 2
            ),
            "feed_rest_p99_over_sql_p99_at_fixed_rate": round(
                at_rate["rest"]["p99_ms"] / at_rate["sql"]["p99_ms"], 2
            ),
            "feed_over_cold_path_throughput": round(
                direct["req_per_s"] / cold_path["req_per_s"], 2
            ),
            "feed_p99_over_cold_path_p99": round(direct["p99_ms"] / cold_path["p99_ms"], 2),
            "feed_rest_over_sql_throughput": round(rest["req_per_s"] / sql["req_per_s"], 2),
            "feed_rest_p99_over_sql_p99": round(rest["p99_ms"] / sql["p99_ms"], 2),
            "feed_grpc_over_sql_throughput": round(
                summary["grpc"]["req_per_s"] / sql["req_per_s"], 2
            ),
            "feed_rest_over_noop_ceiling": round(rest["req_per_s"] / noop["req_per_s"], 2),
            "fanout_over_raw_push_rate": fanout["ratio"],
        },
        "fanout": fanout,
        "publish_to_visible_ms": visible,
    }


def _measure(pool, job: Job, seconds: float) -> list[Result]:
    timed = Job(**{**job.__dict__, "seconds": seconds})
    return pool.map(run_job, [timed] * WORKERS)


def _summary(results: list[Result], rates: list[float]) -> dict:
    total = HdrHistogram(1, 60_000_000, 3)
    for r in results:
        total.add(HdrHistogram.decode(r.histogram))
    return {
        "req_per_s": round(statistics.median(rates), 1),
        "rounds_req_per_s": [round(x, 1) for x in rates],
        "p50_ms": round(total.get_value_at_percentile(50) / 1000, 2),
        "p95_ms": round(total.get_value_at_percentile(95) / 1000, 2),
        "p99_ms": round(total.get_value_at_percentile(99) / 1000, 2),
        "errors": sum(r.errors for r in results),
    }


def build_queues(stack: Stack, readers: list[str]) -> float:
    """Asks the real builder for every reader's queue and waits until all exist."""
    t0 = time.monotonic()
    internal = f"127.0.0.1:{stack.topo.internal_port}"
    with mesh_channel(stack.settings, internal, pki.SERVICE_IDENTITIES["feed"]) as channel:
        stub = precache_pb2_grpc.PrecacheServiceStub(channel)
        for user in readers:
            stub.RequestRefill(
                precache_pb2.RequestRefillRequest(user_id=user, kind=feed_pb2.FEED_KIND_FOLLOWING)
            )
    client = redis.Redis.from_url(stack.settings.redis_url)
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            for user in readers:
                pipe.exists(keys.feed_queue(user, "following"))
            if all(pipe.execute()):
                return time.monotonic() - t0
            time.sleep(0.2)  # polling the builder's progress, bounded by the loop above
    finally:
        client.close()


def _fanout_lag(stack: Stack) -> tuple[float, float]:
    port = stack.topo.instances_of("precache")[0].metrics_port
    http = Http(port)
    try:
        text = http.get("/metrics").body.decode()
    finally:
        http.close()
    values = {}
    for line in text.splitlines():
        if line.startswith("feed_fanout_lag_seconds_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values.get("feed_fanout_lag_seconds_count", 0.0), values.get(
        "feed_fanout_lag_seconds_sum", 0.0
    )


def measure_fanout(stack: Stack, celebrity: str, issuer: TokenIssuer) -> dict:
    """One post by a celebrity (every user follows them), pushed through the real pipeline,
    against raw pipelined ZADDs of one id to as many keys."""
    client = redis.Redis.from_url(stack.settings.redis_url)
    followers = _followers(stack, celebrity)
    # every follower reads (has a queue): fan-out skips the queues of users who do not, so
    # without this it would write only the sampled readers' 2,000
    pipe = client.pipeline(transaction=False)
    for user in followers:
        pipe.zadd(keys.feed_queue(user, "following"), {str(uuid.UUID(int=1)): 1}, nx=True)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()
    count0, sum0 = _fanout_lag(stack)
    edge = Http(stack.topo.edge_port)
    user = _as_user(edge, celebrity, issuer)
    video = publish(edge, user, make_clip(1, width=64, height=64))
    deadline = time.monotonic() + 600
    while _fanout_lag(stack)[0] <= count0 and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for the fan-out to finish, bounded by the deadline
    count1, sum1 = _fanout_lag(stack)
    fanout_seconds = sum1 - sum0 if count1 > count0 else float("nan")
    edge.close()
    pipe = client.pipeline(transaction=False)
    for user in followers:
        pipe.zscore(keys.feed_queue(user, "following"), video["video_id"])
    reached = sum(score is not None for score in pipe.execute())

    t0 = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(len(followers)):
        pipe.zadd(f"rawbench:{{{i}}}", {"video": time.time()})
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    raw_seconds = time.perf_counter() - t0
    client.close()
    return {
        "followers": len(followers),
        "queues_reached": reached,
        "pipeline_seconds": round(fanout_seconds, 2),
        "pipeline_pushes_per_s": round(len(followers) / fanout_seconds, 0),
        "raw_zadd_seconds": round(raw_seconds, 2),
        "raw_pushes_per_s": round(len(followers) / raw_seconds, 0),
        "ratio": round(raw_seconds / fanout_seconds, 2),
    }


def _followers(stack: Stack, user_id: str) -> list[str]:
    import psycopg

    with psycopg.connect(stack.settings.database_url) as conn:
        rows = conn.execute(
            "SELECT follower_id FROM activity.follows WHERE followee_id = %s", [user_id]
        ).fetchall()
    return [str(r[0]) for r in rows]


def _as_user(edge: Http, user_id: str, issuer: TokenIssuer):
    from tests.helpers import SignedUpUser

    return SignedUpUser(user_id, "bench", "", issuer.issue(user_id, BENCH_SESSION).token)


def measure_publish_to_visible(stack: Stack, samples: int = 10) -> dict:
    edge = Http(stack.topo.edge_port)
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    edge.post("/v1/follows", {"followee_id": creator.user_id}, token=fan.token)
    clip = make_clip(1, width=64, height=64)
    took = []
    for _ in range(samples):
        video = publish(edge, creator, clip)
        published = time.perf_counter()
        while True:
            page = edge.get("/v1/feed?kind=following&page_size=1", token=fan.token).json()
            if page["items"] and page["items"][0]["video_id"] == video["video_id"]:
                took.append((time.perf_counter() - published) * 1000)
                break
    edge.close()
    return {
        "p50": round(statistics.median(took), 1),
        "max": round(max(took), 1),
        "samples": len(took),
    }


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = results["targets"]
    names = {
        "rest": "feed REST",
        "grpc": "feed gRPC",
        "direct": "feed, no Envoy",
        "cold": "cold path, no Envoy",
        "sql": "SQL alone",
        "noop": "no-op",
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5))
    left.bar([names[t] for t in targets], [targets[t]["req_per_s"] for t in targets])
    left.tick_params(axis="x", labelrotation=20)
    left.set_ylabel("requests / s (median of rounds)")
    left.set_title("Throughput, same load generator")
    width = 0.25
    for i, p in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        right.bar(
            [k + i * width for k in range(len(targets))],
            [targets[t][p] for t in targets],
            width,
            label=p.replace("_ms", ""),
        )
    right.set_xticks(
        [k + width for k in range(len(targets))], [names[t] for t in targets], rotation=20
    )
    right.set_ylabel("ms")
    right.set_title("Latency (HdrHistogram)")
    right.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "feed.png", dpi=110)


if __name__ == "__main__":
    main()
