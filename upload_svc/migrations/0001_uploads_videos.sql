-- Upload tickets and published videos. The bytes live in object storage; rows hold metadata and
-- object keys only. Keys are immutable and never reused (they embed the upload_id).

CREATE TABLE uploads (
    upload_id       uuid        PRIMARY KEY DEFAULT uuidv7(),
    owner_id        uuid        NOT NULL,
    object_key      text        NOT NULL UNIQUE,
    content_type    text        NOT NULL,
    size_bytes      bigint      NOT NULL CHECK (size_bytes > 0),
    -- after this the ticket is void; the sweeper removes it and its object
    expires_at      timestamptz NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'published', 'rejected')),
    rejected_reason text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- the sweeper's scan: pending tickets past their expiry
CREATE INDEX uploads_pending_by_expiry ON uploads (expires_at) WHERE state = 'pending';

CREATE TABLE videos (
    video_id         uuid        PRIMARY KEY DEFAULT uuidv7(),
    upload_id        uuid        NOT NULL UNIQUE REFERENCES uploads,  -- completing twice = same video
    creator_id       uuid        NOT NULL,
    caption          text        NOT NULL CHECK (char_length(caption) <= 2200),
    object_key       text        NOT NULL,
    thumbnail_key    text        NOT NULL,
    content_type     text        NOT NULL,
    size_bytes       bigint      NOT NULL,
    duration_ms      bigint      NOT NULL,
    width            integer     NOT NULL,
    height           integer     NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,             -- soft delete; the row stays for idempotency
    blobs_removed_at timestamptz              -- set once the janitor removed the objects
);
-- a creator's videos, newest first (video_id is a UUIDv7: time-ordered), keyset-paged
CREATE INDEX videos_by_creator ON videos (creator_id, video_id DESC) WHERE deleted_at IS NULL;
-- the blob janitor's scan
CREATE INDEX videos_blobs_to_remove ON videos (deleted_at)
    WHERE deleted_at IS NOT NULL AND blobs_removed_at IS NULL;

CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    event_type   text        NOT NULL,
    aggregate_id uuid        NOT NULL,
    payload      bytea       NOT NULL,  -- a serialized tiktok.v1.Event
    created_at   timestamptz NOT NULL DEFAULT now()
);
