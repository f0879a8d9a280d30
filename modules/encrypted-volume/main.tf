# Volume settings for a matrixhost_homeserver: encryption pinned on (R2) and the size checked
# against the chosen plan's storage limit (R5). This module creates nothing; pass its `volume`
# output to the homeserver's `volume` block.
#
# The plans data source has no inputs that depend on resources, so Terraform reads it while
# planning: an unknown plan or a volume larger than the plan allows fails `terraform plan`.

data "matrixhost_plans" "all" {}

locals {
  plans      = { for p in data.matrixhost_plans.all.plans : p.tier => p }
  plan       = lookup(local.plans, var.plan, null)
  storage_gb = try(local.plan.limits.storage_gb, 0)

  volume_error = (
    local.plan == null ? "Unknown plan `${var.plan}`; the catalog offers: ${join(", ", keys(local.plans))}." :
    var.size_gb > local.storage_gb ? "R5: a ${var.size_gb} GB volume exceeds the storage limit of the ${var.plan} plan (${local.storage_gb} GB). Choose a smaller size_gb or a larger plan." :
    ""
  )

  # Plan-time guardrail (Terraform 1.0 has no preconditions): a failed check calls tobool() on
  # its message, so the plan stops with "Invalid function argument" and the message.
  checked = local.volume_error == "" ? true : tobool(local.volume_error)

  volume = {
    size_gb   = local.checked ? var.size_gb : 0
    encrypted = true # R2: pinned
  }
}
