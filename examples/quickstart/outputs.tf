output "client_url" {
  description = "The homeserver URL to enter in a Matrix client."
  value       = matrixhost_homeserver.this.client_url
}

output "server_name" {
  description = "The Matrix server name (the part after `:` in user ids)."
  value       = matrixhost_homeserver.this.server_name
}

output "admin_user_id" {
  description = "The admin account to log in with."
  value       = matrixhost_reserved_user.admin.user_id
}

output "privacy_notice_url" {
  description = "The homeserver's privacy notice (R19)."
  value       = matrixhost_homeserver.this.privacy_notice_url
}
