//! Shared by the API test files: start this package's `matrixhostd` and build common resources.
#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use matrixhost_tests::chrono::{DateTime, Duration as ChronoDuration, Months, Timelike, Utc};
pub use matrixhost_tests::*;

/// The binary under test, built by cargo for this package's integration tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_matrixhostd"))
}

pub async fn start(backend: Backend) -> TestServer {
    TestServer::start(bin(), backend).await
}

pub fn builder(backend: Backend) -> ServerBuilder {
    TestServer::builder(bin(), backend)
}

/// An initial password that must never come back in a response or show up in a log (R14).
pub const PASSWORD: &str = "Correct-Horse-Battery-7731";

/// The platform domain of default server names.
pub const PLATFORM_DOMAIN: &str = "matrixhost.localhost";

pub async fn create_billing_plan_with(c: &Client, body: Value) -> Value {
    let resp = c.post("/v1/billing-plans", &body).await;
    expect_status(&resp, 201)
}

/// A monthly billing plan on `tier` without Additional Users.
pub async fn create_billing_plan(c: &Client, tier: &str) -> Value {
    create_billing_plan_with(c, json!({ "plan": tier })).await
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_owned()
}

/// A minimal valid homeserver body (10 GB encrypted volume, us-east-1).
pub fn homeserver_body(name: &str, billing_plan_id: &str) -> Value {
    json!({
        "name": name,
        "region": "us-east-1",
        "billing_plan_id": billing_plan_id,
        "volume": { "size_gb": 10, "encrypted": true },
        "data_controller": { "entity_name": "Example Corp", "admin_email": "dpo@example.com" }
    })
}

/// The mutable settings of a homeserver as `PUT /v1/homeservers/{id}` takes them, read from a
/// homeserver response.
pub fn settings_of(hs: &Value) -> Value {
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

pub async fn create_homeserver_with(c: &Client, body: Value) -> Value {
    let resp = c.post("/v1/homeservers", &body).await;
    expect_status(&resp, 201)
}

/// A billing plan on `tier` and a homeserver `name` on it; returns the homeserver.
pub async fn create_homeserver(c: &Client, name: &str, tier: &str) -> Value {
    let bp = create_billing_plan(c, tier).await;
    create_homeserver_with(c, homeserver_body(name, &id(&bp))).await
}

pub fn hs_path(hs: &Value) -> String {
    format!("/v1/homeservers/{}", id(hs))
}

pub async fn create_reserved_user(c: &Client, hs: &Value, email: &str) -> Value {
    let resp = c.post(&format!("{}/reserved-users", hs_path(hs)), &json!({ "email": email })).await;
    expect_status(&resp, 201)
}

/// All items of a list, following `next_page_token`.
pub async fn list_all(c: &Client, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let url = match &token {
            Some(t) => format!("{path}{sep}page_token={}", query_escape(t)),
            None => path.to_owned(),
        };
        let page = expect_status(&c.get(&url).await, 200);
        items.extend(page["items"].as_array().unwrap_or_else(|| panic!("no items in {page}")).iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return items,
        }
    }
    panic!("{path}: more than 1000 pages");
}

/// A syntactically plausible id that does not exist: `real` with its last character changed.
pub fn sibling_id(real: &str) -> String {
    let mut s = real.to_owned();
    let last = s.pop().expect("non-empty id");
    s.push(if last == '0' { '1' } else { '0' });
    s
}

/// Now, by the test's clock.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Asserts `t` is within `slack_secs` of the interval [from, to].
#[track_caller]
pub fn assert_between(t: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>, slack_secs: i64) {
    let slack = ChronoDuration::seconds(slack_secs);
    assert!(t >= from - slack && t <= to + slack, "{t} is not between {from} and {to} (±{slack_secs}s)");
}
