data "matrixhost_homeserver" "staff" {
  name = "staff"
}

# R8: Alice holds a slot inside the MAU cap and can always log in.
resource "matrixhost_reserved_user" "alice" {
  homeserver_id    = data.matrixhost_homeserver.staff.id
  email            = "alice@example.com"
  localpart        = "alice"
  display_name     = "Alice Example"
  admin            = true
  initial_password = var.alice_initial_password
}

variable "alice_initial_password" {
  type      = string
  sensitive = true
}
