-- A reserved user without an initial password is invited by email to choose their own, so no
-- password passes through Terraform or its state. Only the SHA-256 of the link's token is kept.
ALTER TABLE reserved_users ADD COLUMN invite_token_hash TEXT;
ALTER TABLE reserved_users ADD COLUMN invite_expires_at TEXT;
ALTER TABLE reserved_users ADD COLUMN invite_accepted_at TEXT;
CREATE INDEX reserved_users_invite ON reserved_users (invite_token_hash);
