terraform {
  required_version = ">= 1.0"

  required_providers {
    matrixhost = {
      # Installed from a filesystem mirror: see docs/guides/getting-started.md.
      source  = "terraform.local/matrixhost/matrixhost"
      version = ">= 0.1.0"
    }
  }
}

# The endpoint and token come from MATRIXHOST_ENDPOINT and MATRIXHOST_TOKEN: no secrets in HCL.
provider "matrixhost" {}
