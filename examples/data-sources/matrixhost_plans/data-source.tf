data "matrixhost_plans" "all" {}

# The smallest tier that fits 40 monthly active users.
locals {
  fitting = [for p in data.matrixhost_plans.all.plans : p if p.mau >= 40]
  tier    = local.fitting[index(local.fitting[*].mau, min(local.fitting[*].mau...))].tier
}

output "tier_for_40_users" {
  value = local.tier
}
