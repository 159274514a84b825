"""Request validation helpers shared by the servicers; each failure names the field."""

from __future__ import annotations

import unicodedata
import uuid

from mesh.errors import InvalidArgument, shown

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
        raise InvalidArgument(field, f"must be a UUID, got {shown(value)}") from None


def page_size(value: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The effective page size: 0 means ``default``; negative or above ``maximum`` is rejected."""
    if value == 0:
        return default
    if value < 0 or value > maximum:
        raise InvalidArgument("page_size", f"must be between 1 and {maximum}, got {value}")
    return value


# what free text (captions, comments) may not hold: C0/C1 controls other than line breaks and
# tabs, and the bidi embeddings, overrides and isolates that make text display other than it reads
_TEXT_ALLOWED_CONTROLS = frozenset("\n\r\t")
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))


# what a name (display names) may not hold beyond that: any control character, and the invisible
# characters that let one name pass for another (soft hyphen, zero-width space, word joiners,
# the byte-order mark, the directional marks). Joiners and tags stay: emoji sequences need them.
INVISIBLE = frozenset("\u00ad\u180e\u200b\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff")


def check_name_text(field: str, text: str) -> str:
    for ch in text:
        if unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS or ch in INVISIBLE:
            raise InvalidArgument(field, "must not contain control or invisible characters")
    return text


def check_free_text(field: str, text: str) -> str:
    for ch in text:
        if unicodedata.category(ch) == "Cc" and ch not in _TEXT_ALLOWED_CONTROLS:
            raise InvalidArgument(field, "must not contain control characters")
        if ch in BIDI_CONTROLS:
            raise InvalidArgument(
                field, f"must not contain bidirectional control characters (U+{ord(ch):04X})"
            )
    return text
