output "id" {
  description = "The backup policy's id (`bkp_...`)."
  value       = matrixhost_backup_policy.this.id
}

output "policy" {
  description = "The backup policy: `id`, `homeserver_id`, `schedule` (`daily`), `window_start`, `retention_days` and `encrypted` (always `true`). Live backup times are in the `matrixhost_backups` data source."
  value = {
    id             = matrixhost_backup_policy.this.id
    homeserver_id  = matrixhost_backup_policy.this.homeserver_id
    schedule       = matrixhost_backup_policy.this.schedule
    window_start   = matrixhost_backup_policy.this.window_start
    retention_days = matrixhost_backup_policy.this.retention_days
    encrypted      = matrixhost_backup_policy.this.encrypted
  }
}

output "schedule" {
  description = "Always `daily` (R4)."
  value       = matrixhost_backup_policy.this.schedule
}

output "window_start" {
  description = "Start of the daily backup window (UTC `HH:MM`)."
  value       = matrixhost_backup_policy.this.window_start
}

output "retention_days" {
  description = "Days each backup is kept: 30 unless overridden."
  value       = matrixhost_backup_policy.this.retention_days
}
