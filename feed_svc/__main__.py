"""python -m feed_svc: settings → Redis, the replica pool, stubs of the other services → serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from feed_svc.hydrate import Hydrator
from feed_svc.queues import FeedQueues
from feed_svc.refills import RefillRequests
from feed_svc.replicafeed import ReplicaFeed
from feed_svc.service import FeedService
from mesh.breaker import Breaker
from mesh.clients import internal_channel, redis_client
from mesh.db import open_reads
from mesh.redismux import SharedConnection
from mesh.server import Registrar, run_service
from mesh.settings import Settings
from mesh.tasks import running
from readmodels.counters import CounterMirror, VideoCountsSource
from tiktok.v1 import activity_pb2_grpc, feed_pb2_grpc, precache_pb2_grpc, upload_pb2_grpc


@asynccontextmanager
async def setup(settings: Settings) -> AsyncIterator[Registrar]:
    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    # one connection for every page read, on a single node (a cluster client routes by key)
    shared = None if settings.redis_cluster else SharedConnection(settings.redis_url, redis)
    channel = internal_channel(settings, "feed")
    breaker = Breaker("redis")  # one per process: a hung Redis is skipped by every path
    counts = VideoCountsSource(
        CounterMirror(redis), activity_pb2_grpc.ActivityServiceStub(channel), breaker=breaker
    )
    hydrator = Hydrator(redis, upload_pb2_grpc.UploadServiceStub(channel), counts, breaker)
    # cold pages come from the replica (the primary while it lags or is down); with Redis
    # down (or FEED_COLD_PATH_ONLY) every page does
    reads = await open_reads(
        settings.database_url,
        settings.database_replica_url,
        max_size=16,
        max_lag=settings.replica_max_lag_seconds,
    )
    refills = RefillRequests(precache_pb2_grpc.PrecacheServiceStub(channel))
    service = FeedService(
        FeedQueues(redis, shared),
        hydrator,
        refills,
        ReplicaFeed(reads),
        breaker,
        cold_path_only=settings.feed_cold_path_only,
        anonymous_sessions_per_minute=settings.anon_feed_sessions_per_minute,
    )
    try:
        async with running(reads.run()):
            yield lambda server: feed_pb2_grpc.add_FeedServiceServicer_to_server(service, server)
    finally:
        await channel.close(grace=None)
        if shared is not None:
            shared.close()
        await redis.aclose()
        await reads.close()


if __name__ == "__main__":
    run_service("feed", setup)
