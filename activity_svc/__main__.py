"""python -m activity_svc: settings → migrations → pools, Redis, UploadService stub → the outbox
relay, the counter consumer and the reconciler → serve."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from activity_svc.counters import CounterConsumer, prune_applied_events
from activity_svc.credentials import Passwords, TokenIssuer
from activity_svc.reconcile import reconcile
from activity_svc.service import ActivityService
from activity_svc.sessions import Sessions
from activity_svc.signin_limit import SignInLimit
from activity_svc.videos import VideoDirectory
from activity_svc.views import ViewDedup
from mesh.clients import internal_channel, redis_client
from mesh.db import apply_migrations, open_pool, replica_reads
from mesh.jwtkeys import load_signing_key
from mesh.outbox import OutboxRelay
from mesh.server import Registrar, run_service
from mesh.settings import Settings
from mesh.tasks import every, running
from readmodels.counters import CounterMirror
from tiktok.v1 import activity_pb2_grpc, upload_pb2_grpc

SCHEMA = "activity"
MIGRATIONS = Path(__file__).parent / "migrations"


@asynccontextmanager
async def setup(settings: Settings) -> AsyncIterator[Registrar]:
    tokens = TokenIssuer(
        load_signing_key(settings.jwt_private_key_file),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_ttl_seconds,
    )
    await apply_migrations(settings.database_url, SCHEMA, MIGRATIONS)
    pool = await open_pool(settings.database_url, SCHEMA, max_size=20)
    reads = await replica_reads(
        pool,
        settings.database_url,
        settings.database_replica_url,
        SCHEMA,
        max_lag=settings.replica_max_lag_seconds,
    )
    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    mirror = CounterMirror(redis)
    channel = internal_channel(settings, "activity")
    videos = VideoDirectory(upload_pb2_grpc.UploadServiceStub(channel))
    passwords = Passwords()
    limit = SignInLimit(redis, settings.signin_max_failures, settings.signin_failure_window_seconds)
    sessions = Sessions(pool, settings.refresh_token_ttl_seconds)
    service = ActivityService(
        pool, reads, passwords, limit, tokens, sessions, videos, mirror, ViewDedup(redis)
    )
    # stable across restarts of this instance, so it resumes its own unacknowledged entries
    consumer = CounterConsumer(
        pool, redis, mirror, f"{socket.gethostname()}:{settings.grpc_ports['activity']}"
    )
    try:
        async with running(
            OutboxRelay(pool, redis, SCHEMA).run(),
            reads.run(),
            consumer.run(),
            every(600, "prune applied events", lambda: prune_applied_events(pool, redis)),
            every(600, "forget idle consumers", consumer.group.forget_idle_consumers),
            every(3600, "prune ended sessions", sessions.prune),
            every(
                settings.reconcile_every_seconds,
                "reconcile counters",
                lambda: reconcile(pool, mirror, wait=False),
            ),
        ):
            yield lambda server: activity_pb2_grpc.add_ActivityServiceServicer_to_server(
                service, server
            )
    finally:
        passwords.close()
        await channel.close(grace=None)
        await redis.aclose()
        await reads.close()
        await pool.close()


if __name__ == "__main__":
    run_service("activity", setup)
