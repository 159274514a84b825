"""python -m precache_svc: settings → replica pool, Redis, the stream to FeedService → the
events consumer, the trending refresh and the refill workers → serve PrecacheService."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mesh import keys
from mesh.clients import internal_channel, redis_client
from mesh.consumer import GroupConsumer
from mesh.db import open_reads
from mesh.server import Registrar, run_service
from mesh.settings import Settings
from mesh.tasks import every, running
from precache_svc.builder import Builder
from precache_svc.service import PrecacheService, RefillQueue
from precache_svc.stream import FeedStream
from tiktok.v1 import feed_pb2_grpc, precache_pb2_grpc

GROUP = keys.PRECACHE_GROUP
TRENDING_EVERY_SECONDS = 10


@asynccontextmanager
async def setup(settings: Settings) -> AsyncIterator[Registrar]:
    reads = await open_reads(
        settings.database_url,
        settings.database_replica_url,
        max_lag=settings.replica_max_lag_seconds,
        # background work can wait for the replica to catch up (the feed's reads cannot), and
        # what it reads is cached in the queues: never from a replica that may be behind
        catch_up=1.0,
        stale_ok=False,
    )
    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    channel = internal_channel(settings, "precache")
    stream = FeedStream(feed_pb2_grpc.FeedServiceStub(channel))
    builder = Builder(reads, stream, settings.hot_creator_followers)
    refills = RefillQueue(builder)
    name = f"{socket.gethostname()}:{settings.grpc_ports['precache']}"
    # a fan-out can take seconds: another instance claims its events only after a minute
    consumer = GroupConsumer(
        redis, GROUP, name, builder.handle_entries, batch_size=100, claim_idle_ms=60_000
    )
    service = PrecacheService(refills)
    try:
        async with running(
            reads.run(),
            stream.run(),
            consumer.run(),
            refills.run(),
            every(TRENDING_EVERY_SECONDS, "refresh trending", builder.refresh_trending),
            every(600, "forget idle consumers", consumer.forget_idle_consumers),
        ):
            yield lambda server: precache_pb2_grpc.add_PrecacheServiceServicer_to_server(
                service, server
            )
    finally:
        await channel.close(grace=None)
        await redis.aclose()
        await reads.close()


if __name__ == "__main__":
    run_service("precache", setup)
