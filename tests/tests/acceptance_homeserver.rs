//! Acceptance: `matrixhost_homeserver` (with a reserved user and a backup policy on it) driven by
//! the real Terraform against matrixhostd running real Synapse homeservers (R1, R2, R5, R9, R19,
//! R20, R22), and its plan-time and apply-time errors.

use std::time::Duration;

use matrixhost_tests::runtime::{runtime_available, wait_for, RuntimeServer};
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{expect_status, json, workspace_bin, Backend, TestServer, Value};

/// The configuration under test: a billing plan, a homeserver on it, a reserved user and a
/// backup policy on the homeserver. `extra` goes into the homeserver block.
fn config(name: &str, extra: &str) -> String {
    format!(
        r#"
resource "matrixhost_billing_plan" "bp" {{
  plan = "gold"
}}

resource "matrixhost_homeserver" "hs" {{
  name                  = "{name}"
  region                = "us-east-1"
  billing_plan_id       = matrixhost_billing_plan.bp.id
  registration          = "email_domains"
  allowed_email_domains = ["Corp.Example", "b.example"]
{extra}
  volume {{
    size_gb = 1
  }}
  data_controller {{
    entity_name = "Acme Corp"
    admin_email = "IT@Acme.Example"
  }}
}}

resource "matrixhost_reserved_user" "alice" {{
  homeserver_id = matrixhost_homeserver.hs.id
  email         = "alice@corp.example"
  localpart     = "alice"
}}

resource "matrixhost_backup_policy" "bp" {{
  homeserver_id = matrixhost_homeserver.hs.id
}}

data "matrixhost_homeserver" "by_name" {{
  name = matrixhost_homeserver.hs.name
}}

data "matrixhost_backups" "hs" {{
  homeserver_id = matrixhost_homeserver.hs.id
}}

output "client_url" {{
  value = data.matrixhost_homeserver.by_name.client_url
}}

output "backups" {{
  value = data.matrixhost_backups.hs.backups
}}
"#
    )
}

/// The settings body of a homeserver as the API shows it, for out-of-band changes.
fn settings_of(hs: &Value) -> Value {
    json!({
        "federation_enabled": hs["federation_enabled"],
        "registration": hs["registration"],
        "allowed_email_domains": hs["allowed_email_domains"],
        "guest_access": hs["guest_access"],
        "encryption_by_default": hs["encryption_by_default"],
        "deletion_protection": hs["deletion_protection"],
        "volume": hs["volume"],
        "data_controller": hs["data_controller"],
    })
}

#[tokio::test]
async fn homeserver_lifecycle_with_the_real_runtime() {
    if !runtime_available("homeserver_lifecycle_with_the_real_runtime") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let api = server.client();
    let tf = Terraform::new(&server);

    // Create: waits until the homeserver runs.
    tf.write_main(&config("staff", ""));
    tf.init();
    tf.apply().assert_contains("matrixhost_homeserver.hs: Creation complete");
    let v = tf.values("matrixhost_homeserver.hs");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["status"], "running", "{v}");
    assert!(v["client_url"].as_str().is_some_and(|u| u.starts_with("http://127.0.0.1:")), "{v}");
    assert_eq!(v["server_name"], "staff.dev.matrixhost.localhost");
    assert_eq!(v["federation_enabled"], true);
    assert_eq!(v["encryption_by_default"], true);
    assert_eq!(v["volume"]["encrypted"], true, "R2");
    assert_eq!(v["terms_version"], "2026-01", "R20");
    // The configuration's spelling stays in the state; the server holds the normalised one.
    assert_eq!(v["data_controller"]["admin_email"], "IT@Acme.Example");
    let remote = expect_status(&api.get(&format!("/v1/homeservers/{id}")).await, 200);
    assert_eq!(remote["allowed_email_domains"], json!(["b.example", "corp.example"]));
    assert_eq!(remote["data_controller"]["admin_email"], "it@acme.example");
    assert_eq!(tf.outputs()["client_url"], remote["client_url"]);
    let alice = tf.values("matrixhost_reserved_user.alice");
    assert_eq!(alice["user_id"], "@alice:staff.dev.matrixhost.localhost");
    assert_eq!(tf.values("matrixhost_backup_policy.bp")["retention_days"], 30, "R4");

    // No perpetual diff from normalisation (email case, domain case and order).
    tf.assert_no_changes();

    // An encrypted backup (R4), taken on demand through the API: the backups data source and
    // the policy's last_backup_at show it after a refresh, and nothing is planned.
    assert_eq!(tf.outputs()["backups"], json!([]));
    let taken = api.post(&format!("/v1/homeservers/{id}/backups"), &json!({})).await;
    assert_eq!(taken.0.as_u16(), 202, "{taken:?}");
    let backup_id = taken.2["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let b = expect_status(&api.get(&format!("/v1/homeservers/{id}/backups/{backup_id}")).await, 200);
        if b["status"] == "completed" {
            break;
        }
        assert_ne!(b["status"], "failed", "{b}");
        assert!(std::time::Instant::now() < deadline, "the backup did not complete: {b}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // (The new backup changes an output, so refresh first.)
    tf.ok(&["apply", "-refresh-only", "-auto-approve", "-no-color"]);
    let backups = tf.outputs()["backups"].clone();
    assert_eq!(backups.as_array().map(Vec::len), Some(1), "{backups}");
    assert_eq!(backups[0]["id"], backup_id.as_str());
    assert_eq!(backups[0]["status"], "completed");
    assert_eq!(backups[0]["kind"], "on_demand");
    assert!(backups[0]["size_bytes"].as_i64().is_some_and(|n| n > 0), "{backups}");
    assert!(tf.values("matrixhost_backup_policy.bp")["last_backup_at"].is_string());
    tf.assert_no_changes();

    // An apply means the change is in effect: a new reserved user with an account and a
    // billing-plan change (a larger MAU cap, so a Synapse restart) applied together. Right
    // after the apply the plan is empty (no status noise) and the new account logs in at the
    // first attempt.
    let with_bob = config("staff", "").replace(
        "resource \"matrixhost_backup_policy\"",
        "resource \"matrixhost_reserved_user\" \"bob\" {\n  homeserver_id    = matrixhost_homeserver.hs.id\n  email            = \"bob@corp.example\"\n  localpart        = \"bob\"\n  initial_password = \"correct horse battery staple\"\n}\n\nresource \"matrixhost_backup_policy\"",
    );
    let with_bob = with_bob.replace("plan = \"gold\"", "plan             = \"gold\"\n  additional_users = 5");
    tf.write_main(&with_bob);
    let mau_before = expect_status(&api.get(&format!("/v1/billing-plans/{}", remote["billing_plan_id"].as_str().unwrap())).await, 200)["mau_cap"].clone();
    let starts_before = server.log().matches("homeserver answers").count();
    tf.apply().assert_contains("matrixhost_reserved_user.bob: Creation complete").assert_contains("Modifications complete");
    // The new account is made before the restart that reserves its slot: one restart, not two.
    let restarts = server.log().matches("homeserver answers").count() - starts_before;
    assert!(restarts <= 2, "{restarts} Synapse starts for one reserved user and one plan change");
    let client_url = tf.values("matrixhost_homeserver.hs")["client_url"].as_str().unwrap().to_owned();
    let matrix = matrixhost_tests::runtime::Matrix::new(&client_url);
    let (status, body) = matrix.login("bob", "correct horse battery staple").await;
    assert_eq!(status, 200, "the login right after the apply: {body}");
    tf.assert_no_changes();
    let plan = expect_status(&api.get(&format!("/v1/billing-plans/{}", remote["billing_plan_id"].as_str().unwrap())).await, 200);
    assert_eq!(plan["mau_cap"], mau_before.as_u64().unwrap() + 5, "{plan}");
    assert_eq!(plan["apply_status"], "applied", "{plan}");
    let bob = tf.values("matrixhost_reserved_user.bob");
    let bob = expect_status(&api.get(&format!("/v1/homeservers/{id}/reserved-users/{}", bob["id"].as_str().unwrap())).await, 200);
    assert_eq!(bob["apply_status"], "applied", "{bob}");
    tf.write_main(&config("staff", ""));
    tf.apply();
    tf.assert_no_changes();

    // Update in place: waits until the homeserver runs the new settings.
    tf.write_main(&config("staff", "  guest_access = true\n"));
    tf.assert_changes().assert_contains("updated in-place").assert_lacks("forces replacement");
    tf.apply().assert_contains("Modifications complete");
    assert_eq!(tf.values("matrixhost_homeserver.hs")["status"], "running");
    assert_eq!(expect_status(&api.get(&format!("/v1/homeservers/{id}")).await, 200)["guest_access"], true);
    tf.assert_no_changes();
    let (status, body) = matrix.login("alice", "wrong password").await;
    assert_eq!(status, 403, "Synapse answers (and refuses the wrong password) right after the apply: {body}");

    // Import by name and by id: nothing to change afterwards.
    tf.state_rm("matrixhost_homeserver.hs");
    tf.import("matrixhost_homeserver.hs", "staff");
    tf.assert_no_changes();
    tf.state_rm("matrixhost_homeserver.hs");
    tf.import("matrixhost_homeserver.hs", &id);
    tf.assert_no_changes();

    // Drift, changed out of band: the plan restores the configuration.
    let remote = expect_status(&api.get(&format!("/v1/homeservers/{id}")).await, 200);
    let mut body = settings_of(&remote);
    body["guest_access"] = json!(false);
    expect_status(&api.put(&format!("/v1/homeservers/{id}"), &body).await, 200);
    tf.assert_changes().assert_contains("~ guest_access").assert_says("false -> true");
    tf.apply();
    tf.assert_no_changes();

    // Deletion protection: destroy fails clearly until it is turned off.
    tf.write_main(&config("staff", "  guest_access = true\n  deletion_protection = true\n"));
    tf.apply();
    tf.fails(&["destroy", "-auto-approve", "-no-color"])
        .assert_contains("Error: Homeserver `staff` is protected from deletion")
        .assert_says("Set `deletion_protection = false` and apply before destroying");
    assert_eq!(api.get(&format!("/v1/homeservers/{id}")).await.0.as_u16(), 200, "still there");
    tf.write_main(&config("staff", "  guest_access = true\n"));
    tf.apply();

    // Drift, deleted out of band: everything on it is planned again, without an error.
    let deleted = api.delete(&format!("/v1/homeservers/{id}")).await;
    assert!(matches!(deleted.0.as_u16(), 202 | 204), "{deleted:?}");
    wait_for(&api, &id, "gone", Duration::from_secs(120), |r| r.0.as_u16() == 404).await;
    tf.assert_changes()
        .assert_contains("matrixhost_homeserver.hs will be created")
        .assert_contains("matrixhost_reserved_user.alice will be created")
        .assert_contains("matrixhost_backup_policy.bp will be created");
    tf.apply();
    let id = tf.values("matrixhost_homeserver.hs")["id"].as_str().unwrap().to_owned();
    tf.assert_no_changes();

    // Forced replacement: a new name replaces the homeserver and what hangs on it.
    tf.write_main(&config("staff2", "  guest_access = true\n"));
    tf.assert_changes()
        .assert_contains("matrixhost_homeserver.hs must be replaced")
        .assert_contains("forces replacement")
        .assert_contains("matrixhost_reserved_user.alice must be replaced");
    tf.apply();
    let new_id = tf.values("matrixhost_homeserver.hs")["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(api.get(&format!("/v1/homeservers/{id}")).await.0.as_u16(), 404, "the old homeserver is gone");
    assert_eq!(tf.values("matrixhost_homeserver.hs")["status"], "running");
    tf.assert_no_changes();

    // Destroy waits until the homeserver is gone; the API lists nothing.
    tf.destroy();
    assert_eq!(expect_status(&api.get("/v1/homeservers").await, 200)["items"], json!([]));
    assert_eq!(expect_status(&api.get("/v1/billing-plans").await, 200)["items"], json!([]));
    tf.print_timings("homeserver_lifecycle_with_the_real_runtime");
}

async fn api_only_server() -> TestServer {
    TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).arg("--test-clock").start().await
}

fn homeserver_hcl(plan: &str, body: &str) -> String {
    format!(
        r#"
resource "matrixhost_billing_plan" "bp" {{
  plan = "{plan}"
}}

resource "matrixhost_homeserver" "hs" {{
  billing_plan_id = matrixhost_billing_plan.bp.id
{body}
}}
"#
    )
}

const VOLUME: &str = "  volume {\n    size_gb = 1\n  }\n";
const CONTROLLER: &str = "  data_controller {\n    entity_name = \"Acme Corp\"\n    admin_email = \"it@acme.example\"\n  }\n";

#[tokio::test]
async fn homeserver_bad_inputs_fail_at_plan_time_with_the_attribute() {
    let server = api_only_server().await;
    let tf = Terraform::new(&server);
    tf.write_main(&homeserver_hcl(
        "gold",
        r#"
  name                  = "Staff_Chat"
  region                = "eu-west-1"
  server_name           = "chat.example.com:8448"
  registration          = "email_domains"
  volume {
    size_gb   = 0
    encrypted = false
  }
  data_controller {
    entity_name = "Acme Corp"
    admin_email = "not-an-email"
  }
  timeouts {
    create = "ten minutes"
  }
"#,
    ));
    tf.init();
    let out = tf.plan_fails();
    // R1, R2, R9 and the syntax rules, each on its attribute.
    out.assert_error_at("Invalid region", "region = \"eu-west-1\"")
        .assert_says("R1: `eu-west-1` is outside the US")
        .assert_error_at("Invalid volume.encrypted", "encrypted = false")
        .assert_says("R2: every customer-data volume is encrypted at rest")
        .assert_error_at("Invalid registration", "registration = \"email_domains\"")
        .assert_says("R9: registration = email_domains needs at least one domain")
        .assert_error_at("Invalid name", "name = \"Staff_Chat\"")
        .assert_error_at("Invalid server_name", "server_name = \"chat.example.com:8448\"")
        .assert_error_at("Invalid volume.size_gb", "size_gb = 0")
        .assert_error_at("Invalid data_controller.admin_email", "admin_email = \"not-an-email\"")
        .assert_says("`not-an-email` is not a valid email address")
        .assert_error_at("Invalid timeouts.create", "create = \"ten minutes\"")
        .assert_says("is not a duration");

    // R9 the other way round: domains without `email_domains`.
    tf.write_main(&homeserver_hcl("gold", &format!("  name = \"staff\"\n  region = \"us-east-1\"\n  allowed_email_domains = [\"corp.example\"]\n{VOLUME}{CONTROLLER}")));
    tf.plan_fails()
        .assert_error_at("Invalid allowed_email_domains", "allowed_email_domains = [\"corp.example\"]")
        .assert_says("R9: allowed_email_domains is only used with registration = email_domains");

    // R1 with the catalog: a US region that is not available yet is refused at plan time.
    tf.write_main(&homeserver_hcl("gold", &format!("  name = \"staff\"\n  region = \"us-central-1\"\n{VOLUME}{CONTROLLER}")));
    tf.plan_fails().assert_error_at("Invalid region", "region = \"us-central-1\"").assert_says("R1: region `us-central-1` is not available yet");

    // Rules that need the billing plan fail at apply with the server's message and attribute.
    // R5: the volume is larger than the plan's storage limit.
    tf.write_main(&homeserver_hcl("nickel", &format!("  name = \"staff\"\n  region = \"us-east-1\"\n  volume {{\n    size_gb = 11\n  }}\n{CONTROLLER}")));
    tf.apply_fails()
        .assert_error_at("Cannot create homeserver", "size_gb = 11")
        .assert_says("R5: volume size 11 GB exceeds the nickel plan's storage limit of 10 GB");
    // R22: nickel keeps end-to-end encryption on.
    tf.write_main(&homeserver_hcl("nickel", &format!("  name = \"staff\"\n  region = \"us-east-1\"\n  encryption_by_default = false\n{VOLUME}{CONTROLLER}")));
    tf.apply_fails()
        .assert_error_at("Cannot create homeserver", "encryption_by_default = false")
        .assert_says("R22: the nickel plan keeps end-to-end encryption on by default");
    assert_eq!(expect_status(&server.client().get("/v1/homeservers").await, 200)["items"], json!([]));
    tf.destroy();
}

#[tokio::test]
async fn homeserver_unknown_values_are_not_invalid_and_timeouts_report_the_status() {
    // Without the runtime a homeserver stays `provisioning`: create must give up at the
    // configured timeout, say which status it is in, and keep the homeserver in the state
    // (tainted), so the next apply replaces it.
    let server = api_only_server().await;
    let tf = Terraform::new(&server);
    tf.write_main(&homeserver_hcl(
        "gold",
        &format!(
            r#"
  name         = "staff"
  # Unknown until the billing plan exists: never invalid at plan time.
  region       = matrixhost_billing_plan.bp.status == "active" ? "us-east-2" : "eu-west-1"
  registration = matrixhost_billing_plan.bp.status == "active" ? "email_domains" : "open"
  allowed_email_domains = [lower("Corp.Example"), "${{matrixhost_billing_plan.bp.status}}.example"]
{VOLUME}{CONTROLLER}
  timeouts {{
    create = "2s"
  }}
"#
        ),
    ));
    tf.init();
    tf.assert_changes().assert_contains("(known after apply)");
    let out = tf.apply_fails();
    out.assert_contains("Error: Timed out waiting for homeserver `staff`").assert_says("it is `provisioning`").assert_says("Raise `timeouts.create`");
    let v = tf.values("matrixhost_homeserver.hs");
    assert_eq!(v["region"], "us-east-2");
    assert_eq!(v["status"], "provisioning");
    tf.assert_changes().assert_contains("is tainted, so must be replaced");
    tf.destroy();
    assert_eq!(expect_status(&server.client().get("/v1/homeservers").await, 200)["items"], json!([]));
}
