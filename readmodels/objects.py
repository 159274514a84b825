"""The media objects' key layout in the bucket: written by upload_svc, read by anyone through the
media edge. The stack configures storage's anonymous access and the edge from it, so it is
shared here rather than read out of upload_svc."""

from __future__ import annotations

MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # the largest object (an upload) the media plane carries

# key prefixes anyone may read (through the media edge): published files, thumbnails, HLS
# ladders. Pending uploads (v/) are readable only with a signature.
PUBLIC_PREFIXES = ("m/", "t/", "h/")


def video_key(upload_id: str) -> str:
    """Where the client PUTs: the only prefix the edge lets presigned writes reach."""
    return f"v/{upload_id}"


def published_key(upload_id: str) -> str:
    """Where a checked upload is copied on publish: no URL is ever signed for it, so the bytes
    served can never change after the probe, even while the upload URL is still valid."""
    return f"m/{upload_id}"


def thumbnail_key(upload_id: str) -> str:
    return f"t/{upload_id}.jpg"


def hls_prefix(upload_id: str) -> str:
    """Where a video's HLS ladder lives: ``master.m3u8`` and one folder per rendition."""
    return f"h/{upload_id}/"
