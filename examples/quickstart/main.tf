# The smallest working homeserver: a Nickel subscription (10 monthly active users), a homeserver
# in us-east-1 on a 1 GB encrypted volume, and one reserved admin account to log in with.

# Paid in advance each month (R11), from the card on file or the one named here.
resource "matrixhost_billing_plan" "this" {
  plan              = "nickel"
  payment_method_id = var.payment_method_id
}

resource "matrixhost_homeserver" "this" {
  name            = var.name
  region          = "us-east-1" # R1: US regions only
  billing_plan_id = matrixhost_billing_plan.this.id

  volume {
    size_gb = 1 # encrypted at rest, always (R2)
  }

  data_controller {
    entity_name = var.organization
    admin_email = var.admin_email
  }
}

# R8: the admin holds a slot inside the MAU cap and can always log in. The admin is invited by
# email to choose a password, so no password passes through Terraform or its state.
resource "matrixhost_reserved_user" "admin" {
  homeserver_id = matrixhost_homeserver.this.id
  email         = var.admin_email
  localpart     = "admin"
  admin         = true
}
