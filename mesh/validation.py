"""Request validation helpers shared by the servicers; each failure names the field."""

from __future__ import annotations

import uuid

from mesh.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """``value`` as a UUID; INVALID_ARGUMENT naming ``field`` when it is empty or malformed."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"must be a UUID, got {value[:64]!r}") from None


def page_size(value: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The effective page size: 0 means ``default``; negative or above ``maximum`` is rejected."""
    if value == 0:
        return default
    if value < 0 or value > maximum:
        raise InvalidArgument("page_size", f"must be between 1 and {maximum}, got {value}")
    return value
