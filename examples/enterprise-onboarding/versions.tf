terraform {
  required_version = ">= 1.0"

  required_providers {
    matrixhost = {
      # Installed from your organization's provider mirror (see docs/guides/getting-started.md).
      source  = "terraform.local/matrixhost/matrixhost"
      version = ">= 0.1.0"
    }
  }

  # Keep the state in your team's remote backend, e.g.:
  # backend "s3" {
  #   bucket = "acme-terraform-state"
  #   key    = "matrixhost/enterprise-onboarding.tfstate"
  #   region = "us-east-1"
  # }
}
