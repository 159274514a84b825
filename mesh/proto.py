"""Small conversions between Python values and protobuf well-known types."""

from __future__ import annotations

from datetime import datetime

from google.api import annotations_pb2 as http_annotations  # type: ignore[import-untyped]
from google.protobuf import descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def public_methods(grpc_service: str) -> frozenset[str]:
    """The paths (``/pkg.Service/Method``) of a service's public methods: those with a
    ``google.api.http`` rule, which the edge routes. The service's module must be imported."""
    service = descriptor_pool.Default().FindServiceByName(grpc_service)
    return frozenset(
        f"/{grpc_service}/{m.name}"
        for m in service.methods
        if m.GetOptions().HasExtension(http_annotations.http)
    )
