# A reserved user is imported as <homeserver_id>/<email>.
terraform import matrixhost_reserved_user.alice hs_0123456789abcdefghij/alice@example.com
