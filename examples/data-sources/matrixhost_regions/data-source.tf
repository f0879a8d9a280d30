data "matrixhost_regions" "available" {
  available_only = true
}

output "region_codes" {
  value = data.matrixhost_regions.available.regions[*].code
}
