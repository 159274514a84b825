"""Feed queues in Redis: applying FeedBatches (at most once, capped) and reading session pages
(never destructive, never a video twice in a session, the same cursor gives the same page).

Both operations are Lua scripts that must be atomic (a batch is applied whole with its marker;
a page is chosen, memoised and marked seen together), and each is given every key it touches:
a page script one user's keys (one hash slot); an apply script many users' queues on a single
node, and on a Redis Cluster the users of one slot (a batch is split by slot, each part with a
marker of its own in that slot). A page's cards and counts are read after the script, in one
round trip: the script cannot know their keys in advance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from feed_svc.hydrate import Hydration, hydration, read_hydration
from mesh import keys
from mesh.clients import execute, is_cluster, queue_script
from mesh.redismux import SharedConnection
from readmodels.counters import VIDEO_FIELDS
from readmodels.feed import (
    GLOBAL_FEED_USER,
    LEFT_ENOUGH,
    MAX_MORE_USERS,
    MAX_PER_CREATOR,
    QUEUE_SIZE,
)
from tiktok.v1 import feed_pb2

BATCH_MARKER_SECONDS = 3600
QUEUE_IDLE_SECONDS = 30 * 24 * 3600  # a queue lives a month from its last build ...
# ... a personal for-you queue ten minutes: then the next read asks for one from the newer ranking
FOR_YOU_QUEUE_SECONDS = 600
SESSION_SECONDS = 3600  # a signed-in feed session's seen set and page memos
ANONYMOUS_SESSION_SECONDS = 900  # an anonymous one's (they are capped in number, too)
ANONYMOUS_WINDOW_SECONDS = 60  # new anonymous sessions are counted per minute

# KEYS: a counter. ARGV: its ttl. Counts one and returns the count (the ttl set with the first).
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

KIND_NAMES = {feed_pb2.FEED_KIND_FOLLOWING: "following", feed_pb2.FEED_KIND_FOR_YOU: "for_you"}

# KEYS: the batch's marker, then each user's queue, followed by its creators hash when ARGV[5]
# is '1' (for_you: the read's creator diversity needs it; following does not). ARGV: replace,
# cap, marker ttl, idle ttl, creators, n_add, then n_add (video_id, creator_id, score) triples,
# then the ids to remove.
# One call applies a fan-out batch to up to 1,000 users (on a cluster: those of one slot), all
# or nothing, so one marker covers them. Adds go only to queues that exist: a user without one
# (never read, or expired) gets the video when the queue is built (the cold path asks for that),
# so pushes cost nothing for the inactive. A replace (a build) creates the queue and starts its
# lifetime.
_APPLY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local replace, cap, with_creators = ARGV[1] == '1', tonumber(ARGV[2]), ARGV[5] == '1'
local scored, owners, removed = {}, {}, {}
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  scored[#scored + 1] = ARGV[i + 2]
  scored[#scored + 1] = ARGV[i]
  owners[#owners + 1] = ARGV[i]
  owners[#owners + 1] = ARGV[i + 1]
  i = i + 3
end
for j = i, #ARGV do removed[#removed + 1] = ARGV[j] end
local function in_chunks(command, key, list)  -- unpack() has a limit of a few thousand
  for s = 1, #list, 1000 do
    redis.call(command, key, unpack(list, s, math.min(s + 999, #list)))
  end
end
local stride = with_creators and 2 or 1
local applied = 0
for u = 2, #KEYS, stride do
  local queue, creators = KEYS[u], with_creators and KEYS[u + 1]
  if replace or redis.call('EXISTS', queue) == 1 then
    if replace then redis.call('DEL', queue, creators or queue) end
    if #scored > 0 then
      redis.call('ZADD', queue, unpack(scored))
      if creators then redis.call('HSET', creators, unpack(owners)) end
    end
    if #removed > 0 then
      in_chunks('ZREM', queue, removed)
      if creators then in_chunks('HDEL', creators, removed) end
    end
    if creators then
      local excess = redis.call('ZCARD', queue) - cap
      if excess > 0 then
        in_chunks('HDEL', creators, redis.call('ZRANGE', queue, 0, excess - 1))
        redis.call('ZREMRANGEBYRANK', queue, 0, excess - 1)
      end
    else
      redis.call('ZREMRANGEBYRANK', queue, 0, -(cap + 1))  -- keeps the best cap entries
    end
    if replace then
      redis.call('EXPIRE', queue, ARGV[4])
      if creators then redis.call('EXPIRE', creators, ARGV[4]) end
    end
    applied = applied + 1
  end
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[3])
return applied
"""

# KEYS: queue, creators, seen, page memo. ARGV: page size, session ttl, max per creator (0 = no
# limit), scan limit, LEFT_ENOUGH, the page number. Returns {from_memo, ids joined by ',',
# unseen entries left, queue exists}. The memo keeps the ids and what was left, so a replay
# answers exactly as the first call did.
_NEXT_PAGE = """
local memo = redis.call('GET', KEYS[4])
if memo then
  local sep = string.find(memo, '|', 1, true)
  if not sep then return {1, memo, 1, 1} end
  return {1, string.sub(memo, 1, sep - 1), tonumber(string.sub(memo, sep + 1)), 1}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', 0, 0} end  -- cold: nothing recorded
local size = tonumber(ARGV[1])
local per_creator = tonumber(ARGV[3])
local picked, per = {}, {}
-- unseen entries after the page, counted up to LEFT_ENOUGH (enough to decide on a refill)
local left, enough = 0, tonumber(ARGV[5])
local any_seen = redis.call('EXISTS', KEYS[3]) == 1  -- a session's first page has seen nothing
local start, chunk = 0, size + enough  -- usually the first chunk is all it takes
while (#picked < size or left < enough) and start < tonumber(ARGV[4]) do
  local ids = redis.call('ZREVRANGE', KEYS[1], start, start + chunk - 1)
  if #ids == 0 then break end
  local seen = any_seen and redis.call('SMISMEMBER', KEYS[3], unpack(ids)) or {}
  local creators = per_creator > 0 and redis.call('HMGET', KEYS[2], unpack(ids)) or {}
  for i, id in ipairs(ids) do
    if #picked >= size and left >= enough then break end
    if seen[i] ~= 1 then
      if #picked < size then
        local ok = true
        if per_creator > 0 then
          local creator = creators[i] or id
          if (per[creator] or 0) >= per_creator then ok = false
          else per[creator] = (per[creator] or 0) + 1 end
        end
        if ok then picked[#picked + 1] = id else left = left + 1 end
      else
        left = left + 1
      end
    end
  end
  start = start + chunk
  chunk = 100
end
local joined = table.concat(picked, ',')
if #picked > 0 then redis.call('SADD', KEYS[3], unpack(picked)) end
redis.call('EXPIRE', KEYS[3], ARGV[2])
-- a first page is never asked for again (no cursor points at it): no memo
if ARGV[6] ~= '0' then redis.call('SET', KEYS[4], joined .. '|' .. left, 'EX', ARGV[2]) end
return {0, joined, left, 1}
"""


# KEYS: seen, page memo. ARGV: page size, session ttl, candidate ids (best first).
# Records the first unseen candidates as the page, unless the page was recorded already.
_RECORD_PAGE = """
local memo = redis.call('GET', KEYS[2])
if memo then
  local sep = string.find(memo, '|', 1, true)
  if sep then return string.sub(memo, 1, sep - 1) end
  return memo
end
local picked = {}
for i = 3, #ARGV do
  if #picked >= tonumber(ARGV[1]) then break end
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then picked[#picked + 1] = ARGV[i] end
end
local joined = table.concat(picked, ',')
-- a cold page does not know what is left: '|1' lets the session continue
redis.call('SET', KEYS[2], joined .. '|1', 'EX', ARGV[2])
if #picked > 0 then redis.call('SADD', KEYS[1], unpack(picked)) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return joined
"""


# KEYS: seen, page memo. ARGV: session ttl, the memo ('ids|left'), the page number, the ids.
# Records a page picked outside Redis (a queue in another slot than the reader's keys, on a
# cluster) unless the page was recorded already: then returns that memo, else nothing.
_KEEP_PAGE = """
local memo = redis.call('GET', KEYS[2])
if memo then return memo end
if ARGV[3] ~= '0' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1]) end
if #ARGV > 3 then redis.call('SADD', KEYS[1], unpack(ARGV, 4)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return false
"""

RANKING_CACHE_SECONDS = 1.0  # a cluster's readers of the global queue share a copy this long
SCAN_LIMIT = 2000  # queue entries a page read looks at, at most


def pick_page(
    ranked: Sequence[str],
    creators: Mapping[str, str],
    seen: Set[str],
    size: int,
    per_creator: int,
    enough: int,
) -> tuple[list[str], int]:
    """What the page script picks, in Python: the first ``size`` unseen videos of ``ranked``
    with at most ``per_creator`` of one creator (0: no limit), and how many unseen ones are
    left after them (counted up to ``enough``)."""
    picked: list[str] = []
    per: dict[str, int] = {}
    left = 0
    for video_id in ranked:
        if len(picked) >= size and left >= enough:
            break
        if video_id in seen:
            continue
        if len(picked) >= size:
            left += 1
            continue
        if per_creator:
            creator = creators.get(video_id, video_id)
            if per.get(creator, 0) >= per_creator:
                left += 1
                continue
            per[creator] = per.get(creator, 0) + 1
        picked.append(video_id)
    return picked, left


def _memo_page(memo: bytes | str) -> tuple[list[str], int]:
    text = memo.decode() if isinstance(memo, bytes) else memo
    joined, _, left = text.partition("|")
    return [v for v in joined.split(",") if v], int(left or 1)


@dataclass(frozen=True)
class Page:
    video_ids: list[str]
    replayed: bool  # the memo of an earlier identical call
    unseen_left: int  # about how many queued videos this session has not been served
    queue_exists: bool
    hydration: Hydration  # the page's cards and counts, read right after it, for Hydrator.videos


class FeedQueues:
    def __init__(self, redis: aioredis.Redis, shared: SharedConnection | None) -> None:
        self.redis = redis
        # page reads, the hot path, share one connection (a single node; None on a cluster)
        self.shared = shared
        self.cluster = is_cluster(redis)
        self._apply = redis.register_script(_APPLY)
        self._next_page = redis.register_script(_NEXT_PAGE)
        self._record_page = redis.register_script(_RECORD_PAGE)
        self._keep_page = redis.register_script(_KEEP_PAGE)
        self._rankings: dict[str, tuple[float, list[str], dict[str, str]]] = {}
        self._count = redis.register_script(_COUNT)

    async def apply(self, batches: Sequence[feed_pb2.FeedBatch]) -> int:
        """Applies well-formed batches in order, in one pipeline; each at most once per user.
        Returns how many user queues were changed (not skipped as already applied)."""
        pipe = self.redis.pipeline(transaction=False)
        applies: list[int] = []  # where the apply scripts' replies are among the pipeline's
        for batch in batches:
            kind = KIND_NAMES.get(batch.kind)
            if (
                kind is None
                or not batch.user_id
                or not batch.batch_id
                or len(batch.more_user_ids) > MAX_MORE_USERS
            ):
                continue  # malformed: acknowledged and dropped (FeedService contract)
            with_creators = kind == "for_you"
            args: list[str | int | float] = [
                "1" if batch.replace else "0",
                QUEUE_SIZE,
                BATCH_MARKER_SECONDS,
                # a personal for-you queue follows the ranking; the global one (rebuilt every
                # 10 s) and following queues must outlive a builder that is down for a while
                FOR_YOU_QUEUE_SECONDS
                if kind == "for_you" and batch.user_id != GLOBAL_FEED_USER
                else QUEUE_IDLE_SECONDS,
                "1" if with_creators else "0",
            ]
            # only the best QUEUE_SIZE adds can survive the cap, whatever the queue holds; this
            # also keeps the script's trim within Lua's unpack limit
            adds = sorted(batch.add, key=lambda e: e.score, reverse=True)[:QUEUE_SIZE]
            args.append(len(adds))
            for entry in adds:
                args += [entry.video_id, entry.creator_id, entry.score]
            args += list(batch.remove_video_ids)
            for users in self._by_slot([batch.user_id, *batch.more_user_ids], kind):
                # the marker lives with the part's first user: the first part's is the batch's
                batch_keys = [keys.feed_batch_applied(users[0], batch.batch_id)]
                for user_id in users:
                    batch_keys.append(keys.feed_queue(user_id, kind))
                    if with_creators:
                        batch_keys.append(keys.feed_creators(user_id, kind))
                applies.append(len(pipe))
                await queue_script(pipe, self._apply, batch_keys, args)
            if batch.seen_video_ids:
                # a set add repeats harmlessly: outside the at-most-once marker
                seen = keys.feed_seen(batch.user_id, kind)
                pipe.sadd(seen, *batch.seen_video_ids)
                pipe.expire(seen, SESSION_SECONDS)
        if not len(pipe):
            return 0
        replies = await execute(pipe)
        return sum(replies[i] for i in applies)

    def _by_slot(self, users: list[str], kind: str) -> list[list[str]]:
        """The users in parts whose keys share a node's slot: all of them on a single node; on
        a cluster one part per hash slot, in the order of each slot's first user."""
        if not self.cluster:
            return [users]
        parts: dict[int, list[str]] = {}
        for user_id in users:
            parts.setdefault(key_slot(keys.feed_queue(user_id, kind).encode()), []).append(user_id)
        return list(parts.values())

    async def next_page(
        self,
        queue_owner: str,
        kind: str,
        reader: str,
        session: str,
        page: int,
        size: int,
        seen_scope: str | None = None,
    ) -> Page:
        """The ``page``-th page of a session over ``queue_owner``'s queue, as read by ``reader``
        (the session's owner: the user, or the session itself when anonymous). What was served
        is remembered per session, or per ``seen_scope`` when given (across sessions)."""
        queue = keys.feed_queue(queue_owner, kind)
        seen = keys.feed_seen(reader, seen_scope or session)
        memo = keys.feed_page(reader, session, page)
        ttl = _session_seconds(reader, session)
        per_creator = MAX_PER_CREATOR if kind == "for_you" else 0
        if self.cluster and key_slot(queue.encode()) != key_slot(seen.encode()):
            return await self._next_page_across_slots(
                queue_owner, kind, seen, memo, ttl, per_creator, size, page
            )
        reply = await self._run(
            self._next_page,
            queue,
            keys.feed_creators(queue_owner, kind),
            seen,
            memo,
            args=[size, ttl, per_creator, SCAN_LIMIT, LEFT_ENOUGH, page],
        )
        replayed, joined, left, exists = reply[:4]
        raw = joined.decode() if isinstance(joined, bytes) else joined
        video_ids = [v for v in raw.split(",") if v]
        return Page(
            video_ids=video_ids,
            replayed=bool(replayed),
            unseen_left=int(left),
            queue_exists=bool(exists),
            hydration=await self._hydration(video_ids),
        )

    async def _next_page_across_slots(
        self,
        queue_owner: str,
        kind: str,
        seen_key: str,
        memo_key: str,
        ttl: int,
        per_creator: int,
        size: int,
        page: int,
    ) -> Page:
        """A page of a queue whose slot is not the reader's (an anonymous or new reader of the
        global queue, on a cluster): the memo, else the page picked here from the queue's
        ranking and the reader's seen set, then recorded by a script in the reader's slot (a
        concurrent identical call that recorded first wins: its page is served)."""
        memo = await self.redis.get(memo_key)
        if memo is not None:
            ids, left = _memo_page(memo)
            return Page(ids, True, left, True, await self._hydration(ids))
        ranked, creators = await self._ranking(queue_owner, kind)
        if not ranked:
            return Page([], False, 0, False, {})
        members = await self.redis.smembers(seen_key)  # type: ignore[misc]
        seen = {m.decode() if isinstance(m, bytes) else m for m in members}
        picked, left = pick_page(ranked, creators, seen, size, per_creator, LEFT_ENOUGH)
        raced = await self._run(
            self._keep_page,
            seen_key,
            memo_key,
            args=[ttl, f"{','.join(picked)}|{left}", page, *picked],
        )
        replayed = raced is not None
        if replayed:
            picked, left = _memo_page(raced)
        return Page(picked, replayed, left, True, await self._hydration(picked))

    async def _ranking(self, owner: str, kind: str) -> tuple[list[str], dict[str, str]]:
        """A queue's ids best first and their creators; the global queue's shared for
        ``RANKING_CACHE_SECONDS`` (every anonymous reader reads it; it changes every 10 s)."""
        cached = self._rankings.get(f"{owner}:{kind}")
        if cached and cached[0] > time.monotonic():
            return cached[1], cached[2]
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(keys.feed_queue(owner, kind), 0, SCAN_LIMIT - 1)
        pipe.hgetall(keys.feed_creators(owner, kind))
        ids, owners = await pipe.execute()
        ranked = [v.decode() for v in ids]
        creators = {k.decode(): v.decode() for k, v in owners.items()}
        if owner == GLOBAL_FEED_USER:
            self._rankings[f"{owner}:{kind}"] = (
                time.monotonic() + RANKING_CACHE_SECONDS,
                ranked,
                creators,
            )
        return ranked, creators

    async def _hydration(self, video_ids: list[str]) -> Hydration:
        """The cards and counter mirrors of a page's videos, in one round trip."""
        if not video_ids:
            return {}
        if self.shared is None:
            return await read_hydration(self.redis, video_ids)
        else:  # the callers of one tick are written together: one write, one read
            calls = []
            for video_id in video_ids:
                calls.append(self.shared.execute("GET", keys.video_card(video_id)))
                calls.append(
                    self.shared.execute("HMGET", keys.video_counts(video_id), *VIDEO_FIELDS)
                )
            replies = await asyncio.gather(*calls)
        return hydration(video_ids, replies[0::2], replies[1::2])

    async def count_anonymous_session(self, now: float) -> tuple[int, int]:
        """Counts a new anonymous session in the current window: (sessions in the window so far
        including this one, seconds until the window ends)."""
        window = int(now // ANONYMOUS_WINDOW_SECONDS)
        n = await self._run(
            self._count, keys.anonymous_feed_sessions(window), args=[ANONYMOUS_WINDOW_SECONDS * 2]
        )
        return int(n), ANONYMOUS_WINDOW_SECONDS - int(now) % ANONYMOUS_WINDOW_SECONDS

    async def _run(
        self, script: AsyncScript, *script_keys: str, args: list[str | int | float]
    ) -> Any:
        """``script`` on the shared connection; loaded first if Redis does not have it (a
        restarted or flushed Redis)."""
        if self.shared is None:
            return await script(keys=list(script_keys), args=args)
        n = len(script_keys)
        try:
            return await self.shared.execute("EVALSHA", script.sha, n, *script_keys, *args)
        except redis.exceptions.ResponseError as e:
            if not str(e).startswith(("NOSCRIPT", "No matching script")):
                raise
            source = cast(str, script.script)  # registered from a str
            return await self.shared.execute("EVAL", source, n, *script_keys, *args)

    async def record_page(
        self, reader: str, session: str, page: int, size: int, candidates: Sequence[str]
    ) -> list[str]:
        """Makes the first ``size`` unseen ``candidates`` page ``page`` of the session (built
        outside the queue, on the cold path); an already recorded page is returned as it was."""
        joined = await self._record_page(
            keys=[keys.feed_seen(reader, session), keys.feed_page(reader, session, page)],
            args=[size, _session_seconds(reader, session), *candidates],
        )
        raw = joined.decode() if isinstance(joined, bytes) else joined
        return [v for v in raw.split(",") if v]


def _session_seconds(reader: str, session: str) -> int:
    """How long a session's state lives: an anonymous session is its own reader."""
    return ANONYMOUS_SESSION_SECONDS if reader == session else SESSION_SECONDS
