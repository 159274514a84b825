"""Every Redis key of the mesh, built in one place.

Keys that belong to one entity carry its id in a hash tag (``{...}``) so that on a Redis
Cluster everything about one user or one video lives in one slot.
"""

from __future__ import annotations

EVENTS_STREAM = "events"  # the outbox relays' destination; capped with MAXLEN
EVENTS_STREAM_MAXLEN = 1_000_000
# The consumer groups of the events stream: an outbox row is kept until all have acknowledged it
COUNTERS_GROUP = "counters"  # activity_svc's counters
PRECACHE_GROUP = "precache"  # precache_svc's feed builder
CONSUMER_GROUPS = (COUNTERS_GROUP, PRECACHE_GROUP)


def video_card(video_id: str) -> str:
    """The hydration card: a serialized tiktok.v1.Video without counts, for a week."""
    return f"card:{{{video_id}}}"


def video_counts(video_id: str) -> str:
    """The counter mirror of a video: a hash of like/comment/favorite counts and a version."""
    return f"counts:v:{{{video_id}}}"


def user_counts(user_id: str) -> str:
    """The counter mirror of a user: a hash of follower/following/video counts and a version."""
    return f"counts:u:{{{user_id}}}"


def feed_queue(user_id: str, kind: str) -> str:
    """A user's feed queue (``kind`` is ``following`` or ``for_you``): a sorted set of video
    ids scored by rank (publish time in ms for following), capped by feed_svc."""
    return f"feed:{{{user_id}}}:{kind}"


def feed_creators(user_id: str, kind: str) -> str:
    """The creator of each video in ``feed_queue``: a hash kept in step with it."""
    return f"feedc:{{{user_id}}}:{kind}"


def feed_batch_applied(user_id: str, batch_id: str) -> str:
    """Marks a FeedBatch as applied, for all its users (one script applies them together),
    for an hour: at most once in effect. ``user_id``: the batch's first user."""
    return f"fbatch:{{{user_id}}}:{batch_id}"


def feed_seen(owner: str, session: str) -> str:
    """The video ids served in one feed session (a set with a TTL)."""
    return f"seen:{{{owner}}}:{session}"


def feed_page(owner: str, session: str, page: int) -> str:
    """The ids served as page ``page`` of a session, so the same cursor gets the same page."""
    return f"page:{{{owner}}}:{session}:{page}"


def anonymous_feed_sessions(window: int) -> str:
    """New anonymous feed sessions started in one time window (a counter), the bound on how
    many anonymous seen sets exist at once."""
    return f"anon:feedsessions:{window}"


def view_seen(viewer: str, video_id: str) -> str:
    """Marks that a signed-in viewer's play of a video was counted (10 minutes: the next one
    within them is a repeat). Tagged by viewer: one call's marks live in one slot."""
    return f"viewed:{{{viewer}}}:{video_id}"


def signin_failures(handle: str) -> str:
    """Failed sign-ins for one handle in the current window (a counter with the window's TTL)."""
    return f"signin:fail:{handle}"
