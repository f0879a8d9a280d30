resource "matrixhost_billing_plan" "staff" {
  plan = "silver"
}

resource "matrixhost_homeserver" "staff" {
  name            = "staff"
  region          = "us-east-1" # R1: US regions only
  billing_plan_id = matrixhost_billing_plan.staff.id
  server_name     = "chat.example.com"

  # R9: only addresses at these domains may register; no guests; federation on.
  registration          = "email_domains"
  allowed_email_domains = ["example.com"]
  guest_access          = false
  federation_enabled    = true

  deletion_protection = true

  volume {
    size_gb   = 20
    encrypted = true # R2: always; false is refused at plan time
  }

  # R19: named in the homeserver's privacy notice.
  data_controller {
    entity_name = "Example Corp"
    admin_email = "it@example.com"
  }

  timeouts {
    create = "30m"
    update = "30m"
    delete = "15m"
  }
}
