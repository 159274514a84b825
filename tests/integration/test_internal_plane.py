"""The internal plane: mutual TLS on every service port and the internal listener, the peer
policy on service ports, and Envoy's RBAC per method on the internal listener."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh import pki
from mesh.tls import channel_credentials
from stack.launcher import Stack, mesh_channel
from tests.helpers import Http, sign_up
from tiktok.v1 import (
    activity_pb2,
    activity_pb2_grpc,
    feed_pb2,
    feed_pb2_grpc,
    upload_pb2,
    upload_pb2_grpc,
)

FEED = pki.SERVICE_IDENTITIES["feed"]
PRECACHE = pki.SERVICE_IDENTITIES["precache"]


def _activity_port(stack: Stack) -> str:
    return f"127.0.0.1:{stack.topo.instances_of('activity')[0].grpc_port}"


def _internal(stack: Stack) -> str:
    return f"127.0.0.1:{stack.topo.internal_port}"


def _health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    return int(reply.status)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


@pytest.fixture(scope="module")
def stranger_credentials() -> grpc.ChannelCredentials:
    """A well-formed identity from a CA the mesh does not trust (same name as a real one)."""
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp)
        pki.ensure_pki(other)
        creds = channel_credentials(other, FEED)
    return creds


@pytest.mark.parametrize("target", [_activity_port, _internal])
def test_plaintext_and_certificate_less_connections_are_refused(
    stack: Stack, target: Callable[[Stack], str], stranger_credentials: grpc.ChannelCredentials
) -> None:
    address = target(stack)
    with grpc.insecure_channel(address) as plaintext:
        assert _code(lambda: _health(plaintext)) == grpc.StatusCode.UNAVAILABLE
    ca = (stack.settings.pki_dir / "ca.pem").read_bytes()
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca)) as no_certificate:
        assert _code(lambda: _health(no_certificate)) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(address, stranger_credentials) as stranger:
        assert _code(lambda: _health(stranger)) == grpc.StatusCode.UNAVAILABLE


def test_the_developer_identity_gets_probes_and_public_methods_as_nobody(
    edge: Http, stack: Stack
) -> None:
    user = sign_up(edge)
    with mesh_channel(stack.settings, _activity_port(stack), pki.DEVELOPER) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        stub = activity_pb2_grpc.ActivityServiceStub(channel)
        got = stub.GetUser(activity_pb2.GetUserRequest(user_id=user.user_id), timeout=5)
        assert got.handle == user.handle
        # it may not assert a user: the header is ignored, so a signed-in method is refused
        as_user = (("x-user-id", user.user_id),)
        follow = activity_pb2.CreateFollowRequest(followee_id=str(uuid.uuid4()))
        code = _code(lambda: stub.CreateFollow(follow, metadata=as_user, timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # and internal methods are not for it
        counts = activity_pb2.BatchGetVideoCountsRequest()
        code = _code(lambda: stub.BatchGetVideoCounts(counts, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_services_may_not_call_service_ports_directly(stack: Stack) -> None:
    with mesh_channel(stack.settings, _activity_port(stack), FEED) as channel:
        stub = activity_pb2_grpc.ActivityServiceStub(channel)
        request = activity_pb2.BatchGetVideoCountsRequest()
        assert _code(lambda: stub.BatchGetVideoCounts(request, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


def test_rbac_allows_each_internal_method_only_to_its_callers(edge: Http, stack: Stack) -> None:
    victim = sign_up(edge)
    as_victim = (("x-user-id", victim.user_id),)
    counts = activity_pb2.BatchGetVideoCountsRequest()
    # feed_svc reads counts; the builder does not
    with mesh_channel(stack.settings, _internal(stack), FEED) as channel:
        assert activity_pb2_grpc.ActivityServiceStub(channel).BatchGetVideoCounts(counts, timeout=5)
        batches = iter([feed_pb2.FeedBatch(batch_id="x", user_id=victim.user_id)])
        stream = feed_pb2_grpc.FeedServiceStub(channel).StreamFeedBatches(batches, timeout=5)
        assert _code(lambda: list(stream)) == grpc.StatusCode.PERMISSION_DENIED
    with mesh_channel(stack.settings, _internal(stack), PRECACHE) as channel:
        stub = activity_pb2_grpc.ActivityServiceStub(channel)
        assert _code(lambda: stub.BatchGetVideoCounts(counts, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        # the attack of issue 15: deleting someone's video by asserting their id
        delete = upload_pb2.DeleteVideoRequest(video_id=str(uuid.uuid4()))
        uploads = upload_pb2_grpc.UploadServiceStub(channel)
        code = _code(lambda: uploads.DeleteVideo(delete, metadata=as_victim, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    # the developer identity is for service ports, not the internal listener
    with mesh_channel(stack.settings, _internal(stack), pki.DEVELOPER) as channel:
        stub = activity_pb2_grpc.ActivityServiceStub(channel)
        get = activity_pb2.GetUserRequest(user_id=victim.user_id)
        assert _code(lambda: stub.GetUser(get, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED


def test_the_pki_files_are_private_and_name_spiffe_identities(stack: Stack) -> None:
    from cryptography import x509

    pki_dir = stack.settings.pki_dir
    for secret in ("ca-key.pem", "developer-key.pem", "activity-key.pem"):
        assert (pki_dir / secret).stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((pki_dir / "activity.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://tiktok.local/svc/activity"]


def test_the_embedded_stores_refuse_connections_without_credentials(stack: Stack) -> None:
    import boto3
    import botocore.exceptions
    import redis
    from botocore import UNSIGNED
    from botocore.config import Config

    url = urlsplit(stack.settings.redis_url)
    assert url.password  # the stack's Valkey has one
    anonymous = redis.Redis(host=url.hostname, port=url.port, socket_timeout=2)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    wrong = redis.Redis(host=url.hostname, port=url.port, password="guess", socket_timeout=2)
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    wrong.close()
    # S3: the keys are the stack's own, not a well-known pair; unsigned writes are refused
    assert stack.settings.s3_access_key not in ("tiktok-local", "")
    unsigned = boto3.client(
        "s3", endpoint_url=stack.settings.s3_endpoint, region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )  # fmt: skip
    with pytest.raises(botocore.exceptions.ClientError):
        unsigned.put_object(Bucket=stack.settings.s3_bucket, Key="v/intruder", Body=b"x")
    for name in ("valkey-password", "s3-access-key", "s3-secret-key"):
        assert (stack.topo.data_dir / "secrets" / name).stat().st_mode & 0o777 == 0o600


def test_postgres_wants_scram_and_each_service_reaches_only_its_tables(stack: Stack) -> None:
    import psycopg

    creds = stack.pg_credentials
    no_password = f"postgresql://postgres@127.0.0.1:{stack.topo.postgres_port}/postgres"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(no_password, connect_timeout=3)
    hba = (stack.topo.data_dir / "postgres" / "pg_hba.conf").read_text()
    assert "scram-sha-256" in hba and "trust" not in hba
    # the feed's roles read what the replica queries need, never credentials
    with psycopg.connect(creds.service_url("feed"), autocommit=True) as feed:
        feed.execute("SELECT count(*) FROM activity.follows, upload.videos LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            feed.execute("SELECT password_hash FROM activity.users LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            feed.execute("DELETE FROM activity.follows")
    # a service owns its schema and cannot see another's
    with psycopg.connect(creds.service_url("activity"), autocommit=True) as activity:
        activity.execute("SELECT count(*) FROM activity.users")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            activity.execute("SELECT count(*) FROM upload.videos")
