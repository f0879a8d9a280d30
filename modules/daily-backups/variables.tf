variable "homeserver_id" {
  description = "Id of the homeserver to back up (`hs_...`), e.g. `matrixhost_homeserver.this.id`. Changing it replaces the backup policy."
  type        = string

  validation {
    condition     = var.homeserver_id != null && can(regex("^hs_[A-Za-z0-9]+$", var.homeserver_id))
    error_message = "The homeserver_id must be the id of a matrixhost homeserver (hs_...)."
  }
}

variable "window_start" {
  description = "Start of the daily backup window, UTC, `HH:MM` (24-hour)."
  type        = string
  default     = "03:00"

  validation {
    condition     = var.window_start != null && can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.window_start))
    error_message = "The window_start must be a UTC time HH:MM, from 00:00 to 23:59."
  }
}

variable "retention_days" {
  description = "Days each backup is kept. Pinned to 30, the promised rolling retention (R4): any other value is refused at plan time unless `allow_nonstandard_retention = true`. Even then it must be 7-365."
  type        = number
  default     = 30

  validation {
    condition     = var.retention_days != null && floor(var.retention_days) == var.retention_days && var.retention_days >= 7 && var.retention_days <= 365
    error_message = "R4: retention_days must be a whole number of days from 7 to 365 (30 is the promised retention)."
  }
}

variable "allow_nonstandard_retention" {
  description = "Override for R4. Set it to `true`, deliberately and with a reason (e.g. a legal hold or a data-minimisation policy), to keep backups for a `retention_days` other than 30. Off by default."
  type        = bool
  default     = false

  validation {
    condition     = var.allow_nonstandard_retention != null
    error_message = "The allow_nonstandard_retention must be true or false."
  }
}
