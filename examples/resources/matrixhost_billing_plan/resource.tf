# A Silver subscription with 10 Additional Users on top of the plan's 50 MAU (R10), paid a year
# in advance from the organization's card on file (the console's billing page, R11).
resource "matrixhost_billing_plan" "staff" {
  plan             = "silver"
  billing_period   = "annual"
  additional_users = 10
}
