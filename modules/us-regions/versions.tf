terraform {
  required_version = ">= 1.0"

  required_providers {
    matrixhost = {
      source  = "terraform.local/matrixhost/matrixhost"
      version = ">= 0.1.0"
    }
  }
}
