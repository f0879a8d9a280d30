# The US regions of the matrixhost catalog, and one validated choice among them (R1).
#
# The data source has no inputs that depend on resources, so Terraform reads it while planning:
# a region that is not an available US region fails `terraform plan`, before anything is created.

data "matrixhost_regions" "all" {}

locals {
  requested = var.region != null ? var.region : var.default_region

  us_regions = [for r in data.matrixhost_regions.all.regions : r if r.country == "US"]
  available  = [for r in local.us_regions : r.code if r.available]
  catalog    = { for r in data.matrixhost_regions.all.regions : r.code => r }

  # Why the requested region is refused, or "" when it is fine.
  requested_entry = lookup(local.catalog, local.requested, null)
  region_error = (
    contains(local.available, local.requested) ? "" :
    local.requested_entry == null ? "R1: region `${local.requested}` is not in the matrixhost catalog. Available US regions: ${join(", ", local.available)}." :
    try(local.requested_entry.country, "") != "US" ? "R1: region `${local.requested}` is outside the US; homeservers are hosted only in US regions. Available: ${join(", ", local.available)}." :
    "R1: region `${local.requested}` (${try(local.requested_entry.name, "")}) is not available yet. Available US regions: ${join(", ", local.available)}."
  )

  # Plan-time guardrail. Terraform 1.0 has no preconditions, and a variable's validation block
  # cannot see the catalog, so a failed check calls tobool() on its message: the plan stops with
  # "Invalid function argument" and the message, before anything is created.
  region = local.region_error == "" ? local.requested : tobool(local.region_error)
}
