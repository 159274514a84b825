"""The RPC interceptor on an in-process grpc.aio server: what clients see when a handler fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest

from mesh.errors import NotFound
from mesh.interceptors import MeshInterceptor


async def _crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("secret table users_v2 is corrupt")


async def _database_down(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise psycopg.OperationalError("connection refused to 10.0.0.7")


async def _storage_down(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    import botocore.exceptions

    raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://10.0.0.8:8333")


async def _not_found(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise NotFound("video", "v1")


async def _later(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise NotImplementedError


async def _ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _stream_then_crash(
    request: bytes, context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    yield b"one"
    raise RuntimeError("secret")


HANDLERS = grpc.method_handlers_generic_handler(
    "test.Probe",
    {
        "Crash": grpc.unary_unary_rpc_method_handler(_crash),
        "DatabaseDown": grpc.unary_unary_rpc_method_handler(_database_down),
        "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
        "StorageDown": grpc.unary_unary_rpc_method_handler(_storage_down),
        "Later": grpc.unary_unary_rpc_method_handler(_later),
        "Ok": grpc.unary_unary_rpc_method_handler(_ok),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream_then_crash),
    },
)


async def _call(method: str) -> tuple[grpc.StatusCode, str, list[bytes]]:
    server = grpc.aio.server(interceptors=[MeshInterceptor()])
    server.add_generic_rpc_handlers((HANDLERS,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            metadata = (("x-request-id", "req-42"),)
            path = f"/test.Probe/{method}"
            try:
                if method == "Stream":
                    replies = [r async for r in channel.unary_stream(path)(b"x", metadata=metadata)]
                else:
                    replies = [await channel.unary_unary(path)(b"x", metadata=metadata)]
                return grpc.StatusCode.OK, "", replies
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details() or "", []
    finally:
        await server.stop(None)


def test_unexpected_exception_is_internal_with_request_id_and_no_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        code, details, _ = asyncio.run(_call("Crash"))
    assert code == grpc.StatusCode.INTERNAL
    assert "req-42" in details
    assert "secret" not in details and "users_v2" not in details
    # the traceback is in the log, for whoever quotes the request id
    assert any(r.exc_info and "users_v2" in str(r.exc_info[1]) for r in caplog.records)
    rpc_lines = [r for r in caplog.records if r.getMessage() == "rpc"]
    assert rpc_lines and rpc_lines[-1].code == "INTERNAL"


@pytest.mark.parametrize("method", ["DatabaseDown", "StorageDown"])
def test_a_failing_dependency_is_unavailable_without_its_address(method: str) -> None:
    code, details, _ = asyncio.run(_call(method))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "10.0.0." not in details


def test_domain_errors_keep_their_code_and_message() -> None:
    assert asyncio.run(_call("NotFound"))[:2] == (grpc.StatusCode.NOT_FOUND, "video v1 not found")


def test_unbuilt_methods_are_unimplemented_not_internal() -> None:
    assert asyncio.run(_call("Later"))[0] == grpc.StatusCode.UNIMPLEMENTED


def test_success_passes_through() -> None:
    assert asyncio.run(_call("Ok")) == (grpc.StatusCode.OK, "", [b"x"])


def test_streaming_failure_is_mapped_too() -> None:
    code, details, _ = asyncio.run(_call("Stream"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in details
