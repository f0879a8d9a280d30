# A matrixhost_backup_policy pinned to what the hosting terms promise (R4): daily, encrypted
# backups in a chosen window, kept for 30 days. Another retention is refused at plan time unless
# allow_nonstandard_retention is set.

locals {
  retention_error = (
    var.retention_days == 30 || var.allow_nonstandard_retention ? "" :
    "R4: backups are kept for 30 days (daily, rolling retention); retention_days = ${var.retention_days} is refused. Keep the default of 30, or set allow_nonstandard_retention = true to override it deliberately."
  )

  # Plan-time guardrail (Terraform 1.0 has no preconditions, and a validation block sees only its
  # own variable): a failed check calls tobool() on its message, so the plan stops with
  # "Invalid function argument" and the message, before anything is created.
  retention_checked = local.retention_error == "" ? true : tobool(local.retention_error)
}

resource "matrixhost_backup_policy" "this" {
  homeserver_id  = var.homeserver_id
  schedule       = "daily" # R4: pinned
  window_start   = var.window_start
  retention_days = local.retention_checked ? var.retention_days : 30
}
