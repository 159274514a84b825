"""Clients for the other stores: Redis and S3. Every call carries a client-side deadline,
because a hung server (socket open, no answer) is the usual failure, not a refused connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
import grpc
import hiredis
import redis.asyncio as aioredis
from botocore.config import Config
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.retry import Retry

from mesh.pki import INTERNAL_NAME, SERVICE_IDENTITIES
from mesh.settings import Settings
from mesh.tls import channel_credentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class _HiredisPackedConnection(aioredis.Connection):
    """redis-py's asyncio connection packs commands in Python, argument by argument: for a
    feed page (a script call with a dozen arguments) that was a third of the client's CPU.
    hiredis packs them in C; anything it does not take goes the usual way."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            return super().pack_command(*args)  # "SCRIPT LOAD" and the like: split by redis-py
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # raises redis-py's own error for bad values


def redis_client(url: str, *, cluster: bool = False, timeout: float = 2.0) -> aioredis.Redis:
    """An asyncio Redis client that gives up after ``timeout`` seconds instead of retrying on.

    ``cluster``: ``url`` is one node of a Redis Cluster (REDIS_CLUSTER); the client learns the
    others and routes each key to its slot's node. It is typed as the single-node client: the
    commands the mesh uses behave alike, and what does not (scripts in pipelines, shared
    connections) is decided by ``is_cluster``."""
    if cluster:
        client = RedisCluster.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # one more try after a MOVED or a failed node
            decode_responses=False,
        )
        return cast(aioredis.Redis, client)
    plain = urlsplit(url).scheme == "redis"  # rediss:// and unix:// keep their own connections
    return aioredis.from_url(
        url,
        **({"connection_class": _HiredisPackedConnection} if plain else {}),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # the default retries stretch a 2 s timeout to ~25 s
        health_check_interval=30,
        decode_responses=False,
    )


async def execute(pipe: aioredis.client.Pipeline) -> list[Any]:
    """``pipe.execute()``, and the pipeline's connection back to the pool whatever happens:
    redis-py loads a pipeline's scripts on a connection it takes before its own cleanup
    starts, so a failure there (Valkey still loading its data after a restart) kept that
    connection out of the pool for good. `make faults` found activity_svc's pool drained that
    way (every later call: MaxConnectionsError) after Valkey came back."""
    try:
        return await pipe.execute()
    finally:
        await pipe.reset()  # type: ignore[no-untyped-call]


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster | ClusterPipeline)


async def queue_script(
    pipe: aioredis.client.Pipeline,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[str | int | float],
) -> None:
    """Queues ``script`` on a pipeline. A single node's pipeline loads the script before it
    runs (EVALSHA); a cluster pipeline cannot, and a node may not have it (restarted, new): the
    source goes along (EVAL; each node compiles it once and caches it).

    Send such a pipeline with ``execute``, not ``pipe.execute()``."""
    if is_cluster(pipe):
        pipe.eval(cast(str, script.script), len(keys), *keys, *args)
    else:
        await script(keys=list(keys), args=list(args), client=pipe)


def s3_client(settings: Settings, *, endpoint: str | None = None) -> S3Client:
    """A boto3 S3 client (SigV4, path-style) for ``endpoint``, by default ``S3_ENDPOINT``.

    Presign with ``endpoint=settings.s3_public_url`` so the signed host is the one clients use.
    boto3 is blocking: call it through ``asyncio.to_thread``.
    """
    if not (settings.s3_access_key and settings.s3_secret_key):
        raise ValueError("S3_ACCESS_KEY and S3_SECRET_KEY are required (no default keys)")
    return boto3.client(
        "s3",
        endpoint_url=endpoint or settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=10,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )


def internal_channel(settings: Settings, service: str) -> grpc.aio.Channel:
    """A channel from ``service`` to the other services: the internal Envoy listener, which
    balances, health checks, retries and checks who may call what; never a hard-coded
    instance. Mutual TLS as ``service``'s identity unless MESH_TLS=0."""
    options: list[tuple[str, int | str]] = [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 0),
    ]
    if not settings.mesh_tls:
        return grpc.aio.insecure_channel(settings.internal_target, options=options)
    credentials = channel_credentials(settings.pki_dir, SERVICE_IDENTITIES[service])
    # the listener proves it is the listener, not merely some mesh identity on that port
    options.append(("grpc.ssl_target_name_override", INTERNAL_NAME))
    return grpc.aio.secure_channel(settings.internal_target, credentials, options=options)
