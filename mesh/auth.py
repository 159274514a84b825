"""The caller's identity, as Envoy asserts it after verifying the access token.

The edge strips any client-sent ``x-user-id`` and sets it from the JWT ``sub`` claim; services
trust that header and nothing in a request body.
"""

from __future__ import annotations

from typing import Any

import grpc

from mesh.errors import Unauthenticated
from mesh.interceptors import USER_ID_HEADER


def caller_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The verified user id of the caller, or None for an anonymous call."""
    for key, value in context.invocation_metadata() or ():
        if key == USER_ID_HEADER and isinstance(value, str) and value:
            return value
    return None


def require_caller(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's user id; UNAUTHENTICATED when the call carries no verified identity."""
    user_id = caller_id(context)
    if user_id is None:
        raise Unauthenticated(
            "this method needs a signed-in user: send Authorization: Bearer <token>"
        )
    return user_id
