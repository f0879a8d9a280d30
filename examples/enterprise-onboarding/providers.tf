# Credentials come from the environment, never from HCL or tfvars:
#   export MATRIXHOST_ENDPOINT=https://api.matrixhost.example
#   export MATRIXHOST_TOKEN=...        # from your secret store / CI secret
provider "matrixhost" {}
