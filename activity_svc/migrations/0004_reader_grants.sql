-- The feed's replica reads (readmodels/replica.py) run as members of tiktok_reader: SELECT on
-- exactly the tables they join, never users, sessions or credentials. The role is made by the
-- stack (stack/pgroles.py) or, in production, by whoever makes the service roles; a table the
-- replica reads later needs its grant in the migration that makes it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tiktok_reader') THEN
        GRANT SELECT ON follows, likes, user_counters, video_counters TO tiktok_reader;
    END IF;
END $$;
