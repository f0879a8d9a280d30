//! The console in real headless Chromium (Debian's, driven by playwright-core), with mail
//! through a real SMTP server and the token it makes used by the real Terraform provider:
//! sign up and verify, log in, create a token, apply with it, log out, reset the password,
//! change the email address, export the data and delete the account.

use std::path::Path;
use std::process::Command;

use matrixhost_tests::backups::advance_clock;
use matrixhost_tests::mail::{wait_for_mail, SmtpServer};
use matrixhost_tests::stripe::{LocalStripe, CARD_DECLINED, CARD_OK, WEBHOOK_SECRET};
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{assert_api_error, expect_status, timestamp, tools_dir, workspace_bin, workspace_root, Backend, TestServer, Value};

const EMAIL: &str = "it-lead@acme.example";
const NEW_EMAIL: &str = "platform@acme.example";
const PASSWORD: &str = "harbour lights ninety";
const NEW_PASSWORD: &str = "winter orchard seven";

/// Runs one phase of `tests/browser/console_flow.cjs`; returns what it wrote.
fn browser_phase(phase: &str, server: &TestServer, smtp: &SmtpServer, work: &Path) -> Value {
    let playwright = tools_dir().join("browser/node_modules/playwright-core");
    assert!(playwright.exists(), "{} is missing; run scripts/setup.sh", playwright.display());
    let out_file = work.join(format!("{phase}.json"));
    let output = Command::new("node")
        .arg(workspace_root().join("tests/browser/console_flow.cjs"))
        .arg(phase)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CONSOLE_URL", server.base_url())
        .env("MAILDIR", smtp.maildir())
        .env("STATE_FILE", work.join("browser-state.json"))
        .env("OUT_FILE", &out_file)
        .env("EMAIL", EMAIL)
        .env("NEW_EMAIL", NEW_EMAIL)
        .env("ORG", "acme")
        .env("PASSWORD", PASSWORD)
        .env("NEW_PASSWORD", NEW_PASSWORD)
        .env("DECLINED_CARD", CARD_DECLINED)
        .env("GOOD_CARD", CARD_OK)
        .output()
        .expect("running node");
    assert!(
        output.status.success(),
        "browser phase `{phase}` failed:\n{}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    serde_json::from_slice(&std::fs::read(&out_file).expect("the phase's result")).expect("JSON")
}

#[tokio::test]
async fn a_customer_goes_from_sign_up_to_deletion_in_a_real_browser() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).args(["--test-clock", "--smtp-url", &smtp.url()]).start().await;
    let work = tempfile::tempdir().unwrap();

    let signed_up = browser_phase("signup", &server, &smtp, work.path());
    let token = signed_up["token"].as_str().expect("the token the console showed").to_owned();

    // The console's token drives the Terraform provider; the billing plan needs the verified
    // address (R15), so this also proves the verification took.
    let tf = Terraform::with_credentials(Some(&server.base_url()), Some(&token));
    tf.write_main("resource \"matrixhost_billing_plan\" \"bp\" {\n  plan = \"nickel\"\n}\n");
    tf.init();
    tf.apply().assert_contains("Creation complete");
    tf.assert_no_changes();
    let plan_id = tf.values("matrixhost_billing_plan.bp")["id"].as_str().unwrap().to_owned();

    let rest = browser_phase("rest", &server, &smtp, work.path());
    let export: Value = serde_json::from_slice(&std::fs::read(rest["exportFile"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(export["account"]["email"], NEW_EMAIL, "the export has the changed address");
    assert_eq!(export["billing_plans"][0]["id"], plan_id.as_str(), "and the plan Terraform made");
    assert!(export["access_log"].as_array().unwrap().iter().any(|e| e["path"] == "/v1/billing-plans" && e["ip"] == "127.0.0.1"), "R17 entries");
    assert!(export["account"]["deletion_due_at"].is_null(), "exported before the deletion was asked");

    // The API still answers during the grace period; after it, everything is gone.
    let api = server.client().with_token(&token);
    expect_status(&api.get(&format!("/v1/billing-plans/{plan_id}")).await, 200);
    advance_clock(&server.client(), 7 * 86_400 + 60).await;
    wait_for_mail(&smtp.maildir(), NEW_EMAIL, "account was deleted", 0).await;
    assert_api_error(&api.get("/v1/billing-plans").await, 401, None, None);
    for secret in [PASSWORD, NEW_PASSWORD, &token[3..]] {
        assert!(!server.log().contains(secret), "a secret reached the server log");
    }
}

/// R13 in a real browser: the card goes from Stripe.js (localstripe's) to Stripe, never to
/// matrixhost; a declined card gets a clear message; the billing contact's change is logged; a
/// plan Terraform makes is paid with the card on file; its invoice is reached through a link
/// that is long, unindexed and expiring.
#[tokio::test]
async fn a_card_goes_through_stripe_js_and_invoices_open_through_expiring_links() {
    let smtp = SmtpServer::start().await;
    let stripe = LocalStripe::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = stripe.server_args(dir.path());
    args.extend(["--test-clock".to_owned(), "--smtp-url".to_owned(), smtp.url()]);
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).args(args).start().await;
    stripe.register_webhook("matrixhost", &server.url("/v1/stripe/webhook"), WEBHOOK_SECRET).await;
    let work = tempfile::tempdir().unwrap();

    let token = browser_phase("signup", &server, &smtp, work.path())["token"].as_str().unwrap().to_owned();
    let card = browser_phase("card", &server, &smtp, work.path());
    assert!(card["refusal"].as_str().unwrap().contains("Your card was declined."), "{card}");

    // Terraform's plan is paid in advance with the card on file: Nickel, 10 × $5.00.
    let tf = Terraform::with_credentials(Some(&server.base_url()), Some(&token));
    tf.write_main("resource \"matrixhost_billing_plan\" \"bp\" {\n  plan = \"nickel\"\n}\n");
    tf.init();
    tf.apply().assert_contains("Creation complete");
    let values = tf.values("matrixhost_billing_plan.bp");
    assert_eq!((values["card_brand"].as_str(), values["card_last4"].as_str()), (Some("visa"), Some("4242")), "{values}");

    let seen = browser_phase("invoices", &server, &smtp, work.path());
    assert!(seen["robots"].as_str().unwrap().contains("noindex"), "{seen}");
    let text = seen["invoiceText"].as_str().unwrap();
    assert!(text.contains("$50.00") && text.contains("Nickel") && text.contains("paid"), "{text}");
    assert!(seen["upcoming"].as_str().unwrap().contains("$50.00"), "the next month: {seen}");
    let url = seen["invoiceUrl"].as_str().unwrap().to_owned();
    let secret = url.rsplit('/').next().unwrap();
    assert!(secret.len() >= 43 && secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "at least 256 bits: {url}");

    // The link works without a session (it can go to whoever pays), is never indexed or cached.
    let http = reqwest::Client::new();
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["x-robots-tag"].to_str().unwrap().contains("noindex"));
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let robots = http.get(server.url("/robots.txt")).send().await.unwrap().text().await.unwrap();
    assert!(robots.contains("Disallow: /invoices/"), "{robots}");
    // A guessed link and, a week later, the real one: not found.
    let guessed = format!("{}/invoices/{}", server.base_url(), "0".repeat(secret.len()));
    assert_eq!(http.get(&guessed).send().await.unwrap().status(), 404);
    advance_clock(&server.client(), 7 * 86_400 + 60).await;
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404, "links expire");

    // A plan change in HCL goes through the same flows: the upgrade to Silver (50 MAU at $4.00)
    // is charged now, with the unused part of Nickel's month credited.
    let customer_id = stripe.only_customer().await;
    let before = tf.values("matrixhost_billing_plan.bp");
    let known: Vec<Value> = stripe.invoices(&customer_id).await;
    tf.write_main("resource \"matrixhost_billing_plan\" \"bp\" {\n  plan = \"silver\"\n}\n");
    tf.apply().assert_contains("Modifications complete");
    let after = tf.values("matrixhost_billing_plan.bp");
    assert_eq!(after["active_plan"], "silver");
    let (start, end, at) = (timestamp(&before["current_period_start"]), timestamp(&before["current_period_end"]), timestamp(&after["current_period_start"]));
    let credit = ((5000.0 * (end - at).num_seconds() as f64) / (end - start).num_seconds() as f64).round() as i64;
    let fresh: Vec<Value> = stripe.invoices(&customer_id).await.into_iter().filter(|i| !known.iter().any(|k| k["id"] == i["id"])).collect();
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!((fresh[0]["status"].as_str(), fresh[0]["total"].as_i64()), (Some("paid"), Some(50 * 400 - credit)), "{}", fresh[0]);

    // A declined card named in HCL: the apply fails with the processor's reason, nothing changes.
    let declined = stripe.card(CARD_DECLINED).await;
    tf.write_main(&format!("resource \"matrixhost_billing_plan\" \"bp\" {{\n  plan = \"silver\"\n  payment_method_id = \"{declined}\"\n}}\n"));
    tf.apply_fails().assert_says("payment_method_id: the card was refused: Your card was declined. Nothing was changed.").assert_says("HTTP 402 `payment_failed`");
    let remote = expect_status(&server.client().with_token(&token).get(&format!("/v1/billing-plans/{}", after["id"].as_str().unwrap())).await, 200);
    assert_eq!(remote["card"]["last4"], "4242", "{remote}");

    // The billing contact's address became the Stripe customer's; the card number never
    // reached matrixhost (R13).
    let customer = stripe.get(&format!("/v1/customers/{customer_id}"), &[]).await;
    assert_eq!(customer["email"], "ap@acme.example");
    assert!(!server.log().contains(CARD_OK) && !server.log().contains(CARD_DECLINED), "{}", server.log());
}
