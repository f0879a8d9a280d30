# A billing plan is imported by its id.
terraform import matrixhost_billing_plan.staff bp_0123456789abcdefghij
