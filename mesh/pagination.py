"""Opaque page tokens for keyset pagination (AIP-158).

A token is URL-safe base64 of JSON: the position after the last item returned, plus the kind of
list, so a token of one list is rejected by another instead of silently paging it wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mesh.errors import InvalidArgument

# our tokens are a kind and a short position; anything longer was not made by us
MAX_TOKEN_CHARS = 512


def encode_token(kind: str, position: list[Any]) -> str:
    raw = json.dumps({"k": kind, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str, kind: str, field: str = "page_token") -> list[Any] | None:
    """The position in ``token``; None for the first page. INVALID_ARGUMENT names ``field``."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(field, "is not a token this list returned")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["k"] != kind or not isinstance(data["p"], list):
            raise ValueError
        return data["p"]
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        raise InvalidArgument(
            field, "is not a token this list returned; start again without one"
        ) from None
