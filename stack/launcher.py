"""The stack: embedded servers, the four services, and both Envoys, started in dependency order,
each waited for with a deadline, and stopped in reverse order.

``make run`` and the pytest session both use ``Stack``; only the topology differs (fixed
documented ports and a durable ``.data/`` versus free ports and a throwaway directory).
A server whose URL is already in the environment (``DATABASE_URL``, ``REDIS_URL``,
``S3_ENDPOINT``) is not started: the services use the managed one.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh import pki
from mesh.clients import s3_client
from mesh.jwtkeys import ensure_signing_key, write_jwks
from mesh.keyfiles import secret_text
from mesh.pagination import load_key
from mesh.pki import ensure_pki
from mesh.settings import SERVICES_BY_NAME, Settings
from mesh.tls import channel_credentials
from stack import pgroles, servers
from stack.envoy_config import render_envoy_configs
from stack.media_edge import media_edge, media_metrics, render_media_edge_config
from stack.procs import Proc, stop_all
from stack.topology import HOST, Instance, Topology, free_ports

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL_URLS = ("DATABASE_URL", "DATABASE_REPLICA_URL", "REDIS_URL", "S3_ENDPOINT")


def ephemeral_env() -> dict[str, str]:
    """This process's environment without managed-server URLs or a signing key: the stack of a
    test session or a benchmark always runs its own embedded servers and keys."""
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL_URLS}
    for secret in (
        "JWT_PRIVATE_KEY_FILE",
        "JWT_PREVIOUS_KEY_FILE",
        "PAGE_TOKEN_KEY",
        "PAGE_TOKEN_KEY_FILE",
    ):
        env.pop(secret, None)
    return env


Progress = Callable[[str], None]


def mesh_channel(settings: Settings, target: str, identity: pki.Identity) -> grpc.Channel:
    """A blocking channel to a service port or the internal listener as ``identity`` (mutual
    TLS), or plaintext with MESH_TLS=0: for the launcher's probes, tests and benchmarks."""
    if not settings.mesh_tls:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, channel_credentials(settings.pki_dir, identity))


def service_ready(settings: Settings, port: int, grpc_service: str) -> bool:
    with mesh_channel(settings, f"{HOST}:{port}", pki.DEVELOPER) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=grpc_service), timeout=1
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class Stack:
    """Starts and stops the whole mesh for one ``Topology``."""

    def __init__(
        self,
        topo: Topology,
        base_env: Mapping[str, str],
        *,
        durable: bool = True,
        progress: Progress = lambda line: None,
    ) -> None:
        self.topo = topo
        self.durable = durable
        self.progress = progress
        self.base_env = dict(base_env)
        self.pg_credentials = pgroles.Credentials(
            topo.data_dir / "secrets", HOST, topo.postgres_port
        )
        # the same roles and passwords on the replica (it replays the primary's catalog)
        self.replica_credentials = pgroles.Credentials(
            topo.data_dir / "secrets", HOST, topo.replica_port
        )
        self.env = self._environment(base_env)
        self.settings = Settings.from_env(self.env)
        # started processes by layer, so stop() can go in reverse
        self.layers: list[list[Proc]] = []
        self.services: dict[str, Proc] = {}  # instance name → process

    def _environment(self, base_env: Mapping[str, str]) -> dict[str, str]:
        """The variables every service process gets: DESIGN's configuration, filled in."""
        t = self.topo
        env = dict(base_env)
        secrets = t.data_dir / "secrets"
        if "DATABASE_URL" not in env:  # our own Postgres: the superuser, with its password
            env["DATABASE_URL"] = self.pg_credentials.url(pgroles.SUPERUSER)
            # and its streaming replica, unless another replica was named
            env.setdefault("DATABASE_REPLICA_URL", self.replica_credentials.url(pgroles.SUPERUSER))
        if "REDIS_URL" not in env:  # our own Valkey, with a password made on first run
            password = quote(secret_text(secrets / "valkey-password"), safe="")
            env["REDIS_URL"] = f"redis://:{password}@{HOST}:{t.redis_port}/0"
        if "S3_ENDPOINT" not in env:  # our own SeaweedFS, with keys made on first run
            env["S3_ENDPOINT"] = f"http://{HOST}:{t.seaweed.s3}"
            env.setdefault("S3_ACCESS_KEY", secret_text(secrets / "s3-access-key", 12))
            env.setdefault("S3_SECRET_KEY", secret_text(secrets / "s3-secret-key", 30))
        env.update(
            DATA_DIR=str(t.data_dir),
            EDGE_PORT=str(t.edge_port),
            INTERNAL_PORT=str(t.internal_port),
            INTERNAL_HOST=HOST,
            MEDIA_PORT=str(t.media_port),
            PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
            PYTHONUNBUFFERED="1",
        )
        env.setdefault("JWT_PRIVATE_KEY_FILE", str(t.data_dir / "jwt" / "signing-key.pem"))
        return env

    def _own(self, variable: str) -> bool:
        """True when the stack runs this server itself (its URL was not given)."""
        return variable not in self.base_env

    # --- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Brings the whole mesh up; on any failure stops what it started and raises."""
        t0 = time.monotonic()
        try:
            self.topo.data_dir.mkdir(parents=True, exist_ok=True)
            self._prepare_keys()
            self._start_stores()
            self._start_services()
            self._start_envoys()
        except BaseException:
            self.stop()
            raise
        self.progress(f"mesh ready in {time.monotonic() - t0:.1f}s")

    def _prepare_keys(self) -> None:
        key = self.settings.jwt_private_key_file
        ensure_signing_key(key)
        write_jwks(key, self.jwks_path, self.settings.jwt_previous_key_file)
        if self.settings.mesh_tls:  # the CA once, every identity's certificate afresh
            ensure_pki(self.settings.pki_dir)
        if not self.settings.page_token_key:  # made once here, before N instances start
            load_key(self.settings.page_token_key_file)

    @property
    def media_url(self) -> str:
        """The media edge's base URL (what ``CDN_BASE_URL`` defaults to, without ``/media``)."""
        return f"http://{HOST}:{self.topo.media_port}"

    @property
    def jwks_path(self) -> Path:
        return self.topo.data_dir / "envoy" / "jwks.json"

    def _start_stores(self) -> None:
        s = self.settings
        wanted: list[tuple[Proc, Callable[[], bool]]] = []
        if self._own("DATABASE_URL"):
            pgdata = servers.pgdata(self.topo)
            hba = pgroles.hba(pgdata)
            pg = servers.postgres(self.topo, durable=self.durable, hba=hba)
            wanted.append((pg, lambda: servers.postgres_ready(s.database_url)))
        password = unquote(urlsplit(s.redis_url).password or "")
        cluster_ports = (self.topo.redis_port, *self.topo.redis_cluster_ports)
        if self._own("REDIS_URL") and s.redis_cluster:
            for node, port in enumerate(cluster_ports):
                proc = servers.valkey(self.topo, password, s.valkey_maxmemory, node=node)
                url = f"redis://:{quote(password, safe='')}@{HOST}:{port}/0"
                wanted.append((proc, lambda u=url: servers.valkey_ready(u)))
        elif self._own("REDIS_URL"):
            valkey = servers.valkey(self.topo, password, s.valkey_maxmemory)
            wanted.append((valkey, lambda: servers.valkey_ready(s.redis_url)))
        if self._own("S3_ENDPOINT"):
            weed = servers.seaweedfs(self.topo, s.s3_access_key, s.s3_secret_key, s.s3_bucket)
            wanted.append((weed, lambda: servers.s3_ready(s.s3_endpoint)))
        self._start_layer(wanted, timeout=60)
        if self._own("REDIS_URL") and s.redis_cluster:
            probe = Proc("valkey-cluster", [], self.topo.data_dir / "logs" / "valkey-0.log")
            took = probe.wait_ready(
                lambda: servers.form_cluster(cluster_ports, self.topo.redis_bus_ports, password),
                30,
                0.2,
            )
            self.progress(f"  {'valkey cluster':<18} ready {took:5.1f}s  3 nodes")
        if self._own("DATABASE_URL"):
            self._secure_postgres()
            if self._own("DATABASE_REPLICA_URL"):
                self._start_replica()
        # the bucket may take a moment after the gateway answers: the filer must be up too
        bucket_probe = Proc("s3-bucket", [], self.topo.data_dir / "logs" / "seaweedfs.log")
        client = s3_client(s)
        took = bucket_probe.wait_ready(
            lambda: servers.ensure_bucket(client, s.s3_bucket, s.web_origins), 60, 0.2
        )
        self.progress(f"  {'bucket':<18} ready {took:5.1f}s  s3://{s.s3_bucket}")

    def _start_replica(self) -> None:
        password = self.pg_credentials.password(pgroles.REPLICATOR)
        replica = servers.postgres_replica(self.topo, durable=self.durable, password=password)
        url = self.replica_credentials.url(pgroles.SUPERUSER)
        self._start_layer([(replica, lambda: servers.postgres_ready(url))], timeout=60)

    def _secure_postgres(self) -> None:
        """Passwords, roles and grants (stack/pgroles.py); on the first start, the switch from
        trust to SCRAM."""
        pgdata = servers.pgdata(self.topo)
        if pgroles.bootstrap(self.pg_credentials, pgdata):
            servers.write_pg_hba(self.topo, pgroles.HBA)
            with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                conn.execute("SELECT pg_reload_conf()")
            (pgdata / "scram-ready").touch()

    def _start_services(self) -> None:
        wanted = []
        for inst in self.topo.instances:
            proc = self._service_proc(inst)
            self.services[inst.name] = proc
            wanted.append((proc, lambda i=inst: self._serving(i)))
        self._start_layer(wanted, timeout=60)

    def start_outside_envoy(self, service: str, env: Mapping[str, str]) -> Instance:
        """One more process of ``service`` on free ports, with ``env`` on top of the stack's
        and no Envoy in front of it (a benchmark's differently configured instance). It is
        stopped with the stack."""
        spec = SERVICES_BY_NAME[service]
        grpc_port, metrics_port = free_ports(2)
        inst = Instance(spec, 100 + len(self.services), grpc_port, metrics_port)  # a new name
        proc = self._service_proc(inst, env)
        self.services[inst.name] = proc
        self._start_layer([(proc, lambda: self._serving(inst))], 60)
        return inst

    def _serving(self, inst: Instance) -> bool:
        return service_ready(self.settings, inst.grpc_port, inst.spec.grpc_service)

    def _service_proc(self, inst: Instance, extra_env: Mapping[str, str] | None = None) -> Proc:
        prefix = inst.spec.env_prefix
        env = dict(self.env) | dict(extra_env or {})
        if self._own("DATABASE_URL"):  # each service logs in as its own role
            env["DATABASE_URL"] = self.pg_credentials.service_url(inst.spec.name)
            if self._own("DATABASE_REPLICA_URL"):
                env["DATABASE_REPLICA_URL"] = self.replica_credentials.service_url(inst.spec.name)
        env[f"{prefix}_GRPC_PORT"] = str(inst.grpc_port)
        env[f"{prefix}_METRICS_PORT"] = str(inst.metrics_port)
        grace = self.settings.shutdown_drain_seconds + self.settings.shutdown_grace_seconds
        return Proc(
            inst.name,
            [sys.executable, "-m", inst.spec.package],
            self.topo.data_dir / "logs" / f"{inst.name}.log",
            env=env,
            cwd=ROOT,
            stop_timeout=grace + 3,
        )

    def _start_envoys(self) -> None:
        if not (ROOT / "gen" / "openapi.json").exists():  # the edge serves it
            raise FileNotFoundError("gen/openapi.json is missing: run `make protos`")
        configs = render_envoy_configs(
            self.topo, self.jwks_path, ROOT / "gen" / "tiktok.pb", self.settings
        )
        edge_config = render_media_edge_config(self.topo, self.settings)
        metrics = f"http://{HOST}:{self.topo.media_metrics_port}"
        wanted = [
            (media_edge(self.topo, edge_config), lambda: servers.healthz_ok(self.media_url)),
            (media_metrics(self.topo), lambda: servers.answers(f"{metrics}/metrics")),
        ]
        for role, admin in (("edge", self.topo.edge_admin_port),
                            ("internal", self.topo.internal_admin_port)):  # fmt: skip
            proc = servers.envoy(f"envoy-{role}", configs[role], self.topo)
            wanted.append((proc, lambda a=admin: servers.envoy_ready(a)))
        self._start_layer(wanted, timeout=30)

    def _start_layer(self, wanted: list[tuple[Proc, Callable[[], bool]]], timeout: float) -> None:
        """Starts a layer's processes together and waits until each one's probe passes."""
        layer: list[Proc] = []
        self.layers.append(layer)
        for proc, _ in wanted:
            proc.start()
            layer.append(proc)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(wanted), 1)) as pool:
            futures = {
                proc.name: pool.submit(proc.wait_ready, probe, timeout) for proc, probe in wanted
            }
            for name, future in futures.items():
                took = future.result()
                self.progress(f"  {name:<18} ready {took:5.1f}s")

    # --- run and stop ----------------------------------------------------------------------

    def dead(self) -> list[Proc]:
        """Processes that exited although nobody asked them to."""
        return [p for layer in self.layers for p in layer if p.popen and not p.alive()]

    def stop(self) -> None:
        """Stops every layer, newest first; each layer's processes in parallel."""
        while self.layers:
            stop_all(self.layers.pop())

    def rolling_restart(self, service: str) -> None:
        """Replaces each instance of ``service`` in turn: SIGTERM (it reports NOT_SERVING,
        Envoy stops sending it calls, in-flight ones finish), wait for it to exit, start a new
        process, wait until it serves; then the next. With two or more instances, clients see
        no failure (Envoy retries onto the others, and always has one)."""
        for inst in self.topo.instances_of(service):
            old = self.services[inst.name]
            old.send(signal.SIGTERM)
            if not old.wait(old.stop_timeout):
                old.kill()
            proc = self.restart_service(inst.name)
            # the next one stops only once both Envoys send this one calls again
            for admin in (self.topo.edge_admin_port, self.topo.internal_admin_port):
                proc.wait_ready(
                    lambda a=admin, port=inst.grpc_port: servers.envoy_sees_healthy(
                        a, service, port
                    ),
                    30,
                )
            self.progress(f"  {inst.name:<18} restarted")

    def restart_service(self, instance_name: str) -> Proc:
        """Starts a fresh process for an instance (after it was stopped) and waits for it."""
        inst = next(i for i in self.topo.instances if i.name == instance_name)
        old = self.services[instance_name]
        proc = self._service_proc(inst)
        proc.start()
        for layer in self.layers:
            if old in layer:
                layer[layer.index(old)] = proc
        self.services[instance_name] = proc
        proc.wait_ready(lambda: self._serving(inst), 30)
        return proc
