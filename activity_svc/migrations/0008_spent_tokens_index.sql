-- Spent refresh tokens are pruned after a week (activity_svc/sessions.py): found by this index.
CREATE INDEX refresh_tokens_spent ON refresh_tokens (spent_at) WHERE spent_at IS NOT NULL;
