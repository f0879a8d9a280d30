variable "region" {
  description = "The region to use, e.g. `us-west-2`. It must be a US region that the matrixhost catalog lists as available (R1). Leave it `null` to use `default_region`."
  type        = string
  default     = null

  validation {
    condition     = var.region == null || can(regex("^us-[a-z]+-[0-9]{1,2}$", var.region))
    error_message = "R1: homeservers are hosted only in US regions: region must be a US region code such as \"us-east-1\" or \"us-west-2\" (see the matrixhost_regions data source)."
  }
}

variable "default_region" {
  description = "The region used when `region` is `null`. Like `region`, it must be an available US region (R1)."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = var.default_region != null && can(regex("^us-[a-z]+-[0-9]{1,2}$", var.default_region))
    error_message = "R1: default_region must be a US region code such as \"us-east-1\"."
  }
}
