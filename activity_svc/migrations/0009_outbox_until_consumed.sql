-- Outbox rows are kept until every consumer group of the events stream has acknowledged them
-- (mesh/outbox.py): the stream position each was relayed to, NULL until relayed and again
-- when Redis lost the entry, which the relay then sends again.
ALTER TABLE outbox ADD COLUMN stream_ms bigint, ADD COLUMN stream_seq bigint;
CREATE INDEX outbox_unrelayed ON outbox (id) WHERE stream_ms IS NULL;
CREATE INDEX outbox_relayed ON outbox (stream_ms, stream_seq) WHERE stream_ms IS NOT NULL;
