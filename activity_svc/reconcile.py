"""The reconciler: recounts the counters that have a source table of their own here (followers
and following from ``follows``; likes, comments and favorites from theirs) and repairs what
drifted, in Postgres and in the Redis mirror. Scheduled in every instance (one runs at a time)
and a command: ``python -m activity_svc.reconcile``.

Counters change only through events, so at any moment a count may lawfully trail its source
rows by the events not yet applied. Those are exactly this service's outbox rows whose ids are
not in ``applied_events`` (a row is deleted only after every group acknowledged it, the counter
consumer included, and applied ids are pruned only behind the oldest outbox row). So the
expected count is the source count minus those events' deltas, all read in one snapshot, with
the counter consumers held off by a lock (they take it shared for each batch) so the counts
and ``applied_events`` stay as read until the repair commits. A repair is a delta added like
any batch: the version grows, the mirror takes the new value.

Not recounted: a user's videos (the rows live in upload_svc), plays and watch time (events
are their only record; the outbox keeps them until counted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from activity_svc import store
from activity_svc.counters import RECOUNT_LOCK, Deltas, deltas_of, mirror_counts
from readmodels.counters import USER_FIELDS, VIDEO_FIELDS, CounterMirror
from tiktok.v1 import events_pb2

log = logging.getLogger("activity_svc.reconcile")

REPAIRED = Counter(
    "counters_repaired_total",
    "Counter rows the reconciler found wrong and repaired, by table.",
    ["table"],
)


@dataclass(frozen=True)
class Recount:
    """Counts of ``table`` recomputed from source tables: (counter column, source table, the
    source's column holding the counted id)."""

    table: store.CounterTable
    columns: tuple[tuple[str, str, str], ...]


RECOUNTS = (
    Recount(
        "user_counters",
        (
            ("follower_count", "follows", "followee_id"),
            ("following_count", "follows", "follower_id"),
        ),
    ),
    Recount(
        "video_counters",
        (
            ("like_count", "likes", "video_id"),
            ("comment_count", "comments", "video_id"),
            ("favorite_count", "favorites", "video_id"),
        ),
    ),
)


def _drift_query(recount: Recount) -> sql.Composed:
    """Rows whose counts differ from their sources, or that unapplied events touch: (id,
    source counts..., counter counts...)."""
    key = sql.Identifier(store.COUNTER_COLUMNS[recount.table][0])
    sources = [
        sql.SQL("s{n} AS (SELECT {id} AS id, count(*) AS n FROM {source} GROUP BY 1)").format(
            n=sql.Literal(n), id=sql.Identifier(id_column), source=sql.Identifier(source)
        )
        for n, (_, source, id_column) in enumerate(recount.columns)
    ]
    ids = sql.SQL(" UNION ").join(
        [sql.SQL("SELECT id FROM s{}").format(sql.Literal(n)) for n in range(len(sources))]
        + [
            sql.SQL("SELECT {key} FROM {table}").format(
                key=key, table=sql.Identifier(recount.table)
            )
        ]
    )
    truth = [sql.SQL("coalesce(s{}.n, 0)").format(sql.Literal(n)) for n in range(len(sources))]
    held = [
        sql.SQL("coalesce(c.{}, 0)").format(sql.Identifier(column))
        for column, _, _ in recount.columns
    ]
    joins = sql.SQL(" ").join(
        sql.SQL("LEFT JOIN s{0} ON s{0}.id = ids.id").format(sql.Literal(n))
        for n in range(len(sources))
    )
    differs = sql.SQL(" OR ").join(
        sql.SQL("{} <> {}").format(t, h) for t, h in zip(truth, held, strict=True)
    )
    return sql.SQL(
        "WITH {sources}, ids(id) AS ({ids})"
        " SELECT ids.id, {truth}, {held} FROM ids {joins}"
        " LEFT JOIN {table} c ON c.{key} = ids.id"
        " WHERE {differs} OR ids.id = ANY(%s)"
    ).format(
        sources=sql.SQL(", ").join(sources),
        ids=ids,
        truth=sql.SQL(", ").join(truth),
        held=sql.SQL(", ").join(held),
        joins=joins,
        table=sql.Identifier(recount.table),
        key=key,
        differs=differs,
    )


async def _unapplied(conn: AsyncConnection) -> Deltas:
    """What the events still in the outbox and not yet applied will add."""
    cur = await conn.execute("SELECT payload FROM outbox")
    events = [events_pb2.Event.FromString(bytes(row[0])) for row in await cur.fetchall()]
    by_id = {uuid.UUID(e.event_id): e for e in events}
    cur = await conn.execute(
        "SELECT event_id FROM applied_events WHERE event_id = ANY(%s)", [list(by_id)]
    )
    applied = {row[0] for row in await cur.fetchall()}
    return deltas_of(e for i, e in by_id.items() if i not in applied)


def corrections(
    recount: Recount, rows: Sequence[tuple], pending: dict[uuid.UUID, list[int]]
) -> dict[uuid.UUID, list[int]]:
    """The deltas that make each row's counts equal its sources' minus the pending events':
    ``rows`` are (id, source counts..., counter counts...), ``pending`` the unapplied deltas in
    the table's column order."""
    width = len(store.COUNTER_COLUMNS[recount.table][1])
    order = store.COUNTER_COLUMNS[recount.table][1]
    positions = [order.index(column) for column, _, _ in recount.columns]
    k = len(recount.columns)
    fixes: dict[uuid.UUID, list[int]] = {}
    for row in rows:
        entity, truth, held = row[0], row[1 : 1 + k], row[1 + k : 1 + 2 * k]
        delta = [0] * width
        for n, position in enumerate(positions):
            expected = truth[n] - pending.get(entity, [0] * width)[position]
            delta[position] = expected - held[n]
        if any(delta):
            fixes[entity] = delta
    return fixes


async def reconcile(
    pool: AsyncConnectionPool, mirror: CounterMirror, *, wait: bool = True
) -> dict[str, int] | None:
    """Repairs every drifted counter; returns the rows repaired per table, or None when another
    reconciler holds the lock and ``wait`` is false."""
    async with pool.connection() as conn:
        take = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        cur = await conn.execute(f"SELECT {take}(hashtext(%s))", [RECOUNT_LOCK])
        row = await cur.fetchone()
        if not wait and not (row and row[0]):
            return None
        try:
            repaired = await _repair(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [RECOUNT_LOCK])
    users = [r for table, r in repaired if table == "user_counters"]
    videos = [r for table, r in repaired if table == "video_counters"]
    await mirror.write(
        users=[mirror_counts(r, USER_FIELDS) for r in users],
        videos=[mirror_counts(r, VIDEO_FIELDS) for r in videos],
    )
    found = {"user_counters": len(users), "video_counters": len(videos)}
    for table, count in found.items():
        REPAIRED.labels(table).inc(count)
    if users or videos:
        log.warning("counters repaired", extra={"repaired": found})
    return found


async def _repair(conn: AsyncConnection) -> list[tuple[store.CounterTable, store.CounterRow]]:
    repaired: list[tuple[store.CounterTable, store.CounterRow]] = []
    # one snapshot for the sources, the outbox and the counts
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await conn.execute("SET LOCAL statement_timeout = 0")  # full scans: not a request
        pending = await _unapplied(conn)
        for recount in RECOUNTS:
            touched = pending.users if recount.table == "user_counters" else pending.videos
            cur = await conn.execute(_drift_query(recount), [list(touched)])
            fixes = corrections(recount, await cur.fetchall(), touched)
            if fixes:
                rows = await store.add_to_counters(conn, recount.table, fixes)
                repaired += [(recount.table, r) for r in rows]
    return repaired


async def main() -> None:
    from mesh.clients import redis_client
    from mesh.db import open_pool
    from mesh.settings import Settings

    settings = Settings.from_env()
    pool = await open_pool(settings.database_url, "activity", max_size=1)
    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    try:
        print(json.dumps(await reconcile(pool, CounterMirror(redis))))
    finally:
        await redis.aclose()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
