-- HLS renditions: a video's state, its master playlist once ready, and the durable queue of
-- transcode jobs (one per video). A job is leased, not locked: the worker that holds it renews
-- the lease while ffmpeg runs, and a job whose lease ran out (its worker died) is taken again.

ALTER TABLE videos
    ADD COLUMN state text NOT NULL DEFAULT 'processing'
        CHECK (state IN ('processing', 'ready', 'failed')),
    ADD COLUMN hls_key text;  -- the master playlist's object key, set when ready

CREATE TABLE transcode_jobs (
    video_id     uuid        PRIMARY KEY REFERENCES videos,
    attempts     integer     NOT NULL DEFAULT 0,  -- claims so far, the current one included
    run_after    timestamptz NOT NULL DEFAULT now(),  -- backoff after a failed attempt
    leased_by    text,                            -- worker name (host:port), stable per instance
    leased_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- the workers' scan: due jobs, oldest first
CREATE INDEX transcode_jobs_due ON transcode_jobs (run_after);

-- videos published before renditions existed get theirs too
INSERT INTO transcode_jobs (video_id) SELECT video_id FROM videos WHERE deleted_at IS NULL;
UPDATE videos SET state = 'failed' WHERE deleted_at IS NOT NULL;

-- uploads whose upload URL may still have been used after they were published or rejected:
-- the sweeper deletes what was PUT again once the URL has expired
ALTER TABLE uploads ADD COLUMN swept_at timestamptz;
CREATE INDEX uploads_to_sweep ON uploads (created_at)
    WHERE state IN ('published', 'rejected') AND swept_at IS NULL;
