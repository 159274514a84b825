"""Every Redis key of the mesh, built in one place.

Keys that belong to one entity carry its id in a hash tag (``{...}``) so that on a Redis
Cluster everything about one user or one video lives in one slot.
"""

from __future__ import annotations

EVENTS_STREAM = "events"  # the outbox relays' destination; capped with MAXLEN
EVENTS_STREAM_MAXLEN = 1_000_000


def video_card(video_id: str) -> str:
    """The hydration card: a serialized tiktok.v1.Video without counts."""
    return f"card:{{{video_id}}}"


def video_counts(video_id: str) -> str:
    """The counter mirror of a video: a hash of like/comment/favorite counts and a version."""
    return f"counts:v:{{{video_id}}}"


def user_counts(user_id: str) -> str:
    """The counter mirror of a user: a hash of follower/following/video counts and a version."""
    return f"counts:u:{{{user_id}}}"
