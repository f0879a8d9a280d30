//! Stripe's webhook against localstripe, the Stripe emulator: events it signs and delivers
//! reach matrixhostd and are taken once; a webhook registered with another secret is refused.

use std::time::{Duration, Instant};

use matrixhost_tests::stripe::LocalStripe;
use matrixhost_tests::{workspace_bin, Backend, TestServer};

/// Waits until matrixhostd's log has a line with every one of `needles`.
async fn log_line(server: &TestServer, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = server.log().lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no log line with {needles:?}:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn localstripe_events_are_verified_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "whsec_localstripe_test";
    std::fs::write(dir.path().join("whsec"), secret).unwrap();
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite)
        .args(["--stripe-webhook-secret-file", dir.path().join("whsec").to_str().unwrap()])
        .start()
        .await;
    let stripe = LocalStripe::start().await;
    stripe.register_webhook("matrixhost", &server.url("/v1/stripe/webhook"), secret).await;
    // An attacker's endpoint registration: same events, another secret.
    stripe.register_webhook("forger", &server.url("/v1/stripe/webhook"), "whsec_not_ours").await;

    let customer = stripe.post("/v1/customers", &[("email", "billing@acme.example")]).await;
    let customer_id = customer["id"].as_str().unwrap();
    assert!(customer_id.starts_with("cus_"), "{customer}");

    // localstripe's `customer.created`, signed by localstripe: taken, recorded, not acted on.
    let line = log_line(&server, &["Stripe event", "customer.created", "outcome=\"ignored\""]).await;
    let event_id = line.split("event_id=").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("an event id").to_owned();
    assert!(event_id.starts_with("evt_"), "{line}");
    // The same event from the forger's registration failed the signature check.
    log_line(&server, &["refused a Stripe webhook", "no v1 signature"]).await;
    // Each event once: exactly one handling line for this id.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handled = server.log().lines().filter(|l| l.contains("Stripe event") && l.contains(&event_id)).count();
    assert_eq!(handled, 1, "{}", server.log());
    // What the customer sent Stripe (their email) is not in matrixhost's log (R13).
    assert!(!server.log().contains("billing@acme.example"), "{}", server.log());
}
