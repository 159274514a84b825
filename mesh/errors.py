"""Domain errors: small typed exceptions the services raise; one interceptor maps them to gRPC.

Messages are written for the client developer who will read them in a 4xx body: they say what
was wrong and, where it helps, what is allowed. They never carry internals.
"""

from __future__ import annotations

import grpc

# a message travels in the grpc-message trailer: long ones break proxies (Envoy answers 502)
MAX_MESSAGE_CHARS = 500
SHOWN_CHARS = 40


def shown(value: str) -> str:
    """A rejected value as a message may quote it: its repr, cut to a short prefix."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"


class DomainError(Exception):
    """Base: a client-visible failure with a gRPC status code and a readable message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """A request field is malformed or out of range; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident} not found")


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(DomainError):
    """A dependency (database, cache, storage) is down or too slow; the call may be retried."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(DomainError):
    """A limit is reached; the client should retry after a pause (``retry_after`` seconds, sent
    as the ``retry-after`` header when known)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
