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

variable "payment_method_id" {
  description = "A card for the subscription, as the payment processor's payment-method id (pm_...). Leave it null to pay with the card on file from the console's billing page. Card numbers never go into Terraform (R13)."
  type        = string
  default     = null

  validation {
    condition     = var.payment_method_id == null || can(regex("^pm_[A-Za-z0-9_]{1,64}$", var.payment_method_id))
    error_message = "The payment_method_id must be a payment processor id (pm_...), never a card number (R13)."
  }
}
