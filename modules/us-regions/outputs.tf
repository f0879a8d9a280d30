output "region" {
  description = "The chosen region: `region`, or `default_region` when `region` is null. Always an available US region (R1)."
  value       = local.region
}

output "available_regions" {
  description = "Codes of the US regions where a homeserver can be created now, sorted."
  value       = sort(local.available)
}

output "us_regions" {
  description = "Every US region of the catalog (available or not yet), as objects with `code`, `name`, `country` and `available`."
  value       = local.us_regions
}
