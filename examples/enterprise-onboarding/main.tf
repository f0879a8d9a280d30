# Acme's Matrix onboarding: one homeserver for staff, one for partners, both with the hosting
# terms' guardrails (US region, encrypted volume, daily 30-day backups, deletion protection,
# registration limited to whitelisted email domains, the company as data controller).
#
# In your own repository, pin the modules to a release instead of a relative path, e.g.
#   source = "git::https://git.example.com/platform/matrixhost.git//modules/homeserver?ref=v0.1.0"

locals {
  data_controller = {
    entity_name = var.company_name
    admin_email = var.privacy_contact_email
  }

  executives = { for localpart, u in var.executives : localpart => merge(u, { admin = false }) }
  it_admins  = { for localpart, u in var.it_admins : localpart => merge(u, { admin = true }) }
}

module "staff" {
  source = "../../modules/homeserver"

  name        = "${var.name_prefix}-staff"
  region      = var.region
  server_name = var.staff_server_name

  plan             = var.staff_plan
  additional_users = var.staff_additional_users
  volume_size_gb   = var.staff_volume_size_gb

  email_domains   = var.staff_email_domains
  data_controller = local.data_controller

  # Executives and IT always get in, even after a month away (R8).
  # Each is invited by email to choose their own password.
  reserved_users = merge(local.executives, local.it_admins)

  deletion_protection = var.deletion_protection
  backup_window_start = var.backup_window_start
}

module "partners" {
  source = "../../modules/homeserver"

  name        = "${var.name_prefix}-partners"
  region      = var.region
  server_name = var.partners_server_name

  plan           = var.partners_plan
  volume_size_gb = var.partners_volume_size_gb

  # Partners register with their own company addresses; no guests, no federation.
  email_domains      = var.partner_email_domains
  federation_enabled = false
  data_controller    = local.data_controller

  # IT administers this homeserver too.
  reserved_users = local.it_admins

  deletion_protection = var.deletion_protection
  backup_window_start = var.backup_window_start
}
