"""Settings: every knob of the mesh, read once from the environment into one frozen object.

No other module reads ``os.environ``: ``__main__`` of each process builds ``Settings`` and
passes it down. Defaults are the local ones; production sets the variables.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the mesh: its package, its gRPC service name and its default ports."""

    name: str  # short name, also the Postgres schema: "activity"
    package: str  # python -m <package>
    grpc_service: str  # fully qualified proto service
    grpc_port: int  # default for instance 0
    metrics_port: int  # default for instance 0

    @property
    def env_prefix(self) -> str:
        return self.name.upper()


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("activity", "activity_svc", "tiktok.v1.ActivityService", 50051, 9151),
    ServiceSpec("upload", "upload_svc", "tiktok.v1.UploadService", 50052, 9152),
    ServiceSpec("feed", "feed_svc", "tiktok.v1.FeedService", 50053, 9153),
    ServiceSpec("precache", "precache_svc", "tiktok.v1.PrecacheService", 50054, 9154),
)
SERVICES_BY_NAME: dict[str, ServiceSpec] = {s.name: s for s in SERVICES}


@dataclass(frozen=True)
class Settings:
    """The environment of one process. Field names match the variables, lower-cased."""

    data_dir: Path
    bind_host: str
    database_url: str
    database_replica_url: str
    # a replica further behind than this (seconds) serves no reads until it catches up
    replica_max_lag_seconds: float
    # seconds between recounts of the counters from their source rows (activity_svc/reconcile.py)
    reconcile_every_seconds: float
    # the embedded Valkey's memory bound (Valkey's units: 1gb, 512mb)
    valkey_maxmemory: str
    redis_url: str
    # REDIS_URL is a node of a Redis Cluster (the embedded stack then runs a 3-node cluster)
    redis_cluster: bool
    s3_endpoint: str
    s3_bucket: str
    s3_access_key: str
    s3_secret_key: str
    s3_public_url: str
    cdn_base_url: str
    # the media edge (the CDN stand-in, nginx): its port, its disk cache's bound, and how long
    # it serves an object before asking storage again (which is how a deletion reaches it)
    media_port: int
    media_cache_max_bytes: int
    media_cache_revalidate_seconds: int
    # renditions: ffmpeg processes one upload_svc instance runs at once, and tries per video
    transcode_concurrency: int
    transcode_max_attempts: int
    # access tokens are signed with the current key; the JWKS also holds the previous one (if
    # any) so tokens signed before a rotation stay valid until they expire
    jwt_private_key_file: Path
    jwt_previous_key_file: Path
    # mutual TLS on every gRPC hop behind the edge, with the identities in pki_dir (mesh.pki);
    # MESH_TLS=0 only to measure what it costs
    mesh_tls: bool
    pki_dir: Path
    # after this many failed sign-ins for one handle within the window, that handle gets 429
    signin_max_failures: int
    signin_failure_window_seconds: int
    # the HMAC key of page tokens and feed cursors: PAGE_TOKEN_KEY (base64, production) or a file
    # made on first run
    page_token_key: bytes | None
    page_token_key_file: Path
    jwt_issuer: str
    jwt_audience: str
    jwt_ttl_seconds: int
    refresh_token_ttl_seconds: int
    edge_port: int
    # where the web client is served from: the origins object storage lets PUT uploads (CORS)
    web_origins: tuple[str, ...]
    internal_host: str
    internal_port: int
    hot_creator_followers: int
    # feed_svc builds every page on demand from the replica, as for a missing queue, and asks
    # for no refills: the benchmark's "cold path forced", and a way to take the queues out of
    # the read path while investigating them
    feed_cold_path_only: bool
    # new anonymous feed sessions per minute, all instances together (each holds a seen set in
    # Redis for 15 minutes): the bound on that memory
    anon_feed_sessions_per_minute: int
    log_level: str
    # per signed-in user at the edge: sustained requests per second, and the burst allowed
    rate_limit_per_second: int
    rate_limit_burst: int
    # per client address at the edge: anonymous requests; sign-ups and sign-ins (any caller)
    anon_rate_limit_per_second: int
    anon_rate_limit_burst: int
    signin_rate_limit_per_second: int
    signin_rate_limit_burst: int
    # proxies in front of the edge whose X-Forwarded-For is believed (none by default)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    # seconds a stopping server stays up answering NOT_SERVING so Envoy can take it out
    shutdown_drain_seconds: float
    # seconds in-flight RPCs get to finish after that
    shutdown_grace_seconds: float
    grpc_ports: Mapping[str, int]
    metrics_ports: Mapping[str, int]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("DATA_DIR", ".data")).resolve()
        database_url = env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:54320/postgres")
        edge_port = int(env.get("EDGE_PORT", "8080"))
        media_port = int(env.get("MEDIA_PORT", "8090"))
        return cls(
            data_dir=data_dir,
            bind_host=env.get("BIND_HOST", "127.0.0.1"),
            database_url=database_url,
            database_replica_url=env.get("DATABASE_REPLICA_URL") or database_url,
            replica_max_lag_seconds=float(env.get("REPLICA_MAX_LAG_SECONDS", "5")),
            reconcile_every_seconds=float(env.get("RECONCILE_EVERY_SECONDS", "3600")),
            valkey_maxmemory=env.get("VALKEY_MAXMEMORY", "1gb"),
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:63790/0"),
            redis_cluster=env.get("REDIS_CLUSTER", "0") == "1",
            s3_endpoint=env.get("S3_ENDPOINT", "http://127.0.0.1:8333"),
            s3_bucket=env.get("S3_BUCKET", "videos"),
            # no well-known default: the stack makes a pair on first run for its own S3
            s3_access_key=env.get("S3_ACCESS_KEY", ""),
            s3_secret_key=env.get("S3_SECRET_KEY", ""),
            s3_public_url=env.get("S3_PUBLIC_URL", f"http://127.0.0.1:{edge_port}"),
            cdn_base_url=env.get("CDN_BASE_URL", f"http://127.0.0.1:{media_port}/media"),
            media_port=media_port,
            media_cache_max_bytes=int(env.get("MEDIA_CACHE_MAX_BYTES", str(2 * 1024**3))),
            media_cache_revalidate_seconds=int(env.get("MEDIA_CACHE_REVALIDATE_SECONDS", "30")),
            transcode_concurrency=int(env.get("TRANSCODE_CONCURRENCY", "1")),
            transcode_max_attempts=int(env.get("TRANSCODE_MAX_ATTEMPTS", "3")),
            jwt_private_key_file=Path(
                env.get("JWT_PRIVATE_KEY_FILE") or data_dir / "jwt" / "signing-key.pem"
            ),
            jwt_previous_key_file=Path(
                env.get("JWT_PREVIOUS_KEY_FILE") or data_dir / "jwt" / "previous-key.pem"
            ),
            mesh_tls=env.get("MESH_TLS", "1") != "0",
            pki_dir=Path(env.get("PKI_DIR") or data_dir / "pki"),
            signin_max_failures=int(env.get("SIGNIN_MAX_FAILURES", "10")),
            signin_failure_window_seconds=int(env.get("SIGNIN_FAILURE_WINDOW_SECONDS", "900")),
            page_token_key=_base64_secret(env, "PAGE_TOKEN_KEY"),
            page_token_key_file=Path(
                env.get("PAGE_TOKEN_KEY_FILE") or data_dir / "secrets" / "page-token.key"
            ),
            jwt_issuer=env.get("JWT_ISSUER", "tiktok-local"),
            jwt_audience=env.get("JWT_AUDIENCE", "tiktok-api"),
            jwt_ttl_seconds=int(env.get("JWT_TTL_SECONDS", "900")),
            refresh_token_ttl_seconds=int(env.get("REFRESH_TOKEN_TTL_SECONDS", str(30 * 86400))),
            edge_port=edge_port,
            web_origins=tuple(
                o.strip()
                for o in env.get(
                    "WEB_ORIGINS", f"http://127.0.0.1:{edge_port},http://localhost:{edge_port}"
                ).split(",")
                if o.strip()
            ),
            internal_host=env.get("INTERNAL_HOST", "127.0.0.1"),
            internal_port=int(env.get("INTERNAL_PORT", "8081")),
            hot_creator_followers=int(env.get("HOT_CREATOR_FOLLOWERS", "10000")),
            feed_cold_path_only=env.get("FEED_COLD_PATH_ONLY", "0") == "1",
            anon_feed_sessions_per_minute=int(env.get("ANON_FEED_SESSIONS_PER_MINUTE", "6000")),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            rate_limit_per_second=int(env.get("RATE_LIMIT_PER_SECOND", "50")),
            rate_limit_burst=int(env.get("RATE_LIMIT_BURST", "100")),
            anon_rate_limit_per_second=int(env.get("ANON_RATE_LIMIT_PER_SECOND", "200")),
            anon_rate_limit_burst=int(env.get("ANON_RATE_LIMIT_BURST", "400")),
            signin_rate_limit_per_second=int(env.get("SIGNIN_RATE_LIMIT_PER_SECOND", "30")),
            signin_rate_limit_burst=int(env.get("SIGNIN_RATE_LIMIT_BURST", "60")),
            trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
            shutdown_drain_seconds=float(env.get("SHUTDOWN_DRAIN_SECONDS", "1.5")),
            shutdown_grace_seconds=float(env.get("SHUTDOWN_GRACE_SECONDS", "5")),
            grpc_ports={
                s.name: int(env.get(f"{s.env_prefix}_GRPC_PORT", s.grpc_port)) for s in SERVICES
            },
            metrics_ports={
                s.name: int(env.get(f"{s.env_prefix}_METRICS_PORT", s.metrics_port))
                for s in SERVICES
            },
        )

    @property
    def internal_target(self) -> str:
        """Where services reach each other: the internal Envoy listener, never an instance."""
        return f"{self.internal_host}:{self.internal_port}"


def _networks(
    env: Mapping[str, str], name: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs (or plain addresses) from ``name``."""
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in env.get(name, "").split(",")
            if part.strip()
        )
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _base64_secret(env: Mapping[str, str], name: str) -> bytes | None:
    text = env.get(name)
    if not text:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=False)
    except ValueError:
        raise ValueError(f"{name}: expected base64") from None
