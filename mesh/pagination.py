"""Opaque, tamper-evident page tokens for keyset pagination (AIP-158).

A token is URL-safe base64 of JSON (the position after the last item returned, plus the kind of
list, so a token of one list is rejected by another instead of silently paging it wrong), then
``.`` and an HMAC-SHA256 tag (128 bits) over it. An edited or forged token fails the tag check
and is INVALID_ARGUMENT before its contents are looked at, so a client can only ever ask for a
position one of our lists handed out.

The key is shared by every instance of every service (``PAGE_TOKEN_KEY``, or the file the stack
makes on first run); ``configure`` sets it at start. Without it a process signs with a random key
of its own, valid only for its lifetime: safe, never permissive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from mesh.errors import InvalidArgument
from mesh.keyfiles import ensure_secret_file

# our tokens are a kind and a short position; anything longer was not made by us
MAX_TOKEN_CHARS = 512
TAG_BYTES = 16
KEY_BYTES = 32

_key = secrets.token_bytes(KEY_BYTES)


def configure(key: bytes) -> None:
    if len(key) < 16:
        raise ValueError("the page-token key must be at least 16 bytes")
    global _key
    _key = key


def load_key(path: Path) -> bytes:
    """The key in ``path``, made (random, mode 0600) on first run."""
    ensure_secret_file(path, lambda: secrets.token_bytes(KEY_BYTES))
    return path.read_bytes()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(payload: bytes) -> bytes:
    return hmac.digest(_key, payload, hashlib.sha256)[:TAG_BYTES]


def encode_token(kind: str, position: list[Any]) -> str:
    payload = json.dumps({"k": kind, "p": position}, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_tag(payload))}"


def decode_token(token: str, kind: str, field: str = "page_token") -> list[Any] | None:
    """The position in ``token``; None for the first page. INVALID_ARGUMENT names ``field``."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError
        body, _, tag = token.partition(".")
        payload = _unb64(body)
        if not hmac.compare_digest(_unb64(tag), _tag(payload)):
            raise ValueError
        data = json.loads(payload)
        if data["k"] != kind or not isinstance(data["p"], list):
            raise ValueError
        position: list[Any] = data["p"]
        return position
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        raise InvalidArgument(
            field, "is not a token this list returned; start again without one"
        ) from None
