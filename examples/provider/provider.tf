terraform {
  required_providers {
    matrixhost = {
      # Installed from a filesystem mirror; see "Installing the provider".
      source = "terraform.local/matrixhost/matrixhost"
    }
  }
}

# Credentials usually come from the environment:
#   export MATRIXHOST_ENDPOINT=https://api.matrixhost.example
#   export MATRIXHOST_TOKEN=mh_...
provider "matrixhost" {
  endpoint = var.matrixhost_endpoint
  token    = var.matrixhost_token
}

variable "matrixhost_endpoint" {
  type    = string
  default = null
}

variable "matrixhost_token" {
  type      = string
  sensitive = true
  default   = null
}
