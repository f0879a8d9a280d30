-- Which version of each object the running homeserver has put into effect, so that an API
-- client (Terraform) can wait until a change is in force before it reports success.
ALTER TABLE reserved_users ADD COLUMN applied_version BIGINT;
ALTER TABLE billing_plans ADD COLUMN applied_version BIGINT;
-- What earlier versions of matrixhostd had synced counts as applied.
UPDATE reserved_users SET applied_version = version WHERE localpart IS NULL OR account_synced_version = version;
UPDATE billing_plans SET applied_version = version;
