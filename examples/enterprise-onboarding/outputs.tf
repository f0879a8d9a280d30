output "staff" {
  description = "The staff homeserver: client URL, server name, privacy notice, reserved user ids and backup policy."
  value = {
    client_url         = module.staff.client_url
    server_name        = module.staff.server_name
    privacy_notice_url = module.staff.privacy_notice_url
    reserved_user_ids  = module.staff.reserved_user_ids
    backup_policy      = module.staff.backup_policy
  }
}

output "partners" {
  description = "The partners homeserver: client URL, server name, privacy notice, reserved user ids and backup policy."
  value = {
    client_url         = module.partners.client_url
    server_name        = module.partners.server_name
    privacy_notice_url = module.partners.privacy_notice_url
    reserved_user_ids  = module.partners.reserved_user_ids
    backup_policy      = module.partners.backup_policy
  }
}
