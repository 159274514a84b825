"""python -m upload_svc: settings → migrations → pool, S3, Redis → background tasks → serve."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mesh.breaker import Breaker
from mesh.clients import internal_channel, redis_client, s3_client
from mesh.db import apply_migrations, open_pool, replica_reads
from mesh.outbox import OutboxRelay
from mesh.server import Registrar, run_service
from mesh.settings import Settings
from mesh.tasks import every, running
from readmodels.counters import CounterMirror, VideoCountsSource
from tiktok.v1 import activity_pb2_grpc, upload_pb2_grpc
from upload_svc.cards import Cards
from upload_svc.janitor import (
    abort_stale_multipart_uploads,
    remove_deleted_blobs,
    sweep_expired_uploads,
    sweep_reused_upload_urls,
)
from upload_svc.publishing import Publisher
from upload_svc.renditions import RenditionWorker
from upload_svc.service import UploadService
from upload_svc.storage import Storage

SCHEMA = "upload"
MIGRATIONS = Path(__file__).parent / "migrations"


@asynccontextmanager
async def setup(settings: Settings) -> AsyncIterator[Registrar]:
    await apply_migrations(settings.database_url, SCHEMA, MIGRATIONS)
    pool = await open_pool(settings.database_url, SCHEMA)
    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    client = s3_client(settings)
    storage = Storage(
        client=client,
        presigner=s3_client(settings, endpoint=settings.s3_public_url),
        bucket=settings.s3_bucket,
        media_base_url=settings.cdn_base_url,
    )
    channel = internal_channel(settings, "upload")
    breaker = Breaker("redis")  # one per process: a hung Redis is skipped by every path
    counts = VideoCountsSource(
        CounterMirror(redis), activity_pb2_grpc.ActivityServiceStub(channel), breaker=breaker
    )
    cards = Cards(redis, breaker)
    transcode_wanted = asyncio.Event()
    reads = await replica_reads(
        pool,
        settings.database_url,
        settings.database_replica_url,
        SCHEMA,
        max_lag=settings.replica_max_lag_seconds,
    )
    service = UploadService(Publisher(pool, storage, cards, counts, transcode_wanted), reads)
    relay = OutboxRelay(pool, redis, SCHEMA)
    name = f"{socket.gethostname()}:{settings.grpc_ports['upload']}"
    worker = RenditionWorker(
        pool,
        storage,
        cards,
        name=name,  # stable across restarts of this instance: it takes its own jobs back
        work_dir=settings.data_dir / "transcode" / name.replace(":", "-"),
        concurrency=settings.transcode_concurrency,
        max_attempts=settings.transcode_max_attempts,
        wanted=transcode_wanted,
    )
    try:
        async with running(
            relay.run(),
            reads.run(),
            worker.run(),
            every(60, "sweep expired uploads", lambda: sweep_expired_uploads(pool, storage)),
            every(60, "sweep reused upload URLs", lambda: sweep_reused_upload_urls(pool, storage)),
            every(
                600, "abort interrupted multipart", lambda: abort_stale_multipart_uploads(storage)
            ),
            every(5, "remove deleted blobs", lambda: remove_deleted_blobs(pool, storage)),
        ):
            yield lambda server: upload_pb2_grpc.add_UploadServiceServicer_to_server(
                service, server
            )
    finally:
        await channel.close(grace=None)
        await redis.aclose()
        await reads.close()
        await pool.close()


if __name__ == "__main__":
    run_service("upload", setup)
