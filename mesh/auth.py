"""The caller's identity, as Envoy asserts it after verifying the access token.

The edge strips any client-sent ``x-user-id`` and ``x-session-id`` and sets them from the JWT's
``sub`` and ``sid`` claims; services trust those headers and nothing in a request body.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from typing import Any

import grpc

from mesh.errors import Unauthenticated

USER_ID_HEADER = "x-user-id"
SESSION_ID_HEADER = "x-session-id"

# Whether the current call's peer may assert the user (set per call by the interceptor from
# mesh.tls.PeerPolicy): the headers of a peer that may not are ignored, as if it were anonymous.
user_headers_trusted: ContextVar[bool] = ContextVar("user_headers_trusted", default=True)


def _header(context: grpc.aio.ServicerContext[Any, Any], name: str) -> str | None:
    if not user_headers_trusted.get():
        return None
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str) and value:
            return value
    return None


def caller_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The verified user id of the caller, or None for an anonymous call."""
    return _header(context, USER_ID_HEADER)


def caller_session(context: grpc.aio.ServicerContext[Any, Any]) -> uuid.UUID:
    """The session id of the caller's access token; UNAUTHENTICATED when there is none."""
    session_id = _header(context, SESSION_ID_HEADER)
    try:
        return uuid.UUID(session_id or "")
    except ValueError:
        raise Unauthenticated(
            "this method needs an access token from a session: sign in again"
        ) from None


def require_caller(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's user id; UNAUTHENTICATED when the call carries no verified identity."""
    user_id = caller_id(context)
    if user_id is None:
        raise Unauthenticated(
            "this method needs a signed-in user: send Authorization: Bearer <token>"
        )
    return user_id
