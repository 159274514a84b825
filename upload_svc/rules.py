"""Upload and video limits (DESIGN.md) and object keys, as pure functions."""

from __future__ import annotations

from mesh.errors import InvalidArgument, shown
from mesh.validation import check_free_text
from readmodels.objects import MAX_UPLOAD_BYTES

CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/webm")
MAX_CAPTION_CHARS = 2200
MAX_DURATION_MS = 60_000
# container timestamps round: a clip recorded as "60 s" may measure a few frames longer
DURATION_TOLERANCE_MS = 500
# media objects never change under a key, so any cache may keep them for a year
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
# the presigned PUT URL's lifetime, and how long after it the ticket can still be completed
UPLOAD_URL_SECONDS = 15 * 60
UPLOAD_TICKET_SECONDS = 60 * 60
MAX_CHUNK_BYTES = 1024 * 1024
# streamed uploads are buffered into multipart parts of this size (S3's minimum is 5 MiB)
PART_BYTES = 8 * 1024 * 1024

# FFmpeg demuxer names each declared type may turn out to be
CONTAINERS = {
    "video/mp4": {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"},
    "video/quicktime": {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"},
    "video/webm": {"matroska", "webm"},
}


def check_content_type(content_type: str) -> str:
    if content_type not in CONTENT_TYPES:
        raise InvalidArgument(
            "content_type", f"must be one of {', '.join(CONTENT_TYPES)}, got {shown(content_type)}"
        )
    return content_type


def check_size(size_bytes: int) -> int:
    if not 0 < size_bytes <= MAX_UPLOAD_BYTES:
        raise InvalidArgument(
            "size_bytes", f"must be between 1 and {MAX_UPLOAD_BYTES} (64 MiB), got {size_bytes}"
        )
    return size_bytes


def check_caption(caption: str) -> str:
    check_free_text("caption", caption)
    if len(caption) > MAX_CAPTION_CHARS:
        raise InvalidArgument(
            "caption", f"must be at most {MAX_CAPTION_CHARS} characters, got {len(caption)}"
        )
    return caption


def container_matches(content_type: str, format_name: str) -> bool:
    """True when FFmpeg's demuxer (e.g. "mov,mp4,m4a,3gp,3g2,mj2") fits the declared type."""
    return bool(CONTAINERS[content_type] & set(format_name.split(",")))
