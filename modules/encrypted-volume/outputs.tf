output "volume" {
  description = "The volume settings, `{ size_gb, encrypted = true }`, for a `matrixhost_homeserver`'s `volume` block."
  value       = local.volume
}

output "size_gb" {
  description = "The checked volume size in GB."
  value       = local.volume.size_gb
}

output "encrypted" {
  description = "Always `true` (R2)."
  value       = local.volume.encrypted
}

output "storage_limit_gb" {
  description = "The plan's storage limit in GB: the largest volume it allows."
  value       = local.storage_gb
}
