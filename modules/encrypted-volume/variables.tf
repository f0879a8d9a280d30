variable "plan" {
  description = "The plan tier the homeserver is billed on, e.g. `silver` (see the `matrixhost_plans` data source). Its storage limit caps `size_gb`."
  type        = string

  validation {
    condition     = var.plan != null && can(regex("^[a-z][a-z0-9-]{1,31}$", var.plan))
    error_message = "The plan must be a tier key of the catalog, such as \"nickel\", \"silver\", \"gold\" or \"platinum\"."
  }
}

variable "size_gb" {
  description = "Size of the volume in GB: a whole number, at least 1 and at most the plan's storage limit (R5). Volumes only grow."
  type        = number
  default     = 10

  validation {
    condition     = var.size_gb != null && floor(var.size_gb) == var.size_gb && var.size_gb >= 1
    error_message = "The volume size must be a whole number of GB, at least 1."
  }
}

variable "encrypted" {
  description = "Encryption at rest. Pinned to `true` (R2): every customer-data volume is encrypted, so `false` is refused at plan time. The input exists only so that a copied `encrypted = false` fails loudly instead of being ignored."
  type        = bool
  default     = true

  validation {
    condition     = var.encrypted == true
    error_message = "R2: every customer-data volume is encrypted at rest; encrypted = false is not allowed. Remove the setting or set encrypted = true."
  }
}
