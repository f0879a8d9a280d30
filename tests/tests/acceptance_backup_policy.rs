//! Acceptance: `matrixhost_backup_policy` driven by the real Terraform (R4). The homeservers are
//! made through the API on a matrixhostd without the runtime (the policy is a control-plane
//! record; `acceptance_homeserver` covers it on a running homeserver).

use matrixhost_tests::runtime::create_homeserver;
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{expect_status, json, workspace_bin, Backend, TestServer};

async fn server() -> TestServer {
    TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).arg("--test-clock").start().await
}

fn policy_hcl(hs: &str, body: &str) -> String {
    format!("resource \"matrixhost_backup_policy\" \"bp\" {{\n  homeserver_id = \"{hs}\"\n{body}\n}}\n")
}

#[tokio::test]
async fn backup_policy_lifecycle_create_update_replace_drift_import_destroy() {
    let server = server().await;
    let api = server.client();
    let hs1 = create_homeserver(&api, "silver", "one", json!({})).await["id"].as_str().unwrap().to_owned();
    let hs2 = create_homeserver(&api, "silver", "two", json!({})).await["id"].as_str().unwrap().to_owned();
    let tf = Terraform::new(&server);

    // Create with the R4 defaults: daily, 03:00 UTC, 30 days, encrypted.
    tf.write_main(&policy_hcl(&hs1, ""));
    tf.init();
    tf.apply();
    let v = tf.values("matrixhost_backup_policy.bp");
    assert_eq!((v["schedule"].clone(), v["window_start"].clone(), v["retention_days"].clone()), (json!("daily"), json!("03:00"), json!(30)));
    assert_eq!(v["encrypted"], true);
    assert!(v["next_backup_at"].as_str().is_some_and(|t| t.contains("T03:00:00")), "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    tf.assert_no_changes();

    // Update in place.
    tf.write_main(&policy_hcl(&hs1, "  window_start = \"02:30\"\n  retention_days = 45"));
    tf.assert_changes().assert_contains("updated in-place").assert_lacks("forces replacement");
    tf.apply();
    let v = tf.values("matrixhost_backup_policy.bp");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["retention_days"], 45);
    assert!(v["next_backup_at"].as_str().is_some_and(|t| t.contains("T02:30:00")), "{v}");
    tf.assert_no_changes();

    // Forced replacement: another homeserver.
    tf.write_main(&policy_hcl(&hs2, "  window_start = \"02:30\"\n  retention_days = 45"));
    tf.assert_changes().assert_contains("must be replaced").assert_contains("forces replacement");
    tf.apply();
    assert_eq!(tf.values("matrixhost_backup_policy.bp")["homeserver_id"], hs2.as_str());
    assert_eq!(api.get(&format!("/v1/homeservers/{hs1}/backup-policy")).await.0.as_u16(), 404);
    tf.assert_no_changes();

    // Drift, changed out of band.
    let body = json!({"schedule": "daily", "window_start": "02:30", "retention_days": 10});
    expect_status(&api.put(&format!("/v1/homeservers/{hs2}/backup-policy"), &body).await, 200);
    tf.assert_changes().assert_contains("~ retention_days").assert_says("10 -> 45");
    tf.apply();
    tf.assert_no_changes();

    // Drift, deleted out of band.
    expect_status(&api.delete(&format!("/v1/homeservers/{hs2}/backup-policy")).await, 204);
    tf.assert_changes().assert_contains("will be created");
    tf.apply();
    tf.assert_no_changes();

    // Import by the homeserver's id.
    tf.state_rm("matrixhost_backup_policy.bp");
    tf.import("matrixhost_backup_policy.bp", &hs2);
    tf.assert_no_changes();
    tf.import_fails("matrixhost_backup_policy", &format!("  homeserver_id = \"{hs1}\""), &hs1)
        .assert_contains("Error: Cannot import backup policy")
        .assert_says(&format!("No backup policy for homeserver `{hs1}` exists"));

    // Destroy.
    tf.destroy();
    assert_eq!(api.get(&format!("/v1/homeservers/{hs2}/backup-policy")).await.0.as_u16(), 404);
    tf.print_timings("backup_policy_lifecycle");
}

#[tokio::test]
async fn backup_policy_bad_inputs_fail_at_plan_time() {
    let server = server().await;
    let tf = Terraform::new(&server);
    tf.write_main(&policy_hcl("hs_x", "  schedule = \"hourly\"\n  window_start = \"24:00\"\n  retention_days = 6"));
    tf.init();
    tf.plan_fails()
        .assert_error_at("Invalid schedule", "schedule = \"hourly\"")
        .assert_says("`hourly` is not one of: daily")
        .assert_error_at("Invalid window_start", "window_start = \"24:00\"")
        .assert_says("`24:00` is not a UTC time; use HH:MM")
        .assert_error_at("Invalid retention_days", "retention_days = 6")
        .assert_says("R4: retention_days 6 is out of range; allowed 7-365");
    tf.write_main(&policy_hcl("hs_x", "  retention_days = 366"));
    tf.plan_fails().assert_error_at("Invalid retention_days", "retention_days = 366").assert_says("allowed 7-365");
    // A homeserver that does not exist fails at apply with the server's answer.
    tf.write_main(&policy_hcl("hs_doesnotexist", ""));
    tf.apply_fails().assert_contains("Error: Cannot create backup policy").assert_says("homeserver not found");
}
