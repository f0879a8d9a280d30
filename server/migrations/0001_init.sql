-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Booleans are BIGINT 0/1 and times are
-- RFC 3339 UTC text (`YYYY-MM-DDTHH:MM:SSZ`), which sorts correctly as text on both.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_verified BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

-- Tokens are stored only as SHA-256 hashes of 256-bit random secrets.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    token_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);

CREATE TABLE billing_plans (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    plan TEXT NOT NULL,
    active_plan TEXT NOT NULL,
    pending_plan TEXT,
    billing_period TEXT NOT NULL,
    additional_users BIGINT NOT NULL,
    payment_method_id TEXT,
    status TEXT NOT NULL,
    anniversary_anchor TEXT NOT NULL,
    current_period_start TEXT NOT NULL,
    current_period_end TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX billing_plans_org ON billing_plans (org_id, id);

CREATE TABLE homeservers (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    server_name TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    billing_plan_id TEXT NOT NULL UNIQUE REFERENCES billing_plans(id),
    federation_enabled BIGINT NOT NULL,
    registration TEXT NOT NULL,
    allowed_email_domains TEXT NOT NULL,
    guest_access BIGINT NOT NULL,
    encryption_by_default BIGINT NOT NULL,
    deletion_protection BIGINT NOT NULL,
    volume_size_gb BIGINT NOT NULL,
    dc_entity_name TEXT NOT NULL,
    dc_admin_email TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    client_url TEXT,
    privacy_notice_url TEXT,
    terms_version TEXT NOT NULL,
    terms_accepted_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE reserved_users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    homeserver_id TEXT NOT NULL REFERENCES homeservers(id),
    email TEXT NOT NULL,
    localpart TEXT,
    display_name TEXT,
    admin BIGINT NOT NULL,
    -- Sealed with the master key until the runtime has created the account; never plaintext.
    initial_password_sealed TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL,
    UNIQUE (homeserver_id, email),
    UNIQUE (homeserver_id, localpart)
);

CREATE TABLE backup_policies (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    homeserver_id TEXT NOT NULL UNIQUE REFERENCES homeservers(id),
    schedule TEXT NOT NULL,
    window_start TEXT NOT NULL,
    retention_days BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL
);

-- Backups outlive their homeserver until they expire (R4), so no foreign key to it.
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    homeserver_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    size_bytes BIGINT,
    expires_at TEXT NOT NULL,
    error TEXT
);
CREATE INDEX backups_homeserver ON backups (homeserver_id, started_at);

-- A retried create with the same key returns the stored response.
CREATE TABLE idempotency_keys (
    org_id TEXT NOT NULL REFERENCES organizations(id),
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status_code BIGINT,
    response_body TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, idem_key)
);
