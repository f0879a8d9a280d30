-- Customer accounts and the console (R14-R18, R20, R21). One account owns one organization.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL UNIQUE REFERENCES organizations(id),
    email TEXT NOT NULL UNIQUE,
    full_name TEXT NOT NULL,
    -- R14: an argon2id PHC string (its salt inside). The pepper is a key file in STATE/api.
    password_hash TEXT NOT NULL,
    email_verified_at TEXT,
    -- R21: the sign-up's attestation that the customer is at least 16.
    age_confirmed_at TEXT NOT NULL,
    -- R20: the customer-terms version accepted at sign-up, and when.
    terms_version TEXT NOT NULL,
    terms_accepted_at TEXT NOT NULL,
    -- R18: an erasure the customer asked for; it runs at deletion_due_at unless cancelled.
    deletion_requested_at TEXT,
    deletion_due_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- R15, R16: one-time links (verify an email, reset a password, change an email). Only the
-- SHA-256 of the token is kept; a used or expired row never matches again.
CREATE TABLE account_links (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    purpose TEXT NOT NULL,
    new_email TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX account_links_by_account ON account_links (account_id, purpose);

-- R16: the keys that sign session cookies. Each is sealed with the control plane's secrets
-- key; the newest signs, older ones verify until they retire.
CREATE TABLE session_keys (
    id TEXT PRIMARY KEY,
    key_sealed TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retires_at TEXT NOT NULL
);

-- R16: console sessions. The cookie holds the secret; the row holds its hash.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    user_agent TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX sessions_by_account ON sessions (account_id);

-- Mail waits here until the relay takes it. The body (which may hold a one-time link) is
-- sealed, and dropped once sent.
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    account_id TEXT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body_sealed TEXT,
    created_at TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    sent_at TEXT,
    last_error TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (sent_at, next_attempt_at);

-- R17: the platform's log of customer requests, with the caller's IP address; rows older
-- than 30 days are deleted.
CREATE TABLE access_log (
    id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    ip TEXT NOT NULL,
    org_id TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status BIGINT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX access_log_at ON access_log (at);
CREATE INDEX access_log_org ON access_log (org_id, at);

-- Console-made tokens can expire.
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;
