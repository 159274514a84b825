"""Clients for the other stores: Redis and S3. Every call carries a client-side deadline,
because a hung server (socket open, no answer) is the usual failure, not a refused connection."""

from __future__ import annotations

import boto3
import grpc
import redis.asyncio as aioredis
from botocore.config import Config
from redis.backoff import NoBackoff
from redis.retry import Retry

from mesh.settings import Settings


def redis_client(url: str, *, timeout: float = 2.0) -> aioredis.Redis:
    """An asyncio Redis client that gives up after ``timeout`` seconds instead of retrying on."""
    return aioredis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # the default retries stretch a 2 s timeout to ~25 s
        health_check_interval=30,
        decode_responses=False,
    )


def s3_client(settings: Settings, *, endpoint: str | None = None):
    """A boto3 S3 client (SigV4, path-style) for ``endpoint``, by default ``S3_ENDPOINT``.

    Presign with ``endpoint=settings.s3_public_url`` so the signed host is the one clients use.
    boto3 is blocking: call it through ``asyncio.to_thread``.
    """
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


def internal_channel(settings: Settings) -> grpc.aio.Channel:
    """A channel to the other services: the internal Envoy listener, which balances, health
    checks and retries; never a hard-coded instance."""
    return grpc.aio.insecure_channel(
        settings.internal_target,
        options=[("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 0)],
    )
