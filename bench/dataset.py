"""A reproducible social graph for the feed benchmark, bulk-loaded with COPY.

Users follow `follows_per_user` accounts each: every user follows the few celebrities (so each
celebrity has as many followers as there are users), and the rest are drawn from a power law
over all users (popular accounts get most follows). Videos are spread over creators by the
same law and over the last 30 days; their ids are UUIDv7 made from their publish time, as
Postgres would have made them, so "newest first" by id holds.

Loading bypasses the services on purpose: signing up 100k users through Argon2 and publishing
1M probed videos would take hours. The rows are what the services would have written.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import psycopg


@dataclass(frozen=True)
class Scale:
    users: int = 100_000
    videos: int = 1_000_000
    follows_per_user: int = 200
    celebrities: int = 5

    @classmethod
    def from_env(cls) -> Scale:
        """``BENCH_SCALE`` (default 1) shrinks users and videos, for a quick run."""
        f = float(os.environ.get("BENCH_SCALE", "1"))
        base = cls()
        return cls(
            users=max(1000, int(base.users * f)),
            videos=max(10_000, int(base.videos * f)),
            follows_per_user=base.follows_per_user,
            celebrities=base.celebrities,
        )


@dataclass(frozen=True)
class Dataset:
    users: list[str]
    celebrities: list[str]
    follows: int
    videos: int
    load_seconds: float


def uuid7_hex(ms: np.ndarray, rng: np.random.Generator) -> list[str]:
    """UUIDv7s for the Unix times ``ms``: 48 bits of time, version 7, 12 random bits, the
    variant, 62 random bits."""
    rand_a = rng.integers(0, 1 << 12, len(ms))
    rand_b = rng.integers(0, 1 << 62, len(ms), dtype=np.int64)
    return [
        str(uuid.UUID(int=(int(t) << 80) | (0x7 << 76) | (int(a) << 64) | (0b10 << 62) | int(b)))
        for t, a, b in zip(ms, rand_a, rand_b, strict=True)
    ]


class PowerLaw:
    """Indexes into ``range(n)``, index k drawn with weight 1/(k+10)^exponent."""

    def __init__(self, n: int, exponent: float = 1.1) -> None:
        weights = 1.0 / (np.arange(n) + 10.0) ** exponent
        self.cdf = np.cumsum(weights / weights.sum())

    def draw(self, rng: np.random.Generator, size: int | tuple[int, int]) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(size)), len(self.cdf) - 1)


def _copy(conn: psycopg.Connection, statement: str, lines: Iterable[str]) -> None:
    with conn.cursor().copy(statement) as copy:
        buffer = io.StringIO()
        for i, line in enumerate(lines, 1):
            buffer.write(line)
            if i % 200_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def load(database_url: str, scale: Scale, seed: int = 7) -> Dataset:
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    users = [str(uuid.UUID(int=int(x), version=4)) for x in rng.integers(0, 2**63, scale.users)]
    celebrities = users[: scale.celebrities]
    with psycopg.connect(database_url, autocommit=True) as conn:
        # a bulk load: foreign keys are known to hold, skip their per-row checks
        conn.execute("SET session_replication_role = replica")
        _copy(
            conn,
            "COPY activity.users (user_id, handle, display_name, password_hash) FROM STDIN",
            (f"{u}\tbench_{i}\tbench {i}\tnot-a-hash\n" for i, u in enumerate(users)),
        )
        follows = _copy_follows(conn, rng, users, scale)
        videos = _copy_videos(conn, rng, users, scale)
        conn.execute(
            "INSERT INTO activity.user_counters (user_id, follower_count, following_count,"
            " video_count, version)"
            " SELECT u.user_id, coalesce(fr.n, 0), coalesce(fg.n, 0), coalesce(v.n, 0), 1"
            " FROM activity.users u"
            " LEFT JOIN (SELECT followee_id AS id, count(*) n FROM activity.follows"
            "  GROUP BY 1) fr ON fr.id = u.user_id"
            " LEFT JOIN (SELECT follower_id AS id, count(*) n FROM activity.follows"
            "  GROUP BY 1) fg ON fg.id = u.user_id"
            " LEFT JOIN (SELECT creator_id AS id, count(*) n FROM upload.videos"
            "  GROUP BY 1) v ON v.id = u.user_id"
            " WHERE u.handle LIKE 'bench\\_%%'"
            " ON CONFLICT (user_id) DO NOTHING"
        )
        conn.execute("ANALYZE activity.users, activity.follows, activity.user_counters")
        conn.execute("ANALYZE upload.uploads, upload.videos")
    return Dataset(users, celebrities, follows, videos, time.monotonic() - t0)


def _copy_follows(
    conn: psycopg.Connection, rng: np.random.Generator, users: list[str], scale: Scale
) -> int:
    n = len(users)
    others = scale.follows_per_user - scale.celebrities
    law = PowerLaw(n)

    def lines() -> Iterable[str]:
        for start in range(0, n, 5000):
            draws = law.draw(rng, (min(5000, n - start), others * 2))
            for row, drawn in enumerate(draws):
                i = start + row
                follower = users[i]
                chosen = [k for k in np.unique(drawn) if k >= scale.celebrities and k != i]
                for k in [*range(scale.celebrities), *chosen[:others]]:
                    if k != i:
                        yield f"{follower}\t{users[k]}\n"

    _copy(conn, "COPY activity.follows (follower_id, followee_id) FROM STDIN", lines())
    cur = conn.execute("SELECT count(*) FROM activity.follows")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _copy_videos(
    conn: psycopg.Connection, rng: np.random.Generator, users: list[str], scale: Scale
) -> int:
    now_ms = int(time.time() * 1000)
    creators = PowerLaw(len(users)).draw(rng, scale.videos)
    published_ms = now_ms - rng.integers(0, 30 * 24 * 3600 * 1000, scale.videos)
    video_ids = uuid7_hex(published_ms, rng)
    upload_ids = [
        str(uuid.UUID(int=int(x), version=4)) for x in rng.integers(0, 2**63, scale.videos)
    ]
    _copy(
        conn,
        "COPY upload.uploads (upload_id, owner_id, object_key, content_type, size_bytes,"
        " expires_at, state) FROM STDIN",
        (
            f"{u}\t{users[int(c)]}\tv/{u}\tvideo/mp4\t1000000\t2000-01-01\tpublished\n"
            for u, c in zip(upload_ids, creators, strict=True)
        ),
    )
    _copy(
        conn,
        "COPY upload.videos (video_id, upload_id, creator_id, caption, object_key, thumbnail_key,"
        " content_type, size_bytes, duration_ms, width, height, created_at) FROM STDIN",
        (
            f"{v}\t{u}\t{users[int(c)]}\tbench video\tm/{u}\tt/{u}.jpg\tvideo/mp4\t1000000"
            f"\t15000\t720\t1280\t{_timestamp(int(ms))}\n"
            for v, u, c, ms in zip(video_ids, upload_ids, creators, published_ms, strict=True)
        ),
    )
    return scale.videos


def _timestamp(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}+00"
