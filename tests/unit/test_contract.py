"""The proto contract as Envoy sees it: which methods are public, anonymous, retryable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mesh.db import migration_files
from mesh.settings import Settings
from stack.envoy_config import contract_routes
from tiktok.v1 import activity_pb2, feed_pb2, precache_pb2, upload_pb2

FILES = (activity_pb2, upload_pb2, feed_pb2, precache_pb2)


def _routes() -> dict[str, object]:
    return {r.path.rsplit("/", 1)[1]: r for r in contract_routes()}


def test_public_and_anonymous_methods_match_the_design_table() -> None:
    routes = _routes()
    anonymous = {name for name, r in routes.items() if r.anonymous}
    assert anonymous == {
        "CreateUser", "CreateSession", "RefreshSession", "RecordViews", "GetUser", "ListFollowers",
        "ListFollowing", "ListLikedVideos", "ListComments", "GetVideo", "ListUserVideos",
        "GetFeed",
    }  # fmt: skip
    internal = {name for name, r in routes.items() if not r.public}
    assert {"StreamFeedBatches", "RequestRefill", "UploadVideo", "BatchGetVideoCounts"} <= internal
    assert not (anonymous & internal)


def test_only_safe_methods_are_retried_after_reaching_a_server() -> None:
    routes = _routes()
    assert routes["GetUser"].idempotent and routes["DeleteSession"].idempotent
    # each starts or rotates a session (and sign-in costs a password hash): never replayed
    assert not routes["CreateUser"].idempotent and not routes["CreateSession"].idempotent
    assert not routes["RefreshSession"].idempotent
    assert not routes["CreateComment"].idempotent
    assert routes["StreamFeedBatches"].streaming and routes["UploadVideo"].streaming


def test_every_http_path_variable_is_a_request_field() -> None:
    from google.api import annotations_pb2

    for module in FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                path = getattr(rule, rule.WhichOneof("pattern"))
                fields = {f.name for f in method.input_type.fields}
                for var in re.findall(r"{([a-z_]+)", path):
                    assert var in fields, f"{method.full_name}: {{{var}}} is not a field"


def test_migration_files_are_numbered_and_unique(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    for directory in root.glob("*_svc/migrations"):
        versions = [v for v, _ in migration_files(directory)]
        assert versions == sorted(set(versions))
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql").write_text("")
    with pytest.raises(ValueError, match="share a version"):
        migration_files(tmp_path)


def test_settings_defaults_follow_design() -> None:
    s = Settings.from_env({})
    assert (s.edge_port, s.internal_port, s.hot_creator_followers) == (8080, 8081, 10000)
    assert s.grpc_ports == {"activity": 50051, "upload": 50052, "feed": 50053, "precache": 50054}
    assert s.database_replica_url == s.database_url
    assert (s.jwt_ttl_seconds, s.refresh_token_ttl_seconds) == (900, 30 * 86400)
    assert s.s3_public_url == "http://127.0.0.1:8080"
    # media URLs name the media edge (the CDN stand-in), not the API's Envoy
    assert s.cdn_base_url == "http://127.0.0.1:8090/media"
    assert s.media_cache_revalidate_seconds <= 50  # + the janitor's 5 s: deleted within 60 s
    custom = Settings.from_env(
        {"DATABASE_URL": "postgresql://db/x", "EDGE_PORT": "9000", "MEDIA_PORT": "9100"}
    )
    assert custom.database_replica_url == "postgresql://db/x"
    assert custom.s3_public_url == "http://127.0.0.1:9000"
    assert custom.cdn_base_url == "http://127.0.0.1:9100/media"


def test_every_internal_method_has_its_callers_and_no_public_one_does() -> None:
    from stack.envoy_config import INTERNAL_CALLERS

    routes = {r.path: r for r in contract_routes()}
    internal = {path for path, r in routes.items() if not r.public}
    assert set(INTERNAL_CALLERS) == internal
    assert all(routes[path].callers for path in internal)
    assert not [r for r in routes.values() if r.public and r.callers]
