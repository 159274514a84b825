"""The same methods over gRPC: generated stubs and grpcurl, through both Envoys and direct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh import pki
from stack.launcher import Stack, mesh_channel
from tests.conftest import InternalChannels
from tests.helpers import Http, sign_up, unique_handle
from tiktok.v1 import activity_pb2, activity_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture
def internal_channel(internal: InternalChannels) -> grpc.Channel:
    """The feed service's identity: a caller of BatchGetVideoCounts."""
    return internal(pki.SERVICE_IDENTITIES["feed"])


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_stubs_through_the_edge_give_the_same_results_as_rest(
    edge: Http, edge_channel: grpc.Channel
) -> None:
    stub = activity_pb2_grpc.ActivityServiceStub(edge_channel)
    handle = unique_handle()
    session = stub.CreateUser(
        activity_pb2.CreateUserRequest(handle=handle, password="correct horse", display_name="G")
    )
    assert session.user.handle == handle and session.access_token
    again = stub.CreateSession(
        activity_pb2.CreateSessionRequest(handle=handle, password="correct horse")
    )
    assert again.user.user_id == session.user.user_id
    via_grpc = stub.GetUser(activity_pb2.GetUserRequest(user_id=session.user.user_id))
    via_rest = edge.get(f"/v1/users/{session.user.user_id}").json()
    assert (
        via_rest["handle"] == via_grpc.handle and via_rest["display_name"] == via_grpc.display_name
    )
    assert via_rest["created_at"].startswith(via_grpc.created_at.ToJsonString()[:19])


def test_grpc_errors_carry_the_status_code(edge_channel: grpc.Channel) -> None:
    stub = activity_pb2_grpc.ActivityServiceStub(edge_channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateUser(activity_pb2.CreateUserRequest(handle="X", password="correct horse"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("handle:")
    with pytest.raises(grpc.RpcError) as e:
        stub.GetUser(activity_pb2.GetUserRequest(user_id="00000000-0000-0000-0000-000000000000"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_without_token_on_protected_method_is_unauthenticated(
    edge_channel: grpc.Channel,
) -> None:
    stub = activity_pb2_grpc.ActivityServiceStub(edge_channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateFollow(activity_pb2.CreateFollowRequest(followee_id="x"))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_internal_methods_are_routed_on_internal_listener_only(
    edge_channel: grpc.Channel, internal_channel: grpc.Channel
) -> None:
    request = activity_pb2.BatchGetVideoCountsRequest()
    with pytest.raises(grpc.RpcError) as edge_err:
        activity_pb2_grpc.ActivityServiceStub(edge_channel).BatchGetVideoCounts(request)
    assert edge_err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "no such route" in edge_err.value.details()
    reply = activity_pb2_grpc.ActivityServiceStub(internal_channel).BatchGetVideoCounts(request)
    assert list(reply.counts) == []


def test_grpcurl_through_the_edge_with_the_protos(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    r = grpcurl(
        "-plaintext", "-import-path", "protos", "-proto", "tiktok/v1/activity.proto",
        "-d", json.dumps({"handle": user.handle, "password": user.password}),
        f"127.0.0.1:{stack.topo.edge_port}", "tiktok.v1.ActivityService/CreateSession",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["user"]["userId"] == user.user_id


def _developer(stack: Stack) -> list[str]:
    """grpcurl's flags for the developer identity, as the README gives them."""
    pki_dir = stack.settings.pki_dir
    return [
        "-cacert", str(pki_dir / "ca.pem"),
        "-cert", str(pki_dir / "developer.pem"),
        "-key", str(pki_dir / "developer-key.pem"),
    ]  # fmt: skip


def test_every_instance_is_serving_and_reflects_its_service(stack: Stack) -> None:
    for inst in stack.topo.instances:
        target = f"127.0.0.1:{inst.grpc_port}"
        with mesh_channel(stack.settings, target, pki.DEVELOPER) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", inst.spec.grpc_service):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listed = grpcurl(*_developer(stack), f"localhost:{inst.grpc_port}", "list")
        assert listed.returncode == 0, listed.stderr
        assert inst.spec.grpc_service in listed.stdout.split()
        r = grpcurl(*_developer(stack), target, "grpc.health.v1.Health/Check")
        assert json.loads(r.stdout) == {"status": "SERVING"}


def test_each_instance_exports_rpc_latency_by_method_and_code(edge: Http, stack: Stack) -> None:
    import urllib.request

    user = sign_up(edge)
    for _ in range(4):  # round robin: both instances see some
        edge.get(f"/v1/users/{user.user_id}")
    for inst in stack.topo.instances_of("activity"):
        url = f"http://127.0.0.1:{inst.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        assert "grpc_server_handling_seconds_bucket" in text
        assert 'method="/tiktok.v1.ActivityService/GetUser"' in text
        assert 'code="OK"' in text
