"""python -m activity_svc: settings → migrations → pool → serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from activity_svc.credentials import Passwords, TokenIssuer
from activity_svc.service import ActivityService
from mesh.db import apply_migrations, open_pool
from mesh.jwtkeys import load_signing_key
from mesh.server import Registrar, run_service
from mesh.settings import Settings
from tiktok.v1 import activity_pb2_grpc

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
    pool = await open_pool(settings.database_url, SCHEMA)
    service = ActivityService(pool, Passwords(), tokens)
    try:
        yield lambda server: activity_pb2_grpc.add_ActivityServiceServicer_to_server(
            service, server
        )
    finally:
        await pool.close()


if __name__ == "__main__":
    run_service("activity", setup)
