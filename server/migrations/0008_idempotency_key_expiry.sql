-- Expired idempotency keys are deleted by housekeeping through this index, not by a scan of
-- the whole table inside every create.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
