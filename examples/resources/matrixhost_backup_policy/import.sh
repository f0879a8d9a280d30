# A backup policy is imported by its homeserver's id.
terraform import matrixhost_backup_policy.staff hs_0123456789abcdefghij
