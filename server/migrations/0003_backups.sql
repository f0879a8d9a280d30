-- Backups that really run (R4). Portable SQL: runs unchanged on SQLite and PostgreSQL.

-- `scheduled` (the policy's daily window) or `on_demand`.
ALTER TABLE backups ADD COLUMN kind TEXT NOT NULL DEFAULT 'scheduled';
-- The archive's name in the backup store (`<homeserver id>/<backup id>`); ciphertext only.
ALTER TABLE backups ADD COLUMN object_key TEXT;
-- Retention finds expired backups by this.
CREATE INDEX backups_expiry ON backups (status, expires_at);

-- Restores of a backup into its homeserver; their status is what the API shows.
CREATE TABLE restores (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    homeserver_id TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    error TEXT
);
CREATE INDEX restores_homeserver ON restores (homeserver_id, requested_at);
