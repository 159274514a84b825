-- Plays (POST /v1/views), folded into video_counters by the counter consumer like the other
-- counts: one UPDATE per video per batch of events, so a million plays of one video are a few
-- thousand row updates, not a million. watch_ms and completion_count feed the for-you ranking.
ALTER TABLE video_counters
    ADD COLUMN view_count       bigint NOT NULL DEFAULT 0,
    ADD COLUMN watch_ms         bigint NOT NULL DEFAULT 0,
    ADD COLUMN completion_count bigint NOT NULL DEFAULT 0;
