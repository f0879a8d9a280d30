data "matrixhost_homeserver" "staff" {
  name = "staff"
}

# R8: Alice holds a slot inside the MAU cap and can always log in. She is invited by email and
# chooses her own password, so no password is in the Terraform state.
resource "matrixhost_reserved_user" "alice" {
  homeserver_id = data.matrixhost_homeserver.staff.id
  email         = "alice@example.com"
  localpart     = "alice"
  display_name  = "Alice Example"
  admin         = true
}
