-- Sessions: one per sign-in (or sign-up), the unit that refresh tokens rotate within and that
-- sign-out and reuse detection revoke. expires_at slides forward with every refresh.
CREATE TABLE sessions (
    session_id   uuid        PRIMARY KEY DEFAULT uuidv7(),
    user_id      uuid        NOT NULL REFERENCES users,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    revoked_why  text        CHECK (revoked_why IN ('signed_out', 'reused'))
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token a session has issued, by the SHA-256 of the token (the token is 256 random
-- bits, so a fast hash is enough; the token itself is never stored). A spent token is kept while
-- its session lives: presenting it again is how a stolen copy is detected.
CREATE TABLE refresh_tokens (
    token_hash bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id uuid        NOT NULL REFERENCES sessions ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    spent_at   timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
