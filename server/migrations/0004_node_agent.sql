-- The node agent holds the volume keys now: the control plane keeps none, sealed or not.
ALTER TABLE homeserver_runtime DROP COLUMN volume_key_sealed;
ALTER TABLE homeserver_runtime DROP COLUMN notice_version;
-- The tenant's uid (the ingress accepts only a socket it listens on), the limits last applied,
-- OOM kills already recorded, and whether the homeserver is blocked for storage (R12).
ALTER TABLE homeserver_runtime ADD COLUMN tenant_uid BIGINT;
ALTER TABLE homeserver_runtime ADD COLUMN applied_limits TEXT;
ALTER TABLE homeserver_runtime ADD COLUMN oom_kills_seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE homeserver_runtime ADD COLUMN storage_blocked BIGINT NOT NULL DEFAULT 0;

-- R12, R24: what happened to a homeserver, in the platform's own words. Ids sort by time.
CREATE TABLE homeserver_events (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    homeserver_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    reference TEXT,
    occurred_at TEXT NOT NULL
);
CREATE INDEX homeserver_events_by_homeserver ON homeserver_events (homeserver_id, id);
