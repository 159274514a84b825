"""Generates the edge and internal Envoy configs from one template.

The route table comes from the proto contract itself: a method with a ``google.api.http``
annotation is public (routed on the edge), ``(tiktok.v1.anonymous)`` makes its token optional,
and ``idempotency_level`` decides how boldly Envoy may retry it. Clusters come from the same
topology the launcher starts, one endpoint per instance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from google.api import annotations_pb2 as http_annotations
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from mesh import pki
from mesh.settings import SERVICES, Settings
from stack.servers import s3_address
from stack.topology import HOST, Topology

TEMPLATE = Path(__file__).resolve().parent.parent / "envoy" / "envoy.yaml.j2"

SAFE_LEVELS = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)
# each costs a password hash: limited per client address in their own, stricter bucket
# Who calls each internal method through the internal listener (Envoy's RBAC allows exactly
# these): the services' own calls, and the importer tool's streamed uploads.
INTERNAL_CALLERS: dict[str, tuple[pki.Identity, ...]] = {
    "/tiktok.v1.UploadService/BatchGetVideos": (
        pki.SERVICE_IDENTITIES["activity"],
        pki.SERVICE_IDENTITIES["feed"],
    ),
    "/tiktok.v1.ActivityService/BatchGetVideoCounts": (
        pki.SERVICE_IDENTITIES["upload"],
        pki.SERVICE_IDENTITIES["feed"],
    ),
    "/tiktok.v1.PrecacheService/RequestRefill": (pki.SERVICE_IDENTITIES["feed"],),
    "/tiktok.v1.FeedService/StreamFeedBatches": (pki.SERVICE_IDENTITIES["precache"],),
    "/tiktok.v1.UploadService/UploadVideo": (pki.IMPORTER,),
}

# Methods whose credential is in the request, not the access token: an expired one sent along
# must not make them 401 (the caller is anonymous to the services).
TOKEN_IGNORED = ("/tiktok.v1.ActivityService/RefreshSession",)

SIGN_IN_METHODS = (
    "/tiktok.v1.ActivityService/CreateUser",
    "/tiktok.v1.ActivityService/CreateSession",
)


@dataclass(frozen=True)
class Route:
    """One gRPC method as Envoy routes it."""

    path: str  # /tiktok.v1.ActivityService/CreateUser (the transcoder rewrites REST to this)
    cluster: str
    public: bool  # has an HTTP mapping: routed on the edge
    anonymous: bool  # token optional (a bad token is still refused)
    idempotent: bool  # may be retried even after it reached a server
    streaming: bool
    sign_in: bool  # limited per client address by the sign-in bucket, not the anonymous one
    callers: tuple[str, ...]  # SPIFFE IDs allowed on the internal listener (INTERNAL_CALLERS)
    token_ignored: bool  # the edge does not look at the access token at all (TOKEN_IGNORED)
    rest: tuple[str, str] | None  # ("POST", "/v1/users"): its REST mapping, when public


@dataclass(frozen=True)
class RestPath:
    """One REST path template and the methods it answers; any other method is 405."""

    template: str  # /v1/users/{user_id}
    regex: str  # what Envoy matches the request path (without the query) against
    methods: str  # the Allow header: "GET, DELETE"


def rest_paths(routes: list[Route]) -> list[RestPath]:
    by_template: dict[str, list[str]] = {}
    for route in routes:
        if route.rest:
            by_template.setdefault(route.rest[1], []).append(route.rest[0])
    return [
        RestPath(template, _template_regex(template), ", ".join(sorted(methods)))
        for template, methods in sorted(by_template.items())
    ]


def _template_regex(template: str) -> str:
    """``/v1/users/{user_id}/videos`` → ``^/v1/users/[^/]+/videos$`` (one segment per variable)."""
    parts = re.split(r"\{[^}]*\}", template)
    return "^" + "[^/]+".join(re.escape(part) for part in parts) + "$"


def _rest_mapping(options: MethodOptions) -> tuple[str, str] | None:
    if not options.HasExtension(http_annotations.http):
        return None
    rule = options.Extensions[http_annotations.http]
    verb = rule.WhichOneof("pattern")
    return verb.upper(), re.sub(r"=[^}]*", "", getattr(rule, verb))


def _method_route(method: MethodDescriptor, cluster: str) -> Route:
    from tiktok.v1 import annotations_pb2

    options = method.GetOptions()
    path = f"/{method.containing_service.full_name}/{method.name}"
    return Route(
        path=path,
        cluster=cluster,
        public=options.HasExtension(http_annotations.http),
        anonymous=options.Extensions[annotations_pb2.anonymous],
        idempotent=options.idempotency_level in SAFE_LEVELS,
        streaming=method.client_streaming or method.server_streaming,
        sign_in=path in SIGN_IN_METHODS,
        callers=tuple(i.spiffe_id for i in INTERNAL_CALLERS.get(path, ())),
        token_ignored=path in TOKEN_IGNORED,
        rest=_rest_mapping(options),
    )


def contract_routes() -> list[Route]:
    """Every method of the four services, read from the generated descriptors."""
    from tiktok.v1 import activity_pb2, feed_pb2, precache_pb2, upload_pb2

    files = (activity_pb2, upload_pb2, feed_pb2, precache_pb2)
    services = {svc.full_name: svc for f in files for svc in f.DESCRIPTOR.services_by_name.values()}
    routes = []
    for spec in SERVICES:
        service = services[spec.grpc_service]
        routes += [_method_route(m, spec.name) for m in service.methods]
    return routes


def _storage(settings: Settings) -> dict[str, object]:
    from readmodels.objects import MAX_UPLOAD_BYTES

    host, port = s3_address(settings.s3_endpoint)
    return {
        "host": host,
        "port": port,
        "bucket": settings.s3_bucket,
        "max_upload_bytes": MAX_UPLOAD_BYTES,
    }


def _tls(settings: Settings, identity: pki.Identity) -> dict[str, object] | None:
    """The files of one Envoy's mesh identity and the identities it expects; None: plaintext."""
    if not settings.mesh_tls:
        return None
    files = pki.files(settings.pki_dir, identity)
    return {
        "ca": str(files.ca),
        "cert": str(files.cert),
        "key": str(files.key),
        "trust_domain": f"spiffe://{pki.TRUST_DOMAIN}/",
        "service_ids": {name: i.spiffe_id for name, i in pki.SERVICE_IDENTITIES.items()},
    }


def _bucket(per_second: int, burst: int) -> dict[str, int]:
    return {"per_second": per_second, "burst": burst}


def render_envoy_configs(
    topo: Topology, jwks_path: Path, descriptor_path: Path, settings: Settings
) -> dict[str, Path]:
    """Writes ``edge.yaml`` and ``internal.yaml`` under ``<data>/envoy/``; returns their paths."""
    env = jinja2.Environment(  # noqa: S701 - renders YAML, not HTML
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["json"] = json.dumps
    template = env.get_template(TEMPLATE.name)
    routes = contract_routes()
    out_dir = topo.data_dir / "envoy"
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {
        "host": HOST,
        "services": SERVICES,
        "instances": {s.name: topo.instances_of(s.name) for s in SERVICES},
        "jwks_path": str(jwks_path),
        "descriptor_path": str(descriptor_path),
        "openapi_path": str(descriptor_path.parent / "openapi.json"),
        "jwt_issuer": settings.jwt_issuer,
        "jwt_audience": settings.jwt_audience,
        "log_dir": str(topo.data_dir / "logs"),
        "s3": _storage(settings),
        "limits": {
            "user": _bucket(settings.rate_limit_per_second, settings.rate_limit_burst),
            "address": _bucket(settings.anon_rate_limit_per_second, settings.anon_rate_limit_burst),
            "sign_in": _bucket(
                settings.signin_rate_limit_per_second, settings.signin_rate_limit_burst
            ),
        },
        "trusted_proxies": [
            (str(net.network_address), net.prefixlen) for net in settings.trusted_proxies
        ],
    }
    paths = {}
    for role, port, admin_port, role_routes, identity in (
        ("edge", topo.edge_port, topo.edge_admin_port, [r for r in routes if r.public], pki.EDGE),
        ("internal", topo.internal_port, topo.internal_admin_port, routes, pki.INTERNAL),
    ):
        path = out_dir / f"{role}.yaml"
        path.write_text(
            template.render(
                role=role,
                port=port,
                admin_port=admin_port,
                media_port=topo.media_port,
                routes=role_routes,
                rest_paths=rest_paths(role_routes) if role == "edge" else [],
                tls=_tls(settings, identity),
                **common,
            )
        )
        paths[role] = path
    return paths
