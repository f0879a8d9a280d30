# ---------------------------------------------------------------- homeserver -------------

variable "name" {
  description = "Name of the homeserver, unique in the organization: a lower-case DNS label (a-z, 0-9, `-`, 1-63 characters, starting with a letter). Changing it replaces the homeserver."
  type        = string

  validation {
    condition     = var.name != null && can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.name))
    error_message = "The name must be a lower-case DNS label: a-z, 0-9 and '-', 1-63 characters, starting with a letter and not ending with '-'."
  }
}

variable "region" {
  description = "Region of the homeserver. It must be a US region that the catalog lists as available (R1); checked against `matrixhost_regions` at plan time. Changing it replaces the homeserver."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = var.region != null && can(regex("^us-[a-z]+-[0-9]{1,2}$", var.region))
    error_message = "R1: homeservers are hosted only in US regions: region must be a US region code such as \"us-east-1\" or \"us-west-2\" (see the matrixhost_regions data source)."
  }
}

variable "server_name" {
  description = "Matrix server name (the part after `:` in user ids), e.g. `chat.example.com`. `null` uses the platform's default, `<name>.<organization>.<platform domain>`. Changing it replaces the homeserver."
  type        = string
  default     = null

  validation {
    condition     = var.server_name == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.server_name))
    error_message = "The server_name must be a lower-case DNS name with at least two labels and no port, e.g. \"chat.example.com\"."
  }
}

variable "email_domains" {
  description = "The company's email domains, e.g. `[\"acme.example\"]`. Registration is restricted to addresses at these domains (R9); at least one is required."
  type        = list(string)

  validation {
    condition     = var.email_domains != null && length(var.email_domains) > 0
    error_message = "R9: registration is restricted to the company's email domains: give at least one domain in email_domains."
  }

  validation {
    condition     = var.email_domains == null ? true : alltrue([for d in var.email_domains : can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", lower(d)))])
    error_message = "Each entry of email_domains must be a domain name such as \"acme.example\" (no @, no scheme)."
  }
}

variable "guest_access" {
  description = "Read-only guest access (R9). Off by default."
  type        = bool
  default     = false

  validation {
    condition     = var.guest_access != null
    error_message = "The guest_access must be true or false."
  }
}

variable "federation_enabled" {
  description = "Federation with the rest of the Matrix network (R9). On by default."
  type        = bool
  default     = true

  validation {
    condition     = var.federation_enabled != null
    error_message = "The federation_enabled must be true or false."
  }
}

variable "encryption_by_default" {
  description = "End-to-end encryption on by default for new rooms. Only plans whose `e2ee_can_be_disabled` is true may turn it off (R22); checked at plan time."
  type        = bool
  default     = true

  validation {
    condition     = var.encryption_by_default != null
    error_message = "The encryption_by_default must be true or false."
  }
}

variable "deletion_protection" {
  description = "When `true` (the default), `terraform destroy` of the homeserver fails. Set it to `false` and apply before destroying."
  type        = bool
  default     = true

  validation {
    condition     = var.deletion_protection != null
    error_message = "The deletion_protection must be true or false."
  }
}

variable "data_controller" {
  description = "The company as data controller, named in the homeserver's privacy notice (R19): `entity_name` (its legal name) and `admin_email` (its administrator's contact address)."
  type = object({
    entity_name = string
    admin_email = string
  })

  validation {
    condition     = var.data_controller != null && length(trimspace(try(var.data_controller.entity_name, ""))) >= 1 && length(try(var.data_controller.entity_name, "")) <= 200
    error_message = "R19: data_controller.entity_name must be the company's legal name (1-200 characters)."
  }

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.data_controller.admin_email))
    error_message = "R19: data_controller.admin_email must be an email address, e.g. \"it@acme.example\"."
  }
}

variable "timeouts" {
  description = "How long to wait for the homeserver to be running after create or update, and to be gone after delete, e.g. `{ create = \"30m\" }`. Keys: `create`, `update`, `delete`; values are durations such as `\"10m\"`. Empty (the default) keeps the provider's defaults."
  type        = map(string)
  default     = {}

  validation {
    condition     = var.timeouts != null && alltrue([for k, v in var.timeouts : contains(["create", "update", "delete"], k) && can(regex("^([0-9]+h)?([0-9]+m)?([0-9]+s)?$", v)) && v != ""])
    error_message = "The timeouts keys must be create, update or delete, and each value a duration such as \"30s\", \"10m\" or \"1h30m\"."
  }
}

# --------------------------------------------------------------------- billing -------------

variable "plan" {
  description = "The plan tier, e.g. `silver` (see the `matrixhost_plans` data source). It sets the MAU cap, the resource limits (including the largest volume) and the support tier (R5)."
  type        = string

  validation {
    condition     = var.plan != null && can(regex("^[a-z][a-z0-9-]{1,31}$", var.plan))
    error_message = "The plan must be a tier key of the catalog, such as \"nickel\", \"silver\", \"gold\" or \"platinum\"."
  }
}

variable "billing_period" {
  description = "How often the subscription is paid in advance: `monthly` (default) or `annual` (R11)."
  type        = string
  default     = "monthly"

  validation {
    condition     = contains(["monthly", "annual"], coalesce(var.billing_period, "invalid"))
    error_message = "The billing_period must be \"monthly\" or \"annual\"."
  }
}

variable "additional_users" {
  description = "Additional Users on top of the plan's MAU (R10): they raise the MAU cap, not the resources."
  type        = number
  default     = 0

  validation {
    condition     = var.additional_users != null && floor(var.additional_users) == var.additional_users && var.additional_users >= 0 && var.additional_users <= 1000000
    error_message = "R10: additional_users must be a whole number from 0 to 1000000."
  }
}

variable "payment_method_id" {
  description = "The payment processor's payment-method id (`pm_...`), or `null`. Card data never reaches matrixhost (R13)."
  type        = string
  default     = null

  validation {
    condition     = var.payment_method_id == null || can(regex("^pm_[A-Za-z0-9_]{1,64}$", var.payment_method_id))
    error_message = "The payment_method_id must be a payment-method id such as \"pm_1234abcd\"."
  }
}

# ---------------------------------------------------------------------- volume -------------

variable "volume_size_gb" {
  description = "Size of the encrypted volume in GB, at most the plan's storage limit (R5; checked at plan time). Volumes only grow."
  type        = number
  default     = 10

  validation {
    condition     = var.volume_size_gb != null && floor(var.volume_size_gb) == var.volume_size_gb && var.volume_size_gb >= 1
    error_message = "The volume_size_gb must be a whole number of GB, at least 1."
  }
}

variable "volume_encrypted" {
  description = "Encryption at rest of the volume. Pinned to `true` (R2): `false` is refused at plan time."
  type        = bool
  default     = true

  validation {
    condition     = var.volume_encrypted == true
    error_message = "R2: every customer-data volume is encrypted at rest; volume_encrypted = false is not allowed. Remove the setting or set it to true."
  }
}

# -------------------------------------------------------------- reserved users -------------

variable "reserved_users" {
  description = "Reserved users (R8), keyed by Matrix localpart (`alice` becomes `@alice:<server_name>`). Each holds a slot inside the MAU cap and can always log in. Values: `email`, `display_name` (may be null) and `admin`. More reserved users than the plan's cap (MAU + additional users) fail at plan time."
  type = map(object({
    email        = string
    display_name = string
    admin        = bool
  }))
  default = {}

  validation {
    condition     = var.reserved_users != null && alltrue([for k, u in var.reserved_users : can(regex("^[a-z0-9._=/+-]{1,64}$", k))])
    error_message = "Each key of reserved_users must be a Matrix localpart: 1-64 characters of a-z, 0-9, '.', '_', '=', '-', '/', '+'."
  }

  validation {
    condition     = try(alltrue([for k, u in var.reserved_users : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", u.email)) && u.admin != null]), true)
    error_message = "Each reserved user needs an email address and admin = true or false."
  }

  validation {
    condition     = try(length(distinct([for u in values(var.reserved_users) : lower(u.email)])) == length(var.reserved_users), true)
    error_message = "R8: each reserved user needs its own email address (they are compared case-insensitively)."
  }
}

# --------------------------------------------------------------------- backups -------------

variable "backup_window_start" {
  description = "Start of the daily backup window, UTC `HH:MM` (R4)."
  type        = string
  default     = "03:00"

  validation {
    condition     = var.backup_window_start != null && can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_window_start))
    error_message = "The backup_window_start must be a UTC time HH:MM, from 00:00 to 23:59."
  }
}

variable "backup_retention_days" {
  description = "Days each backup is kept. Pinned to 30 (R4): another value needs `allow_nonstandard_backup_retention = true` (see the `daily-backups` module)."
  type        = number
  default     = 30

  validation {
    condition     = var.backup_retention_days != null && floor(var.backup_retention_days) == var.backup_retention_days && var.backup_retention_days >= 7 && var.backup_retention_days <= 365
    error_message = "R4: backup_retention_days must be a whole number of days from 7 to 365 (30 is the promised retention)."
  }
}

variable "allow_nonstandard_backup_retention" {
  description = "Override for R4: set it to `true`, deliberately, to keep backups for a `backup_retention_days` other than 30."
  type        = bool
  default     = false

  validation {
    condition     = var.allow_nonstandard_backup_retention != null
    error_message = "The allow_nonstandard_backup_retention must be true or false."
  }
}
