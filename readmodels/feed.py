"""The feed's shared rules: what the builder (precache_svc) writes and feed_svc reads agree on
these, so they are written once. The ranking lives here whole: the trending score (an SQL
expression, see ``replica.trending``), the like affinity of personal for-you queues, and the
per-creator rule of for-you pages."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

# The for-you queue of this (nil) user id is the global trending list: anonymous readers get
# it, and it is what every for-you feed falls back to.
GLOBAL_FEED_USER = "00000000-0000-0000-0000-000000000000"

QUEUE_SIZE = 500  # entries a feed queue holds: the builder sends at most this, feed_svc caps at it
LOW_WATER = 20  # unseen entries left below which feed_svc asks the builder for a refill
# unseen entries a page read counts past the page: one more than LOW_WATER tells "enough" apart
LEFT_ENOUGH = LOW_WATER + 1
MAX_MORE_USERS = 1000  # FeedBatch.more_user_ids at most (feed.proto); feed_svc drops bigger ones
USERS_PER_BATCH = MAX_MORE_USERS  # the builder's fan-out: user_id + 999 more_user_ids per batch
TRENDING_DAYS = 7  # how far back the ranking looks
RANKING_SIZE = 3 * QUEUE_SIZE  # the global ranking personal for-you queues are chosen from
PER_FOLLOWEE = 20  # the newest videos of one followee a following queue takes at most
MAX_PER_CREATOR = 2  # videos of one creator in one for-you page

# Trending: recent videos ranked by engagement, weighted by how well they hold viewers, with
# time decay (a Hacker-News-style gravity):
#
#   (1 + likes + 2·comments + 3·favorites + minutes watched)
#     × (0.5 + smoothed completion rate) / (age in hours + 2)^1.5
#
# The completion rate is Bayesian-smoothed: (completions + PRIOR_PLAYS·PRIOR_COMPLETION) /
# (plays + PRIOR_PLAYS), i.e. every video starts with 20 imaginary plays completing at 30 %, so
# three plays that all completed (0.39) do not outrank three thousand that mostly did (~0.9),
# and a new video is neither buried nor boosted before it has plays. The factor ranges 0.5-1.5:
# holding viewers can triple a video's score against one everybody swipes away, but it scales
# engagement rather than replacing it. Minutes watched add plays to engagement at the weight of
# a like per minute. Over upload.videos ``v`` left-joined with activity.video_counters ``c``.
PRIOR_PLAYS = 20
PRIOR_COMPLETION = 0.3
TRENDING_SCORE_SQL = (
    "(1 + greatest(coalesce(c.like_count, 0), 0)"
    " + 2 * greatest(coalesce(c.comment_count, 0), 0)"
    " + 3 * greatest(coalesce(c.favorite_count, 0), 0)"
    " + greatest(coalesce(c.watch_ms, 0), 0) / 60000.0)"
    f" * (0.5 + (greatest(coalesce(c.completion_count, 0), 0) + {PRIOR_PLAYS * PRIOR_COMPLETION})"
    f" / (greatest(coalesce(c.view_count, 0), 0) + {PRIOR_PLAYS}))"
    " / power(extract(epoch FROM now() - v.created_at) / 3600 + 2, 1.5)"
)
AFFINITY = 0.5  # a liked creator's videos rank (1 + AFFINITY × likes, at most 5) higher
MAX_AFFINITY_LIKES = 5

Ranked = tuple[str, str, float]  # (video_id, creator_id, score), best first in a ranking


@dataclass(frozen=True)
class QueuedVideo:
    video_id: uuid.UUID
    creator_id: uuid.UUID
    created_at: datetime

    @property
    def score(self) -> float:
        """The following feed's rank: publish time in Unix milliseconds (newest first)."""
        return self.created_at.timestamp() * 1000


def personal_ranking(
    ranking: Iterable[Ranked],
    user_id: str,
    liked: Sequence[tuple[str, str]],
    completed: Iterable[str] = (),
) -> list[Ranked]:
    """A user's for-you order: the global ranking with the creators of their recent likes
    (``liked``: (video_id, creator_id), newest first) ranked higher, without the videos they
    liked or played to the end (``completed``: video ids), or their own."""
    affinity = collections.Counter(creator for _, creator in liked)
    done = {video for video, _ in liked} | set(completed)
    return sorted(
        (
            (video, creator, score * (1 + AFFINITY * min(affinity[creator], MAX_AFFINITY_LIKES)))
            for video, creator, score in ranking
            if video not in done and creator != user_id
        ),
        key=lambda e: e[2],
        reverse=True,
    )


def diverse(ranked: Iterable[tuple[uuid.UUID, uuid.UUID, float]]) -> list[str]:
    """The ranked video ids with at most MAX_PER_CREATOR of any creator in the whole list, so
    every page cut from it keeps the for-you diversity rule (feed_svc's page script applies the
    same rule per page to queues)."""
    per_creator: dict[uuid.UUID, int] = {}
    kept = []
    for video_id, creator_id, _ in ranked:
        if per_creator.get(creator_id, 0) < MAX_PER_CREATOR:
            per_creator[creator_id] = per_creator.get(creator_id, 0) + 1
            kept.append(str(video_id))
    return kept
