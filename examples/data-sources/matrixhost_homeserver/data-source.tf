data "matrixhost_homeserver" "staff" {
  name = "staff"
}

output "staff_client_url" {
  value = data.matrixhost_homeserver.staff.client_url
}
