"""Postgres: an async connection pool per service schema, and numbered SQL migrations.

Each service owns one schema named after it; its pool's connections have ``search_path`` set
to it, so ``store.py`` modules write plain table names and can never touch another schema's
tables by accident.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("mesh.db")

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


async def open_pool(
    url: str, schema: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0
) -> AsyncConnectionPool:
    """A pool whose connections use ``schema``; waits until one connection works."""
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,  # seconds a caller waits for a connection before PoolTimeout
        kwargs={
            "options": f"-c search_path={schema} -c statement_timeout=5000",
            "connect_timeout": 5,
            "autocommit": True,
        },
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    return pool


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    """The migrations in ``directory`` by version; rejects misnamed files and duplicate versions."""
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration {path.name}: name must look like 0001_create_users.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"migrations {found[version].name} and {path.name} share a version")
        found[version] = path
    return sorted(found.items())


async def apply_migrations(url: str, schema: str, directory: Path) -> list[int]:
    """Applies the pending migrations of ``schema`` in one transaction and records them.

    An advisory lock serialises instances that start together; they see the same result.
    Returns the versions applied by this call.
    """
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"migrate:{schema}"])
            ident = sql.Identifier(schema)
            # a role that owns its schema but may not create schemas still migrates: CREATE
            # SCHEMA IF NOT EXISTS checks the database privilege even when the schema is there
            cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, path in migration_files(directory):
                if version in done:
                    continue
                # no parameters: psycopg sends it with the simple protocol, several statements OK
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    [version, path.name],
                )
                applied_now.append(version)
    if applied_now:
        log.info("migrations applied", extra={"schema": schema, "versions": applied_now})
    return applied_now
