-- Videos a signed-in viewer played to the end, written by the counter consumer from
-- views.recorded events (in the transaction that counts them), read by the builder on the
-- replica: a personal for-you queue leaves them out. One row per pair, the latest completion.
CREATE TABLE completions (
    user_id      uuid        NOT NULL,
    video_id     uuid        NOT NULL,
    completed_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX completions_by_user ON completions (user_id, completed_at DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tiktok_reader') THEN
        GRANT SELECT ON completions TO tiktok_reader;
    END IF;
END $$;
