"""The one server interceptor: request context, error mapping, a log line and metrics per RPC.

Servicers raise ``DomainError`` subclasses and let everything else propagate; this module turns
them into gRPC statuses. Unexpected exceptions become INTERNAL with a request id the client can
quote; the traceback goes to the log only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import botocore.exceptions
import grpc
import psycopg
import psycopg_pool
import redis.exceptions
from google.protobuf.message import DecodeError
from prometheus_client import Histogram

from mesh.auth import USER_ID_HEADER, user_headers_trusted
from mesh.errors import DomainError, ResourceExhausted
from mesh.logs import request_id_var, user_id_var
from mesh.tls import PeerPolicy

log = logging.getLogger("mesh.rpc")

RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle one RPC, by method and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Failures of a dependency, not of the request: the client may retry (DESIGN: degraded modes).
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    botocore.exceptions.ConnectionError,  # object storage unreachable or refusing connections
    botocore.exceptions.HTTPClientError,  # ... or hanging (read timeouts)
    TimeoutError,
)

# Statuses of a call to another service that mean "that service is down or too slow".
UPSTREAM_UNAVAILABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


def is_dependency_failure(exc: BaseException) -> bool:
    """True when ``exc`` is a store or another service failing, not the request."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in UPSTREAM_UNAVAILABLE
    return isinstance(exc, DEPENDENCY_ERRORS)


# Probes are not traffic: no log line, no histogram sample.
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

REQUEST_ID_HEADER = "x-request-id"


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class _Call:
    """Bookkeeping for one RPC: sets the log context, maps errors, records the outcome."""

    def __init__(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], policy: PeerPolicy | None
    ) -> None:
        self.method = method
        self.context = context
        self.policy = policy
        headers = _metadata(context)
        self.request_id = headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        self.user_id = headers.get(USER_ID_HEADER) or None
        self.code = grpc.StatusCode.OK
        self.start = time.perf_counter()
        # the user is named in logs only once the peer policy has said its headers count
        self._tokens = (
            request_id_var.set(self.request_id),
            user_id_var.set(None),
            user_headers_trusted.set(False),
        )

    def admit(self) -> None:
        """Applies the peer policy (mutual TLS): refuses the call, or decides whether its user
        headers count. Raises PermissionDenied for fail() to map."""
        if self.policy is None or self.policy.admit(self.method, self.context):
            user_headers_trusted.set(True)
            user_id_var.set(self.user_id)

    async def fail(self, exc: BaseException) -> None:
        """Aborts the RPC with the status ``exc`` maps to. Always raises."""
        if isinstance(exc, DecodeError):
            # e.g. a string field that is not UTF-8 (the transcoder passes path and query bytes
            # through): the request's fault, said briefly, never echoing the bytes
            self.code = grpc.StatusCode.INVALID_ARGUMENT
            await self.context.abort(self.code, UNDECODABLE)
        if isinstance(exc, ResourceExhausted) and exc.retry_after is not None:
            # a trailers-only reply: Envoy turns these into HTTP response headers
            self.context.set_trailing_metadata((("retry-after", str(exc.retry_after)),))
        if isinstance(exc, DomainError):
            self.code = exc.code
            await self.context.abort(exc.code, exc.message)
        if isinstance(exc, NotImplementedError):
            # the generated base servicer raises this for methods a later issue implements
            self.code = grpc.StatusCode.UNIMPLEMENTED
            await self.context.abort(self.code, f"{self.method} is not implemented yet")
        if is_dependency_failure(exc):
            self.code = grpc.StatusCode.UNAVAILABLE
            log.warning("dependency unavailable: %r", exc)
            await self.context.abort(
                self.code, "a backing service is unavailable; retry in a moment"
            )
        self.code = grpc.StatusCode.INTERNAL
        log.error("unhandled exception in %s", self.method, exc_info=exc)
        await self.context.abort(
            self.code, f"internal error; quote request id {self.request_id} when reporting it"
        )

    def finish(self, exc: BaseException | None = None) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
        elif exc is not None and self.code == grpc.StatusCode.OK:
            # an abort() raised by the servicer itself carries its code on the context
            self.code = self.context.code() or grpc.StatusCode.UNKNOWN
        elapsed = time.perf_counter() - self.start
        RPC_SECONDS.labels(self.method, self.code.name).observe(elapsed)
        log.info(
            "rpc",
            extra={
                "method": self.method,
                "code": self.code.name,
                "duration_ms": round(elapsed * 1000, 3),
            },
        )
        request_id_var.reset(self._tokens[0])
        user_id_var.reset(self._tokens[1])
        user_headers_trusted.reset(self._tokens[2])


UNDECODABLE = "request: not a valid message (text fields must be valid UTF-8)"


class _Undecodable:
    """What a unary request that failed to parse becomes, so the handler can answer
    INVALID_ARGUMENT (grpc would answer UNKNOWN from inside its deserializer)."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as e:
            return _Undecodable(e)

    return deserialize


def _wrap_unary(
    method: str, inner: Callable[..., Awaitable[Any]], policy: PeerPolicy | None
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(method, context, policy)
        exc: BaseException | None = None
        try:
            call.admit()
            if isinstance(request, _Undecodable):
                raise request.error
            return await inner(request, context)
        except grpc.aio.AbortError as e:
            exc = e
            raise
        except BaseException as e:
            exc = e
            if isinstance(e, asyncio.CancelledError):
                raise
            await call.fail(e)
        finally:
            call.finish(exc)

    return handler


# an async servicer's streaming method (grpc's stubs type handlers as the sync server's)
_Streaming = Callable[..., AsyncIterator[Any]]


def _wrap_streaming(
    method: str, inner: Callable[..., AsyncIterator[Any]], policy: PeerPolicy | None
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        call = _Call(method, context, policy)
        exc: BaseException | None = None
        try:
            call.admit()
            if isinstance(request, _Undecodable):
                raise request.error
            async for reply in inner(request, context):
                yield reply
        except grpc.aio.AbortError as e:
            exc = e
            raise
        except BaseException as e:
            exc = e
            if isinstance(e, asyncio.CancelledError | GeneratorExit):
                raise
            await call.fail(e)
        finally:
            call.finish(exc)

    return handler


class MeshInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler of the server; probes (health, reflection) pass through untouched
    (any mesh identity may probe). ``policy``: who may call what (None: everyone, plaintext)."""

    def __init__(self, policy: PeerPolicy | None = None) -> None:
        self.policy = policy

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_QUIET_PREFIXES):
            return handler
        # a unary request is parsed before the handler runs: tolerantly, so a bad one is
        # INVALID_ARGUMENT; a streamed one is parsed as the servicer reads, where fail() maps it
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        unary_codec = {**codec, "request_deserializer": _tolerant(handler.request_deserializer)}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, self.policy), **unary_codec
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary, self.policy), **codec
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_streaming(method, cast(_Streaming, handler.unary_stream), self.policy),
                **unary_codec,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_streaming(method, cast(_Streaming, handler.stream_stream), self.policy), **codec
        )
