"""Load generators for the benchmarks: each runs in its own process (uvloop) and either keeps
`concurrency` calls in flight for `seconds` (closed loop: throughput at saturation) or starts
calls at a fixed `rate` (open loop: latency at a load every target can carry). Each returns its
count, errors and an HdrHistogram of latencies (microseconds, encoded) that the parent merges.
Several processes, so the generator is not the bottleneck of one Python interpreter."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram

HIST_MAX_US = 60_000_000


@dataclass(frozen=True)
class Job:
    target: str  # "rest", "grpc", "sql", "noop"; "direct", "cold": gRPC straight to a feed_svc
    port: int  # edge port; for direct and cold the feed_svc's own port; 0 for sql
    dsn: str  # sql only
    tokens: list[str]  # rest/grpc/noop: bearer tokens to pick from
    users: list[str]  # sql: user ids to pick from
    page_size: int
    concurrency: int
    seconds: float
    # > 0: open loop instead: this many calls per second from this process, started on a
    # fixed schedule whatever the earlier calls are doing
    rate: float = 0.0
    # direct and cold: the mesh's PKI directory, to call the service as the edge does (mutual
    # TLS as the edge's identity); empty with MESH_TLS=0
    pki_dir: str = ""


@dataclass(frozen=True)
class Result:
    count: int
    errors: int
    histogram: str  # HdrHistogram, encoded
    # open loop: how late the generator started its calls, worst case (ms). Calls are timed
    # from their actual start; this shows the schedule was kept (the generator never stalled,
    # so no latency hides behind a late start) while the timer's ~1 ms grain stays out of the
    # latencies.
    start_lag_max_ms: float = 0.0


def run_job(job: Job) -> Result:
    import uvloop

    return uvloop.run(_run(job))


async def _run(job: Job) -> Result:
    histogram = HdrHistogram(1, HIST_MAX_US, 3)
    count = errors = 0
    call, close = await _caller(job)
    deadline = time.perf_counter() + job.seconds

    async def client(n: int) -> None:
        nonlocal count, errors
        rng = random.Random(n)  # noqa: S311 - load, not secrets
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call(rng)
            except Exception:  # noqa: BLE001 - a failed call is counted, the load goes on
                errors += 1
                continue
            histogram.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
            count += 1

    lag = 0.0

    async def due(at: float, rng: random.Random) -> None:
        nonlocal count, errors, lag
        started = time.perf_counter()
        lag = max(lag, started - at)
        try:
            await call(rng)
        except Exception:  # noqa: BLE001 - counted, the schedule goes on
            errors += 1
            return
        histogram.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
        count += 1

    async def schedule() -> None:
        rng = random.Random(0)  # noqa: S311 - load, not secrets
        at, calls = time.perf_counter(), []
        while at < deadline:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            calls.append(asyncio.create_task(due(at, rng)))
            at += 1 / job.rate
        await asyncio.gather(*calls)

    if job.rate:
        await schedule()
    else:
        await asyncio.gather(*(client(n) for n in range(job.concurrency)))
    await close()
    return Result(count, errors, histogram.encode().decode(), round(lag * 1000, 2))


async def _caller(job: Job) -> tuple[Callable[[random.Random], Awaitable[None]], Callable]:
    if job.target in ("grpc", "direct", "cold"):
        import grpc

        from tiktok.v1 import feed_pb2, feed_pb2_grpc

        target = f"127.0.0.1:{job.port}"
        if job.pki_dir and job.target != "grpc":
            from mesh import pki
            from mesh.tls import channel_credentials

            credentials = channel_credentials(Path(job.pki_dir), pki.EDGE)
            channel = grpc.aio.secure_channel(target, credentials)
        else:
            channel = grpc.aio.insecure_channel(target)
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        request = feed_pb2.GetFeedRequest(kind="following", page_size=job.page_size)
        # through the edge a token; straight to the service the header Envoy derives from it
        identities = (
            [(("authorization", f"Bearer {t}"),) for t in job.tokens]
            if job.target == "grpc"
            else [(("x-user-id", u),) for u in job.users]
        )

        async def grpc_call(rng: random.Random) -> None:
            reply = await stub.GetFeed(request, metadata=rng.choice(identities))
            if not reply.items:  # a page past its deadline comes back empty: not a page
                raise RuntimeError("empty page")

        return grpc_call, channel.close
    if job.target == "sql":
        import psycopg

        from bench.queries import following_page

        conns = [await psycopg.AsyncConnection.connect(job.dsn) for _ in range(job.concurrency)]
        free = asyncio.Queue()
        for conn in conns:
            free.put_nowait(conn)

        async def sql_call(rng: random.Random) -> None:
            conn = await free.get()
            try:
                await following_page(conn, rng.choice(job.users), job.page_size)
            finally:
                free.put_nowait(conn)

        async def close_all() -> None:
            for conn in conns:
                await conn.close()

        return sql_call, close_all
    return await _rest_caller(job)


async def _rest_caller(job: Job) -> tuple[Callable[[random.Random], Awaitable[None]], Callable]:
    """A minimal HTTP/1.1 keep-alive client: one connection per concurrent client."""
    path = (
        f"/v1/feed?kind=following&page_size={job.page_size}"
        if job.target == "rest"
        else "/v1/feed?kind=unknown"  # noop: answered by feed_svc before touching any store
    )
    expected = 200 if job.target == "rest" else 400
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(job.concurrency):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", job.port))

    async def rest_call(rng: random.Random) -> None:
        reader, writer = await pool.get()
        try:
            token = rng.choice(job.tokens)
            head = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n"
            writer.write(head.encode())
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            if status != expected:
                raise RuntimeError(f"HTTP {status}")
            if job.target == "rest" and b'"video_id"' not in body:
                raise RuntimeError("empty page")
        finally:
            pool.put_nowait((reader, writer))

    async def close_all() -> None:
        while not pool.empty():
            _, writer = pool.get_nowait()
            writer.close()

    return rest_call, close_all
