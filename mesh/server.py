"""Server bootstrap: every service starts, is probed and stops the same way.

``run_service`` builds the settings, logging and metrics, opens what the service needs (its
``setup`` context), serves with the standard health and reflection services, and on SIGTERM or
SIGINT shuts down gracefully: health turns NOT_SERVING, Envoy's health checks take the instance
out of rotation during the drain period, then in-flight RPCs get a grace period to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from mesh import pagination
from mesh.interceptors import MeshInterceptor
from mesh.logs import configure_logging
from mesh.pki import SERVICE_IDENTITIES
from mesh.proto import public_methods
from mesh.settings import SERVICES_BY_NAME, ServiceSpec, Settings
from mesh.tls import PeerPolicy, server_credentials

log = logging.getLogger("mesh.server")

# Given a server, adds the service's servicers to it.
Registrar = Callable[[grpc.aio.Server], None]
# Opens the service's resources (pools, clients, background tasks), yields its Registrar, and
# closes them on exit.
Setup = Callable[[Settings], AbstractAsyncContextManager[Registrar]]

SERVER_OPTIONS = [
    # A second process on the same port must fail loudly, not share it silently.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Envoy admits request headers up to 60 KiB (a long path is copied into
    # x-envoy-original-path): take what it forwards, so a long value gets the service's own
    # short 400 rather than grpc's RESOURCE_EXHAUSTED listing every header
    ("grpc.max_metadata_size", 64 * 1024),
    ("grpc.absolute_max_metadata_size", 64 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
]


async def serve(spec: ServiceSpec, settings: Settings, setup: Setup) -> None:
    """Serves ``spec`` until SIGTERM/SIGINT, then drains and stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with setup(settings) as register:
        policy = PeerPolicy(public_methods(spec.grpc_service)) if settings.mesh_tls else None
        server = grpc.aio.server(interceptors=[MeshInterceptor(policy)], options=SERVER_OPTIONS)
        register(server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            [
                spec.grpc_service,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        address = f"{settings.bind_host}:{settings.grpc_ports[spec.name]}"
        if settings.mesh_tls:
            identity = SERVICE_IDENTITIES[spec.name]
            server.add_secure_port(address, server_credentials(settings.pki_dir, identity))
        else:
            server.add_insecure_port(address)
        await server.start()
        for name in ("", spec.grpc_service):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": address, "grpc_service": spec.grpc_service})

        await stop.wait()
        log.info("stopping: NOT_SERVING, draining %.1fs", settings.shutdown_drain_seconds)
        await health.enter_graceful_shutdown()
        await asyncio.sleep(settings.shutdown_drain_seconds)
        await server.stop(settings.shutdown_grace_seconds)
    log.info("stopped")


def run_service(name: str, setup: Setup) -> None:
    """Entry point of ``python -m <service>``: settings → logging → metrics → serve."""
    spec = SERVICES_BY_NAME[name]
    settings = Settings.from_env()
    configure_logging(spec.package, settings.log_level)
    pagination.configure(
        settings.page_token_key or pagination.load_key(settings.page_token_key_file)
    )
    start_http_server(settings.metrics_ports[name], addr=settings.bind_host)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(spec, settings, setup))
