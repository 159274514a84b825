"""The limits of DESIGN.md for account fields, as pure functions (unit-tested without a server)."""

from __future__ import annotations

import re

from mesh.errors import InvalidArgument
from mesh.validation import check_free_text, check_name_text

HANDLE = re.compile(r"[a-z0-9_.]{3,30}")
PASSWORD_MIN, PASSWORD_MAX = 8, 128
DISPLAY_NAME_MAX = 50


def check_handle(handle: str) -> str:
    if not handle:
        raise InvalidArgument("handle", "is required")
    if not HANDLE.fullmatch(handle):
        raise InvalidArgument(
            "handle", "must be 3-30 characters of lower-case a-z, digits 0-9, '_' and '.'"
        )
    return handle


def check_password(password: str) -> str:
    if not password:
        raise InvalidArgument("password", "is required")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidArgument(
            "password", f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters, got {len(password)}"
        )
    return password


def check_display_name(display_name: str, handle: str) -> str:
    """The name to store: trimmed, the handle when empty, at most 50 printable characters."""
    name = display_name.strip()
    if not name:
        return handle
    if len(name) > DISPLAY_NAME_MAX:
        raise InvalidArgument(
            "display_name", f"must be at most {DISPLAY_NAME_MAX} characters, got {len(name)}"
        )
    return check_name_text("display_name", name)


COMMENT_MAX = 500


def check_comment_text(text: str) -> str:
    """The comment to store: 1-500 code points, not blank, free text (``check_free_text``)."""
    if not text.strip():
        raise InvalidArgument("text", "is required and must not be blank")
    if len(text) > COMMENT_MAX:
        raise InvalidArgument("text", f"must be at most {COMMENT_MAX} characters, got {len(text)}")
    return check_free_text("text", text)
