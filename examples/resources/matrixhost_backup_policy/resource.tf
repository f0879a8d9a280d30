data "matrixhost_homeserver" "staff" {
  name = "staff"
}

# R4: daily encrypted backups, kept for 30 days.
resource "matrixhost_backup_policy" "staff" {
  homeserver_id  = data.matrixhost_homeserver.staff.id
  window_start   = "02:30"
  retention_days = 30
}
