//! Acceptance: `matrixhost_billing_plan` driven by the real Terraform against the real
//! matrixhostd (R5, R10, R11, R13).

use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{expect_status, json, workspace_bin, Backend, TestServer, Value};

async fn server() -> TestServer {
    TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).arg("--test-clock").start().await
}

fn plan_hcl(body: &str) -> String {
    format!("resource \"matrixhost_billing_plan\" \"bp\" {{\n{body}\n}}\n")
}

#[tokio::test]
async fn billing_plan_lifecycle_create_update_replace_drift_import_destroy() {
    let server = server().await;
    let api = server.client();
    let tf = Terraform::new(&server);

    // Create, with defaults planned by the provider.
    tf.write_main(&plan_hcl("  plan = \"gold\""));
    tf.init();
    tf.apply().assert_contains("Creation complete");
    let v = tf.values("matrixhost_billing_plan.bp");
    let id = v["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("bp_"), "{v}");
    assert_eq!(v["billing_period"], "monthly");
    assert_eq!(v["additional_users"], 0);
    assert_eq!(v["active_plan"], "gold");
    assert_eq!(v["mau_cap"], 250);
    assert_eq!(v["status"], "active");
    let remote = expect_status(&api.get(&format!("/v1/billing-plans/{id}")).await, 200);
    assert_eq!(remote["plan"], "gold");

    // Nothing to do.
    tf.assert_no_changes();

    // R11: a downgrade plans as an in-place update; active_plan keeps the old tier.
    tf.write_main(&plan_hcl("  plan = \"silver\"\n  additional_users = 5\n  billing_period = \"annual\""));
    tf.assert_changes().assert_contains("updated in-place").assert_lacks("must be replaced").assert_lacks("forces replacement");
    tf.apply().assert_contains("Modifications complete");
    let v = tf.values("matrixhost_billing_plan.bp");
    assert_eq!(v["id"], id.as_str(), "updated in place");
    assert_eq!(v["plan"], "silver");
    assert_eq!(v["active_plan"], "gold", "R11: the downgrade waits for the anniversary");
    assert_eq!(v["pending_plan"], "silver");
    assert!(v["pending_change_at"].is_string(), "{v}");
    assert_eq!(v["mau_cap"], 255, "R10: gold's 250 + 5 additional users until the anniversary");
    tf.assert_no_changes();

    // Past the anniversary the downgrade is in force; refresh shows it, and nothing is planned.
    let (status, _, _) = api.post("/v1/_test/clock", &json!({"advance_seconds": 40 * 86400})).await;
    assert_eq!(status.as_u16(), 200);
    // (Terraform 1.0 notes the change outside of Terraform; later versions show it only when it matters.)
    tf.assert_no_changes_after_outside_change();
    tf.ok(&["apply", "-refresh-only", "-auto-approve", "-no-color"]);
    let v = tf.values("matrixhost_billing_plan.bp");
    assert_eq!(v["active_plan"], "silver");
    assert_eq!(v["pending_plan"], Value::Null);
    assert_eq!(v["mau_cap"], 55);

    // Forced replacement (no attribute forces one; `-replace` does).
    tf.ok(&["apply", "-replace=matrixhost_billing_plan.bp", "-auto-approve", "-no-color"]).assert_contains("replaced");
    let replaced = tf.values("matrixhost_billing_plan.bp")["id"].as_str().unwrap().to_owned();
    assert_ne!(replaced, id);
    assert_eq!(api.get(&format!("/v1/billing-plans/{id}")).await.0.as_u16(), 404, "the old one is gone");
    let id = replaced;
    tf.assert_no_changes();

    // Drift, changed out of band: the plan puts the configuration back.
    let body = json!({"plan": "silver", "billing_period": "annual", "additional_users": 9});
    expect_status(&api.put(&format!("/v1/billing-plans/{id}"), &body).await, 200);
    tf.assert_changes().assert_contains("~ additional_users").assert_says("9 -> 5");
    tf.apply();
    tf.assert_no_changes();
    assert_eq!(expect_status(&api.get(&format!("/v1/billing-plans/{id}")).await, 200)["additional_users"], 5);

    // Drift, deleted out of band: removed from state and planned again, never an error.
    expect_status(&api.delete(&format!("/v1/billing-plans/{id}")).await, 204);
    tf.assert_changes().assert_contains("will be created");
    tf.apply();
    let id = tf.values("matrixhost_billing_plan.bp")["id"].as_str().unwrap().to_owned();
    tf.assert_no_changes();

    // Import by id, then nothing to do.
    tf.state_rm("matrixhost_billing_plan.bp");
    tf.import("matrixhost_billing_plan.bp", &id).assert_contains("Import successful");
    tf.assert_no_changes();
    tf.import_fails("matrixhost_billing_plan", "  plan = \"gold\"", "bp_doesnotexist")
        .assert_contains("Error: Cannot import billing plan")
        .assert_says("No billing plan `bp_doesnotexist` exists in this organization.");

    // Destroy: the API lists nothing.
    tf.destroy();
    let list = expect_status(&api.get("/v1/billing-plans").await, 200);
    assert_eq!(list["items"], json!([]), "{list}");
    tf.print_timings("billing_plan_lifecycle");
}

#[tokio::test]
async fn billing_plan_bad_inputs_fail_at_plan_time_with_the_attribute() {
    let server = server().await;
    let tf = Terraform::new(&server);
    tf.write_main(&plan_hcl(
        "  plan = \"Gold!\"\n  billing_period = \"weekly\"\n  additional_users = -1\n  payment_method_id = \"4242424242424242\"",
    ));
    tf.init();
    let out = tf.plan_fails();
    out.assert_error_at("Invalid plan", "plan = \"Gold!\"")
        .assert_says("is not a plan tier")
        .assert_error_at("Invalid billing_period", "billing_period = \"weekly\"")
        .assert_says("`weekly` is not one of: monthly, annual")
        .assert_error_at("Invalid additional_users", "additional_users = -1")
        .assert_says("R10: additional_users -1 is out of range")
        .assert_error_at("Invalid payment_method_id", "payment_method_id = \"4242424242424242\"")
        .assert_says("R13:");
    // R13: the card-number-looking value is never echoed in the message.
    let details: String = out.all().lines().filter(|l| !l.trim_start().starts_with(|c: char| c.is_ascii_digit())).collect::<Vec<_>>().join("\n");
    assert!(!details.contains("4242424242424242"), "{out}");

    // A fractional number is not a count.
    tf.write_main(&plan_hcl("  plan = \"gold\"\n  additional_users = 1.5"));
    tf.plan_fails().assert_error_at("Invalid additional_users", "additional_users = 1.5").assert_says("1.5 is not a whole number");

    // R5: a tier that is not in the catalog is refused at plan time too (the catalog is read once).
    tf.write_main(&plan_hcl("  plan = \"bronze\""));
    tf.plan_fails().assert_error_at("Invalid plan", "plan = \"bronze\"").assert_says("R5: plan `bronze` is not in the catalog");

    // Nothing was created.
    let list = expect_status(&server.client().get("/v1/billing-plans").await, 200);
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn billing_plan_unknown_values_are_not_invalid() {
    let server = server().await;
    let tf = Terraform::new(&server);
    // `b.plan` is unknown while planning (it depends on `a.status`, known only after apply):
    // the plan must succeed, and apply must create it with the value it turns out to be.
    tf.write_main(
        r#"
resource "matrixhost_billing_plan" "a" {
  plan = "nickel"
}
resource "matrixhost_billing_plan" "b" {
  plan             = matrixhost_billing_plan.a.status == "active" ? "silver" : "gold"
  additional_users = matrixhost_billing_plan.a.mau_cap
}
"#,
    );
    tf.init();
    tf.assert_changes().assert_contains("(known after apply)");
    tf.apply();
    let b = tf.values("matrixhost_billing_plan.b");
    assert_eq!(b["plan"], "silver");
    assert_eq!(b["additional_users"], 10);
    tf.assert_no_changes();
    tf.destroy();
}

/// R12 end to end, through Stripe (localstripe), the real runtime, Synapse and Terraform: a
/// renewal that cannot be collected blocks the homeserver, Synapse refuses the login with the
/// block message, an apply fails with a clear error; paying the open invoice lifts the block.
#[tokio::test]
async fn r12_a_failed_payment_blocks_the_homeserver_until_it_is_paid() {
    use matrixhost_tests::runtime::{runtime_available, Matrix, RuntimeServer};
    use matrixhost_tests::stripe::{LocalStripe, CARD_OK, WEBHOOK_SECRET};
    if !runtime_available("r12_a_failed_payment_blocks_the_homeserver_until_it_is_paid") {
        return;
    }
    let stripe = LocalStripe::start().await;
    let keys = tempfile::tempdir().unwrap();
    let args = stripe.server_args(keys.path());
    let server = RuntimeServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    stripe.register_webhook("matrixhost", &server.url("/v1/stripe/webhook"), WEBHOOK_SECRET).await;
    let api = server.client();
    let card = stripe.card(CARD_OK).await;
    let hcl = |federation: bool| {
        format!(
            r#"
resource "matrixhost_billing_plan" "bp" {{
  plan              = "nickel"
  payment_method_id = "{card}"
}}

resource "matrixhost_homeserver" "hs" {{
  name               = "paid"
  region             = "us-east-1"
  billing_plan_id    = matrixhost_billing_plan.bp.id
  federation_enabled = {federation}
  volume {{
    size_gb = 1
  }}
  data_controller {{
    entity_name = "Acme Corp"
    admin_email = "it@acme.example"
  }}
}}

resource "matrixhost_reserved_user" "ops" {{
  homeserver_id    = matrixhost_homeserver.hs.id
  email            = "ops@acme.example"
  localpart        = "ops"
  initial_password = "correct horse battery staple"
}}
"#
        )
    };
    let tf = Terraform::new(&server);
    tf.write_main(&hcl(true));
    tf.init();
    tf.apply().assert_contains("matrixhost_homeserver.hs: Creation complete");
    let hs = tf.values("matrixhost_homeserver.hs");
    let matrix = Matrix::new(hs["client_url"].as_str().unwrap());
    let (status, body) = matrix.login("ops", "correct horse battery staple").await;
    assert_eq!(status, 200, "{body}");

    // The renewal is debited from an account that bounces; Stripe says so by webhook.
    let customer = stripe.only_customer().await;
    let subscription = stripe.get("/v1/subscriptions", &[("customer", &customer)]).await["data"][0]["id"].as_str().unwrap().to_owned();
    let bouncing = stripe.bouncing_debit().await;
    stripe.post(&format!("/v1/payment_methods/{bouncing}/attach"), &[("customer", &customer)]).await;
    stripe.post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", &bouncing)]).await;
    stripe.renew(&customer, &subscription).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    let blocked = matrixhost_tests::runtime::wait_for(&api, &id, "blocked", std::time::Duration::from_secs(90), |r| r.2["status"] == "blocked").await;
    let reason = blocked["status_reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("R12") && reason.contains("payment"), "{reason}");
    // Real Synapse refuses every login, with the block message.
    let (status, body) = matrix.login("ops", "correct horse battery staple").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_RESOURCE_LIMIT_EXCEEDED")), "{body}");
    assert_eq!(body["error"], reason.as_str());

    // An apply on the blocked homeserver fails, and says what to do.
    tf.write_main(&hcl(false));
    let out = tf.apply_fails();
    out.assert_says("is blocked: a payment failed").assert_says("until it is paid (R12)").assert_contains("/console/billing");

    // Paid: the open renewal is charged to a working card; the block lifts, logins work again.
    let good = stripe.card(CARD_OK).await;
    stripe.post(&format!("/v1/payment_methods/{good}/attach"), &[("customer", &customer)]).await;
    stripe.post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", &good)]).await;
    let open = stripe.invoices(&customer).await.into_iter().find(|i| i["status"] == "open").expect("the unpaid renewal");
    stripe.post(&format!("/v1/invoices/{}/pay", open["id"].as_str().unwrap()), &[]).await;
    matrixhost_tests::runtime::wait_for(&api, &id, "running", std::time::Duration::from_secs(90), |r| r.2["status"] == "running").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = matrix.login("ops", "correct horse battery staple").await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "logins did not come back: {status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    tf.apply().assert_contains("Apply complete");
    tf.assert_no_changes();
}
