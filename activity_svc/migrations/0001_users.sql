-- Users and their credentials. user_id is a UUIDv7 (time-ordered: index locality, and newest-first
-- lists can page by id). handle is unique as typed; the service only accepts [a-z0-9_.]{3,30}.
CREATE TABLE users (
    user_id       uuid        PRIMARY KEY DEFAULT uuidv7(),
    handle        text        NOT NULL UNIQUE CHECK (handle ~ '^[a-z0-9_.]{3,30}$'),
    display_name  text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 50),
    password_hash text        NOT NULL,  -- Argon2id, PHC string format
    created_at    timestamptz NOT NULL DEFAULT now()
);
