//! Acceptance: the provider itself, driven by the real Terraform: retries of 503/429 injected by
//! the server (honouring `Retry-After`, bounded), credentials checked once at configure time,
//! no backtraces and no token in anything Terraform shows or stores, and the examples.

use std::time::Duration;

use matrixhost_tests::terraform::{required_providers, Terraform};
use matrixhost_tests::{expect_status, json, workspace_bin, workspace_root, Backend, TestServer};

async fn server() -> TestServer {
    TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).arg("--test-clock").start().await
}

const CONFIG: &str = r#"
data "matrixhost_regions" "all" {}

resource "matrixhost_billing_plan" "bp" {
  plan = "silver"
}
"#;

fn injected(server: &TestServer) -> usize {
    server.log().lines().filter(|l| l.contains("WARN") && l.contains("injected fault") && !l.contains("armed")).count()
}

#[tokio::test]
async fn provider_retries_injected_503_and_429_honouring_retry_after() {
    let server = server().await;
    let api = server.client();
    let tf = Terraform::new(&server);
    tf.write_main(CONFIG);
    tf.init();

    // Two 503s on every /v1/ path: configure's first call gets them, retries after the
    // server's `Retry-After: 1`, and the apply goes through.
    expect_status(&api.post("/v1/_test/faults", &json!({"status": 503, "count": 2, "path_prefix": "/v1/"})).await, 200);
    let before = injected(&server);
    let out = tf.apply();
    assert_eq!(injected(&server) - before, 2, "both injected faults were hit");
    assert!(out.elapsed >= Duration::from_secs(2), "Retry-After: 1 was honoured twice: {:?}", out.elapsed);

    // 429 (rate limited) on the billing plan's reads: the refresh retries.
    expect_status(&api.post("/v1/_test/faults", &json!({"status": 429, "count": 2, "path_prefix": "/v1/billing-plans"})).await, 200);
    let before = injected(&server);
    tf.assert_no_changes();
    assert_eq!(injected(&server) - before, 2);

    // A retried create is safe: the first POST fails, the retry (same idempotency key)
    // creates exactly one.
    tf.write_main(&format!("{CONFIG}\nresource \"matrixhost_billing_plan\" \"second\" {{\n  plan = \"gold\"\n}}\n"));
    expect_status(&api.post("/v1/_test/faults", &json!({"status": 503, "count": 1, "path_prefix": "/v1/billing-plans"})).await, 200);
    tf.apply();
    let list = expect_status(&api.get("/v1/billing-plans").await, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");

    // Bounded: with max_retries = 2 a call that keeps failing gives up after 3 attempts and
    // says which call failed and how.
    let bounded = Terraform::new(&server).env("MATRIXHOST_MAX_RETRIES", Some("2"));
    bounded.write_main(CONFIG);
    bounded.init();
    expect_status(&api.post("/v1/_test/faults", &json!({"status": 503, "count": 3, "path_prefix": "/v1/"})).await, 200);
    let out = bounded.plan_fails();
    out.assert_contains("Error: Cannot check the matrixhost credentials")
        .assert_says("injected fault (test hook)")
        .assert_says("matrixhost answered GET /v1/organization with HTTP 503 `injected_fault`")
        .assert_says("after 3 attempts");
    bounded.assert_changes();
    tf.destroy();
    tf.print_timings("provider_retries");
}

#[tokio::test]
async fn provider_credentials_fail_once_and_clearly_at_configure_time() {
    let server = server().await;

    // (With an explicit provider block: without one, Terraform 1.0 adds its own hint.)
    let missing = Terraform::with_credentials(None, None);
    missing.write_main(&format!("provider \"matrixhost\" {{}}\n{CONFIG}"));
    missing.init();
    let out = missing.plan_fails();
    out.assert_contains("Error: Missing matrixhost credentials").assert_says("MATRIXHOST_ENDPOINT").assert_says("MATRIXHOST_TOKEN");
    assert_eq!(out.all().matches("Error:").count(), 1, "one error, not one per resource:\n{out}");

    let token = "mh_this_token_is_wrong_0123456789abcdef";
    let wrong = Terraform::with_credentials(Some(&server.base_url()), Some(token));
    wrong.write_main(&format!("provider \"matrixhost\" {{}}\n{CONFIG}"));
    wrong.init();
    let out = wrong.plan_fails();
    out.assert_contains("Error: Invalid matrixhost API token").assert_lacks(token);
    assert_eq!(out.all().matches("Error:").count(), 1, "{out}");

    // The token in the provider block (sensitive) works the same and is never shown.
    let in_block = Terraform::with_credentials(None, None);
    in_block.write_main(&format!(
        "provider \"matrixhost\" {{\n  endpoint = \"{}\"\n  token = \"{token}\"\n}}\n{CONFIG}",
        server.base_url()
    ));
    in_block.init();
    in_block.plan_fails().assert_contains("Error: Invalid matrixhost API token").assert_lacks(&format!("refused the API token {token}"));

    // Nobody listening: fails fast with max_retries = 0 and says so.
    let port = matrixhost_tests::free_port();
    let down = Terraform::with_credentials(Some(&format!("http://127.0.0.1:{port}")), Some(server.dev_token()))
        .env("MATRIXHOST_MAX_RETRIES", Some("0"));
    down.write_main(CONFIG);
    down.init();
    down.plan_fails().assert_contains(&format!("Error: Cannot check the matrixhost credentials at http://127.0.0.1:{port}")).assert_says("cannot connect");

    // A bad endpoint in the provider block is refused at validate time, on the attribute.
    let bad = Terraform::with_credentials(None, None);
    bad.write_main(&format!("provider \"matrixhost\" {{\n  endpoint = \"ftp://example\"\n}}\n{CONFIG}"));
    bad.init();
    bad.plan_fails().assert_error_at("Invalid endpoint", "endpoint = \"ftp://example\"");
}

#[tokio::test]
async fn provider_never_shows_a_backtrace_or_the_token() {
    let server = server().await;
    let token = server.dev_token().to_owned();
    let tf = Terraform::new(&server).env("RUST_BACKTRACE", Some("full")).env("RUST_LIB_BACKTRACE", Some("1"));
    // A plan-time error and an apply-time (server) error, with backtraces requested.
    tf.write_main("resource \"matrixhost_billing_plan\" \"bp\" {\n  plan = \"Gold!\"\n}\n");
    tf.init();
    let plan_error = tf.plan_fails();
    tf.write_main(
        r#"
resource "matrixhost_billing_plan" "bp" {
  plan = "nickel"
}
resource "matrixhost_homeserver" "hs" {
  name            = "staff"
  region          = "us-east-1"
  billing_plan_id = matrixhost_billing_plan.bp.id
  volume {
    size_gb = 500
  }
  data_controller {
    entity_name = "Acme"
    admin_email = "it@acme.example"
  }
}
"#,
    );
    let apply_error = tf.apply_fails();
    apply_error.assert_says("R5: volume size 500 GB exceeds the nickel plan's storage limit of 10 GB");
    for out in [&plan_error, &apply_error] {
        let text = out.all();
        for needle in ["stack backtrace", "backtrace", "/rustc/", "core::", "tokio::", "panicked", &token] {
            assert!(!text.contains(needle), "`{needle}` leaked into terraform's output:\n{out}");
        }
    }
    tf.destroy();
    assert!(!tf.state_file().contains(&token), "the token is not in the state");
    let backup = std::fs::read_to_string(tf.dir().join("terraform.tfstate.backup")).unwrap_or_default();
    assert!(!backup.contains(&token));
}

/// Every example validates against the provider's schema.
#[tokio::test]
async fn examples_validate() {
    let root = workspace_root().join("examples");
    let mut dirs = vec![root.join("provider")];
    for kind in ["resources", "data-sources"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(kind)).unwrap().flatten().map(|e| e.path()).collect();
        entries.sort();
        dirs.extend(entries);
    }
    assert!(dirs.len() >= 9, "{dirs:?}");
    for dir in dirs {
        let tf = Terraform::with_credentials(None, None);
        let mut has_terraform_block = false;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tf") {
                let text = std::fs::read_to_string(&path).unwrap();
                has_terraform_block |= text.contains("required_providers");
                tf.write_file(path.file_name().unwrap().to_str().unwrap(), &text);
            }
        }
        if !has_terraform_block {
            tf.write_file("versions.tf", &required_providers());
        }
        tf.init();
        let out = tf.run(&["validate", "-no-color"]);
        assert!(out.success(), "{} does not validate:\n{out}", dir.display());
        if dir.parent().is_some_and(|p| p.ends_with("resources")) {
            assert!(dir.join("import.sh").exists(), "{} has no import.sh", dir.display());
        }
    }
}
