# A homeserver is imported by its id...
terraform import matrixhost_homeserver.staff hs_0123456789abcdefghij
# ...or by its name.
terraform import matrixhost_homeserver.staff staff
