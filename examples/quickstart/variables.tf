variable "name" {
  description = "Name of the homeserver (a lower-case DNS label)."
  type        = string
  default     = "quickstart"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.name))
    error_message = "The name must be a lower-case DNS label: a-z, 0-9 and '-', starting with a letter."
  }
}

variable "organization" {
  description = "Your organization's legal name: the data controller named in the homeserver's privacy notice (R19)."
  type        = string
  default     = "Example Corp"
}

variable "admin_email" {
  description = "Email address of the homeserver's first administrator (also the data controller's contact, R19). The invitation to choose the admin password goes there."
  type        = string
  default     = "admin@example.com"

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.admin_email))
    error_message = "The admin_email must be an email address."
  }
}
