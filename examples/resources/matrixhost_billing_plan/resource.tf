# A Silver subscription with 10 Additional Users on top of the plan's 50 MAU (R10).
resource "matrixhost_billing_plan" "staff" {
  plan             = "silver"
  billing_period   = "annual"
  additional_users = 10
}
