# ------------------------------------------------------------------------- company ---------

variable "company_name" {
  description = "The company's legal name: the data controller in both homeservers' privacy notices (R19)."
  type        = string

  validation {
    condition     = length(trimspace(var.company_name)) >= 1 && length(var.company_name) <= 200
    error_message = "The company_name must be 1-200 characters."
  }
}

variable "privacy_contact_email" {
  description = "Contact address of the company's administrator or data-protection officer, published in the privacy notices (R19)."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.privacy_contact_email))
    error_message = "The privacy_contact_email must be an email address."
  }
}

variable "name_prefix" {
  description = "Prefix of the homeserver names: `<prefix>-staff` and `<prefix>-partners`."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,40}$", var.name_prefix))
    error_message = "The name_prefix must be a lower-case DNS label of at most 41 characters, starting with a letter."
  }
}

variable "region" {
  description = "Region of both homeservers: an available US region (R1)."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^us-[a-z]+-[0-9]{1,2}$", var.region))
    error_message = "R1: homeservers are hosted only in US regions, e.g. \"us-east-1\"."
  }
}

variable "deletion_protection" {
  description = "Deletion protection of both homeservers. Keep it `true`; set it to `false` and apply before a deliberate `terraform destroy`."
  type        = bool
  default     = true
}

variable "backup_window_start" {
  description = "Start of the daily backup window of both homeservers, UTC `HH:MM` (R4)."
  type        = string
  default     = "02:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_window_start))
    error_message = "The backup_window_start must be a UTC time HH:MM."
  }
}

# --------------------------------------------------------------------------- staff ---------

variable "staff_email_domains" {
  description = "The company's email domains: only addresses there may register on the staff homeserver (R9)."
  type        = list(string)

  validation {
    condition     = length(var.staff_email_domains) > 0
    error_message = "R9: give at least one company email domain."
  }
}

variable "staff_server_name" {
  description = "Matrix server name of the staff homeserver, e.g. `chat.acme.example` (`null`: the platform's default)."
  type        = string
  default     = null
}

variable "staff_plan" {
  description = "Plan tier of the staff homeserver (see the `matrixhost_plans` data source)."
  type        = string
  default     = "gold"
}

variable "staff_additional_users" {
  description = "Additional Users on top of the staff plan's MAU (R10)."
  type        = number
  default     = 0
}

variable "staff_volume_size_gb" {
  description = "Encrypted volume of the staff homeserver, in GB (at most the plan's storage limit)."
  type        = number
  default     = 20
}

# ------------------------------------------------------------------------ partners ---------

variable "partner_email_domains" {
  description = "Email domains of the partner companies: only addresses there may register on the partners homeserver (R9)."
  type        = list(string)

  validation {
    condition     = length(var.partner_email_domains) > 0
    error_message = "R9: give at least one partner email domain."
  }
}

variable "partners_server_name" {
  description = "Matrix server name of the partners homeserver, e.g. `partners.acme.example` (`null`: the platform's default)."
  type        = string
  default     = null
}

variable "partners_plan" {
  description = "Plan tier of the partners homeserver."
  type        = string
  default     = "silver"
}

variable "partners_volume_size_gb" {
  description = "Encrypted volume of the partners homeserver, in GB."
  type        = number
  default     = 5
}

# ------------------------------------------------------------------ reserved users ---------

variable "executives" {
  description = "Executives with a reserved slot on the staff homeserver (R8), keyed by Matrix localpart."
  type = map(object({
    email        = string
    display_name = string
  }))
  default = {}
}

variable "it_admins" {
  description = "IT administrators, keyed by Matrix localpart: reserved server admins on both homeservers (R8)."
  type = map(object({
    email        = string
    display_name = string
  }))
  default = {}
}
