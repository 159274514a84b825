-- A creator's total plays (User.view_count), added by the counter consumer from the same
-- views.recorded events as the videos' counts: one more column of the row it already updates
-- for follows and videos, per batch.
ALTER TABLE user_counters ADD COLUMN view_count bigint NOT NULL DEFAULT 0;
