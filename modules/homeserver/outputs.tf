output "homeserver_id" {
  description = "The homeserver's id (`hs_...`)."
  value       = matrixhost_homeserver.this.id
}

output "client_url" {
  description = "Matrix client API base URL: what users enter as their homeserver in a Matrix client."
  value       = matrixhost_homeserver.this.client_url
}

output "server_name" {
  description = "The Matrix server name (the part after `:` in user ids)."
  value       = matrixhost_homeserver.this.server_name
}

output "privacy_notice_url" {
  description = "Where the homeserver's privacy notice, naming the company as data controller, is published (R19)."
  value       = matrixhost_homeserver.this.privacy_notice_url
}

output "region" {
  description = "The homeserver's region (an available US region, R1)."
  value       = matrixhost_homeserver.this.region
}

output "reserved_user_ids" {
  description = "Matrix user ids of the reserved users, keyed like `reserved_users`, e.g. `{ alice = \"@alice:chat.acme.example\" }` (R8)."
  value       = { for k, u in matrixhost_reserved_user.this : k => u.user_id }
}

output "backup_policy" {
  description = "The backup policy: `id`, `homeserver_id`, `schedule` (`daily`), `window_start`, `retention_days` (30) and `encrypted` (`true`) (R4)."
  value       = module.backups.policy
}

output "billing_plan_id" {
  description = "The billing plan's id (`bp_...`)."
  value       = matrixhost_billing_plan.this.id
}

output "mau_cap" {
  description = "The MAU cap in force: the active plan's MAU plus `additional_users` (R5, R10). Reserved users hold slots inside it (R8)."
  value       = matrixhost_billing_plan.this.mau_cap
}

output "terms_version" {
  description = "Version of the customer terms accepted when the homeserver was created (R20)."
  value       = matrixhost_homeserver.this.terms_version
}
