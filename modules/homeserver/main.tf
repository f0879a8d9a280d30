# A company's homeserver with the hosting terms' guardrails built in:
#
#   billing plan ─▶ homeserver in an available US region (R1, module us-regions)
#                   on an encrypted volume within the plan's limit (R2, R5, module encrypted-volume)
#                   registration limited to the company's email domains (R9)
#                   deletion protection on, the company named as data controller (R19)
#               ├─▶ reserved users from a map, within the MAU cap (R8)
#               └─▶ daily encrypted backups kept 30 days (R4, module daily-backups)
#
# Every check that needs the catalog reads a data source without resource inputs, so it runs
# during `terraform plan`, before anything is created.

module "region" {
  source = "../us-regions"

  region = var.region
}

module "volume" {
  source = "../encrypted-volume"

  plan      = var.plan
  size_gb   = var.volume_size_gb
  encrypted = var.volume_encrypted
}

data "matrixhost_plans" "all" {}

locals {
  plans = { for p in data.matrixhost_plans.all.plans : p.tier => p }
  # null for an unknown tier: module.volume reports that one.
  plan    = lookup(local.plans, var.plan, null)
  mau_cap = try(local.plan.mau, 0) + var.additional_users

  errors = compact([
    local.plan != null && length(var.reserved_users) > local.mau_cap ? "R8: ${length(var.reserved_users)} reserved users exceed the MAU cap of ${local.mau_cap} (${var.plan} plan: ${try(local.plan.mau, 0)} MAU + ${var.additional_users} additional users). Reserved users hold slots inside the cap: remove some, raise additional_users, or choose a larger plan." : "",
    local.plan != null && !var.encryption_by_default && !try(local.plan.e2ee_can_be_disabled, false) ? "R22: the ${var.plan} plan keeps end-to-end encryption on by default; encryption_by_default = false needs a plan that allows it (${join(", ", [for p in data.matrixhost_plans.all.plans : p.tier if p.e2ee_can_be_disabled])})." : "",
  ])

  # Plan-time guardrail (Terraform 1.0 has no preconditions, and a validation block sees only its
  # own variable): a failed check calls tobool() on its message, so the plan stops with
  # "Invalid function argument" and the message, before anything is created.
  checked = length(local.errors) == 0 ? true : tobool(join(" ", local.errors))

  reserved_users = local.checked ? var.reserved_users : {}
}

resource "matrixhost_billing_plan" "this" {
  plan              = var.plan
  billing_period    = var.billing_period
  additional_users  = var.additional_users
  payment_method_id = var.payment_method_id
}

resource "matrixhost_homeserver" "this" {
  name            = var.name
  region          = module.region.region # R1: checked against the catalog
  billing_plan_id = matrixhost_billing_plan.this.id
  server_name     = var.server_name

  # R9: only addresses at the company's domains may register.
  registration          = "email_domains"
  allowed_email_domains = var.email_domains
  guest_access          = var.guest_access
  federation_enabled    = var.federation_enabled
  encryption_by_default = local.checked ? var.encryption_by_default : true

  deletion_protection = var.deletion_protection

  # R2: encrypted, within the plan's storage limit.
  volume {
    size_gb   = module.volume.volume.size_gb
    encrypted = module.volume.volume.encrypted
  }

  # R19: named in the homeserver's privacy notice.
  data_controller {
    entity_name = var.data_controller.entity_name
    admin_email = var.data_controller.admin_email
  }

  # A static block (null keeps the provider's default for that operation).
  timeouts {
    create = lookup(var.timeouts, "create", null)
    update = lookup(var.timeouts, "update", null)
    delete = lookup(var.timeouts, "delete", null)
  }
}

# R8: each holds a slot inside the MAU cap and can always log in. Each person is invited by
# email to choose their own password, so no password passes through Terraform or its state.
resource "matrixhost_reserved_user" "this" {
  for_each = local.reserved_users

  homeserver_id = matrixhost_homeserver.this.id
  email         = each.value.email
  localpart     = each.key
  display_name  = each.value.display_name
  admin         = each.value.admin
}

# R4: daily encrypted backups, kept 30 days.
module "backups" {
  source = "../daily-backups"

  homeserver_id               = matrixhost_homeserver.this.id
  window_start                = var.backup_window_start
  retention_days              = var.backup_retention_days
  allow_nonstandard_retention = var.allow_nonstandard_backup_retention
}
