-- The feed's replica reads (readmodels/replica.py) run as members of tiktok_reader: SELECT on
-- the videos they rank, nothing else of this schema (see activity's 0004_reader_grants.sql).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tiktok_reader') THEN
        GRANT SELECT ON videos TO tiktok_reader;
    END IF;
END $$;
