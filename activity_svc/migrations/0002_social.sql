-- The social graph and engagement: follows, likes, favorites, comments; the counters applied
-- from their events; and the outbox those events leave through.
--
-- Pairs are keyed by the pair, so a repeated write is a no-op decided by the constraint. `seq`
-- orders each list newest first with a one-column keyset (a re-follow after an unfollow is a new
-- row with a new seq, so it moves to the top, as a client expects).

CREATE TABLE follows (
    follower_id uuid        NOT NULL,  -- the caller; the token proved the user exists
    followee_id uuid        NOT NULL REFERENCES users,  -- the FK turns an unknown id into 404
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id)
);
-- followers of a user / users a user follows, newest first; INCLUDE makes the id lists the
-- builder pages through (ListFollowerIds, ListFolloweeIds) index-only scans
CREATE INDEX follows_by_followee ON follows (followee_id, seq DESC) INCLUDE (follower_id);
CREATE INDEX follows_by_follower ON follows (follower_id, seq DESC) INCLUDE (followee_id);

-- No foreign key to videos: they live in upload_svc's database; existence is asked of it.
CREATE TABLE likes (
    user_id    uuid        NOT NULL,
    video_id   uuid        NOT NULL,
    seq        bigint      GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX likes_by_user ON likes (user_id, seq DESC) INCLUDE (video_id);

CREATE TABLE favorites (
    user_id    uuid        NOT NULL,
    video_id   uuid        NOT NULL,
    seq        bigint      GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX favorites_by_user ON favorites (user_id, seq DESC) INCLUDE (video_id);

-- comment_id is a UUIDv7, so ordering by it is newest first. Deleting removes the row.
CREATE TABLE comments (
    comment_id uuid        PRIMARY KEY DEFAULT uuidv7(),
    video_id   uuid        NOT NULL,
    author_id  uuid        NOT NULL,
    text       text        NOT NULL CHECK (char_length(text) BETWEEN 1 AND 500),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_by_video ON comments (video_id, comment_id DESC);

-- Counters, written only by the counter consumer from events, never by a request: a like is an
-- INSERT of its own row, and the consumer folds a batch of events into one UPDATE per counted
-- row, so a hot video is one row update per batch, not one per click. `version` grows with
-- every update and guards the Redis mirror against an older value overwriting a newer one.
CREATE TABLE user_counters (
    user_id         uuid   PRIMARY KEY,
    follower_count  bigint NOT NULL DEFAULT 0,
    following_count bigint NOT NULL DEFAULT 0,
    video_count     bigint NOT NULL DEFAULT 0,
    version         bigint NOT NULL DEFAULT 0
);
CREATE TABLE video_counters (
    video_id       uuid   PRIMARY KEY,
    like_count     bigint NOT NULL DEFAULT 0,
    comment_count  bigint NOT NULL DEFAULT 0,
    favorite_count bigint NOT NULL DEFAULT 0,
    version        bigint NOT NULL DEFAULT 0
);

-- Events already folded into the counters, recorded in the same transaction as the counts, so
-- a redelivered event (a consumer died before XACK) changes nothing. Pruned once no pending
-- stream entry can bring an id back.
CREATE TABLE applied_events (
    event_id   uuid        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX applied_events_by_time ON applied_events (applied_at);

CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    event_type   text        NOT NULL,
    aggregate_id uuid        NOT NULL,
    payload      bytea       NOT NULL,  -- a serialized tiktok.v1.Event
    created_at   timestamptz NOT NULL DEFAULT now()
);
