data "matrixhost_homeserver" "staff" {
  name = "staff"
}

data "matrixhost_backups" "staff" {
  homeserver_id = data.matrixhost_homeserver.staff.id
}

output "completed_backups" {
  value = [for b in data.matrixhost_backups.staff.backups : b.started_at if b.status == "completed"]
}
