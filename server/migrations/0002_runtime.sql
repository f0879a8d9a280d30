-- The runtime's record of each homeserver it hosts. Secrets are sealed with the master key.
CREATE TABLE homeserver_runtime (
    homeserver_id TEXT PRIMARY KEY,
    port BIGINT NOT NULL UNIQUE,
    volume_key_sealed TEXT NOT NULL,
    secrets_sealed TEXT NOT NULL,
    admin_token_sealed TEXT,
    volume_size_gb BIGINT NOT NULL,
    applied_config_hash TEXT,
    notice_version TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL
);

-- R12: an operator block, besides a failed payment.
ALTER TABLE homeservers ADD COLUMN blocked_reason TEXT;

-- Which reserved-user version the Matrix account reflects, and why syncing it failed.
ALTER TABLE reserved_users ADD COLUMN account_synced_version BIGINT;
ALTER TABLE reserved_users ADD COLUMN account_error TEXT;

-- R19: every acceptance of a privacy-notice version, since Synapse keeps only the last.
CREATE TABLE consent_acceptances (
    homeserver_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    notice_version TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    PRIMARY KEY (homeserver_id, user_id, notice_version)
);
