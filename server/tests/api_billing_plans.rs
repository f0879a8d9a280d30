//! `/v1/billing-plans`: subscriptions (R5, R8, R10, R11, R13, R15), optimistic concurrency and
//! idempotent creates.

mod common;
use common::*;

const BP: &str = "/v1/billing-plans";

fn bp_path(bp: &Value) -> String {
    format!("{BP}/{}", id(bp))
}

// R5, R10, R11
async fn billing_plan_create_defaults_and_reads_back(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let before = now();
    let resp = c.post(BP, &json!({ "plan": "silver" })).await;
    let after = now();
    let bp = expect_status(&resp, 201);
    let _: matrixhost_api::BillingPlan = serde_json::from_value(bp.clone()).expect("a BillingPlan");
    assert!(!id(&bp).is_empty());
    assert_eq!(bp["plan"], "silver");
    assert_eq!(bp["active_plan"], "silver");
    assert_eq!(bp["pending_plan"], Value::Null);
    assert_eq!(bp["pending_change_at"], Value::Null);
    assert_eq!(bp["billing_period"], "monthly");
    assert_eq!(bp["additional_users"], 0);
    assert_eq!(bp["payment_method_id"], Value::Null);
    assert_eq!(bp["status"], "active");
    assert_eq!(bp["mau_cap"], 50);
    assert_eq!(bp["version"], 1);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"1\""));
    let start = timestamp(&bp["current_period_start"]);
    assert_between(start, before, after, 5);
    // R11: paid in advance for one month.
    let end = timestamp(&bp["current_period_end"]);
    assert_eq!(end, start.checked_add_months(Months::new(1)).unwrap(), "monthly period end");

    let got = c.get(&bp_path(&bp)).await;
    assert_eq!(expect_status(&got, 200), bp, "GET reads back what POST returned");
    assert_eq!(etag(&got.1).as_deref(), Some("\"1\""));
    let list = expect_status(&c.get(BP).await, 200);
    assert_eq!(list["items"], json!([bp]));
    assert_eq!(list["next_page_token"], Value::Null);
}
both_backends!(billing_plan_create_defaults_and_reads_back);

// R11
async fn r11_annual_period_lasts_one_year(backend: Backend) {
    let server = start(backend).await;
    let bp = create_billing_plan_with(&server.client(), json!({ "plan": "gold", "billing_period": "annual" })).await;
    assert_eq!(bp["billing_period"], "annual");
    let start = timestamp(&bp["current_period_start"]);
    let end = timestamp(&bp["current_period_end"]);
    assert_eq!(end, start.checked_add_months(Months::new(12)).unwrap(), "annual period end");
}
both_backends!(r11_annual_period_lasts_one_year);

// R10
async fn r10_additional_users_raise_the_mau_cap(backend: Backend) {
    let server = start(backend).await;
    let bp = create_billing_plan_with(&server.client(), json!({ "plan": "nickel", "additional_users": 5 })).await;
    assert_eq!(bp["additional_users"], 5);
    assert_eq!(bp["mau_cap"], 15);
}
both_backends!(r10_additional_users_raise_the_mau_cap);

// R10
async fn r10_negative_additional_users_are_refused(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let resp = c.post(BP, &json!({ "plan": "nickel", "additional_users": -1 })).await;
    assert_invalid(&resp, "additional_users");
    assert_eq!(list_all(&c, BP).await.len(), 0);
}
both_backends!(r10_negative_additional_users_are_refused);

// R5
async fn r5_unknown_plan_tier_is_refused(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let msg = assert_invalid(&c.post(BP, &json!({ "plan": "diamond" })).await, "plan");
    assert!(msg.contains("diamond"), "{msg}");
    assert_invalid(&c.post(BP, &json!({ "plan": "Not A Tier" })).await, "plan");
    assert_invalid(&c.post(BP, &json!({ "plan": "silver", "billing_period": "weekly" })).await, "billing_period");
    assert_eq!(list_all(&c, BP).await.len(), 0);
}
both_backends!(r5_unknown_plan_tier_is_refused);

// R13
async fn r13_card_numbers_are_refused_and_never_echoed(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let card = "4242424242424242";
    let resp = c.post(BP, &json!({ "plan": "silver", "payment_method_id": card })).await;
    let msg = assert_invalid(&resp, "payment_method_id");
    assert!(msg.contains("R13"), "{msg}");
    assert!(!msg.contains("4242"), "the message echoes card digits: {msg}");
    assert!(!resp.2.to_string().contains("4242"), "the response echoes card digits: {}", resp.2);
    assert!(!server.log().contains(card), "the card number is in the server log");
    assert_eq!(list_all(&c, BP).await.len(), 0);

    // A processor id is what the API takes, and reads back.
    let bp = create_billing_plan_with(&c, json!({ "plan": "silver", "payment_method_id": "pm_1NxAbC" })).await;
    assert_eq!(bp["payment_method_id"], "pm_1NxAbC");
}
both_backends!(r13_card_numbers_are_refused_and_never_echoed);

// R15
async fn r15_unverified_email_cannot_subscribe(backend: Backend) {
    let server = start(backend).await;
    let org = unique_name("unverified");
    let token = server.create_unverified_token(&org).await;
    let c = server.client_with_token(&token);
    let me = expect_status(&c.get("/v1/organization").await, 200);
    assert_eq!(me["name"], org.as_str());
    assert_eq!(me["email_verified"], false);
    let resp = c.post(BP, &json!({ "plan": "silver" })).await;
    let msg = assert_api_error(&resp, 403, Some("email_not_verified"), None);
    assert!(msg.contains("R15") || msg.to_lowercase().contains("verif"), "{msg}");
    assert_eq!(list_all(&c, BP).await.len(), 0);
}
both_backends!(r15_unverified_email_cannot_subscribe);

// R11
async fn r11_upgrade_applies_at_once(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "silver").await;
    let resp = c.put(&bp_path(&bp), &json!({ "plan": "gold" })).await;
    let up = expect_status(&resp, 200);
    assert_eq!(up["plan"], "gold");
    assert_eq!(up["active_plan"], "gold");
    assert_eq!(up["pending_plan"], Value::Null);
    assert_eq!(up["pending_change_at"], Value::Null);
    assert_eq!(up["mau_cap"], 250);
    assert_eq!(up["version"], 2);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"2\""));
    // The period (and so the anniversary) does not move with an upgrade.
    assert_eq!(up["current_period_start"], bp["current_period_start"]);
    assert_eq!(up["current_period_end"], bp["current_period_end"]);
    assert_eq!(expect_status(&c.get(&bp_path(&bp)).await, 200), up);
}
both_backends!(r11_upgrade_applies_at_once);

// R11
async fn r11_downgrade_waits_for_the_anniversary(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "gold").await;
    let down = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "nickel" })).await, 200);
    assert_eq!(down["plan"], "nickel", "the plan reads back as requested");
    assert_eq!(down["active_plan"], "gold");
    assert_eq!(down["pending_plan"], "nickel");
    assert_eq!(timestamp(&down["pending_change_at"]), timestamp(&bp["current_period_end"]));
    assert_eq!(down["mau_cap"], 250, "gold's cap stays in force until the anniversary");
    assert_eq!(down["version"], 2);
    assert_eq!(expect_status(&c.get(&bp_path(&bp)).await, 200), down);
}
both_backends!(r11_downgrade_waits_for_the_anniversary);

// R11
async fn r11_downgrade_takes_effect_at_the_anniversary(backend: Backend) {
    let server = builder(backend).arg("--test-clock").start().await;
    let c = server.client();
    let bp = create_billing_plan(&c, "gold").await;
    let start = timestamp(&bp["current_period_start"]);
    let end = timestamp(&bp["current_period_end"]);
    expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "nickel" })).await, 200);

    // Not yet: half-way through the period nothing changes.
    let half = (end - start).num_seconds() / 2;
    let clock = expect_status(&c.post("/v1/_test/clock", &json!({ "advance_seconds": half })).await, 200);
    assert!(timestamp(&clock["now"]) < end, "{clock}");
    let mid = expect_status(&c.get(&bp_path(&bp)).await, 200);
    assert_eq!(mid["active_plan"], "gold");
    assert_eq!(mid["pending_plan"], "nickel");

    // Past the anniversary: the downgrade is in force and a new period has begun.
    let rest = (end - start).num_seconds() - half + 3600;
    let clock = expect_status(&c.post("/v1/_test/clock", &json!({ "advance_seconds": rest })).await, 200);
    assert!(timestamp(&clock["now"]) > end, "the clock did not pass the anniversary: {clock}");
    let after = expect_status(&c.get(&bp_path(&bp)).await, 200);
    assert_eq!(after["plan"], "nickel");
    assert_eq!(after["active_plan"], "nickel");
    assert_eq!(after["pending_plan"], Value::Null);
    assert_eq!(after["pending_change_at"], Value::Null);
    assert_eq!(after["mau_cap"], 10);
    assert_eq!(timestamp(&after["current_period_start"]), end, "the new period starts at the anniversary");
    // Anniversaries keep the day of the original start (Jan 31 → Feb 28 → Mar 31).
    assert_eq!(
        timestamp(&after["current_period_end"]),
        start.checked_add_months(Months::new(2)).unwrap(),
        "the next anniversary is one month later"
    );
    let listed = list_all(&c, BP).await;
    assert_eq!(listed, vec![after], "the list shows the same state as GET");
}
both_backends!(r11_downgrade_takes_effect_at_the_anniversary);

// R11
async fn r11_upgrade_cancels_a_pending_downgrade(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "gold").await;
    expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "nickel" })).await, 200);
    let up = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "platinum" })).await, 200);
    assert_eq!(up["plan"], "platinum");
    assert_eq!(up["active_plan"], "platinum");
    assert_eq!(up["pending_plan"], Value::Null);
    assert_eq!(up["pending_change_at"], Value::Null);
    assert_eq!(up["mau_cap"], 1000);
    assert_eq!(up["version"], 3);
}
both_backends!(r11_upgrade_cancels_a_pending_downgrade);

// R11
async fn r11_asking_for_the_active_plan_again_cancels_a_pending_downgrade(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "gold").await;
    expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "silver" })).await, 200);
    let back = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "gold" })).await, 200);
    assert_eq!(back["plan"], "gold");
    assert_eq!(back["active_plan"], "gold");
    assert_eq!(back["pending_plan"], Value::Null);
    assert_eq!(back["pending_change_at"], Value::Null);
    assert_eq!(back["mau_cap"], 250);
}
both_backends!(r11_asking_for_the_active_plan_again_cancels_a_pending_downgrade);

// R10
async fn r10_changing_additional_users_changes_the_cap(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "silver").await;
    let more = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "silver", "additional_users": 25 })).await, 200);
    assert_eq!(more["mau_cap"], 75);
    assert_eq!(more["additional_users"], 25);
    let fewer = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "silver", "additional_users": 5 })).await, 200);
    assert_eq!(fewer["mau_cap"], 55);
    assert_eq!(fewer["version"], 3);
}
both_backends!(r10_changing_additional_users_changes_the_cap);

async fn billing_plan_update_validates_like_create(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "silver").await;
    assert_invalid(&c.put(&bp_path(&bp), &json!({ "plan": "diamond" })).await, "plan");
    assert_invalid(&c.put(&bp_path(&bp), &json!({ "plan": "silver", "additional_users": -1 })).await, "additional_users");
    let msg = assert_invalid(
        &c.put(&bp_path(&bp), &json!({ "plan": "silver", "payment_method_id": "4000056655665556" })).await,
        "payment_method_id",
    );
    assert!(msg.contains("R13") && !msg.contains("4000"), "{msg}");
    assert_rejects_field(&c.put(&bp_path(&bp), &json!({ "plan": "silver", "colour": "red" })).await, "colour");
    assert_eq!(expect_status(&c.get(&bp_path(&bp)).await, 200), bp, "refused updates change nothing");
    // Unknown id.
    let missing = format!("{BP}/{}", sibling_id(&id(&bp)));
    assert_api_error(&c.put(&missing, &json!({ "plan": "silver" })).await, 404, Some("not_found"), None);
}
both_backends!(billing_plan_update_validates_like_create);

async fn billing_plan_delete(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "silver").await;
    let resp = c.delete(&bp_path(&bp)).await;
    assert_eq!(resp.0.as_u16(), 204, "{}", resp.2);
    assert_eq!(resp.2, Value::Null, "204 has no body");
    assert_api_error(&c.get(&bp_path(&bp)).await, 404, Some("not_found"), None);
    assert_api_error(&c.delete(&bp_path(&bp)).await, 404, Some("not_found"), None);
    assert_eq!(list_all(&c, BP).await.len(), 0);
}
both_backends!(billing_plan_delete);

async fn billing_plan_in_use_cannot_be_deleted(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let bp_id = hs["billing_plan_id"].as_str().unwrap().to_owned();
    let path = format!("{BP}/{bp_id}");
    let before = expect_status(&c.get(&path).await, 200);
    let msg = assert_api_error(&c.delete(&path).await, 409, Some("in_use"), None);
    assert!(msg.contains("chat"), "the message should name the homeserver: {msg}");
    assert!(msg.contains(&id(&hs)), "the message should give the homeserver's id: {msg}");
    assert_eq!(expect_status(&c.get(&path).await, 200), before);

    // Once the homeserver is gone, the plan can go.
    assert_eq!(c.delete(&hs_path(&hs)).await.0.as_u16(), 204);
    assert_eq!(c.delete(&path).await.0.as_u16(), 204);
}
both_backends!(billing_plan_in_use_cannot_be_deleted);

/// A homeserver on `tier` (+ `additional_users`) with `n` reserved users.
async fn homeserver_with_reserved(c: &Client, tier: &str, additional_users: u32, n: usize) -> (Value, Value) {
    let bp = create_billing_plan_with(c, json!({ "plan": tier, "additional_users": additional_users })).await;
    let hs = create_homeserver_with(c, homeserver_body("busy", &id(&bp))).await;
    for i in 0..n {
        create_reserved_user(c, &hs, &format!("user{i}@example.com")).await;
    }
    (bp, hs)
}

// R8, R11
async fn r8_downgrade_below_reserved_users_is_refused(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let (bp, _hs) = homeserver_with_reserved(&c, "silver", 0, 12).await;
    let resp = c.put(&bp_path(&bp), &json!({ "plan": "nickel" })).await;
    let msg = assert_api_error(&resp, 409, Some("plan_limit"), Some("plan"));
    assert!(msg.contains("R8"), "{msg}");
    assert!(msg.contains("12 reserved users"), "{msg}");
    assert!(msg.contains("cap of 10"), "{msg}");
    assert_eq!(expect_status(&c.get(&bp_path(&bp)).await, 200), bp, "nothing changed");
    // Buying Additional Users makes room for the downgrade.
    let ok = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "nickel", "additional_users": 2 })).await, 200);
    assert_eq!(ok["pending_plan"], "nickel");
}
both_backends!(r8_downgrade_below_reserved_users_is_refused);

// R8, R10
async fn r10_removing_additional_users_below_reserved_users_is_refused(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let (bp, _hs) = homeserver_with_reserved(&c, "nickel", 2, 12).await;
    assert_eq!(bp["mau_cap"], 12);
    let resp = c.put(&bp_path(&bp), &json!({ "plan": "nickel", "additional_users": 1 })).await;
    let msg = assert_api_error(&resp, 409, Some("plan_limit"), Some("additional_users"));
    assert!(msg.contains("12 reserved users") && msg.contains("cap of 11"), "{msg}");
    assert_eq!(expect_status(&c.get(&bp_path(&bp)).await, 200), bp, "nothing changed");
    // Keeping the cap, or upgrading, is fine.
    let same = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "nickel", "additional_users": 2 })).await, 200);
    assert_eq!(same["mau_cap"], 12);
    let up = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "silver" })).await, 200);
    assert_eq!(up["mau_cap"], 50);
}
both_backends!(r10_removing_additional_users_below_reserved_users_is_refused);

// ------------------------------------------------------------- optimistic concurrency -----

async fn billing_plan_if_match_rejects_stale_versions(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "silver").await;
    let v2 = expect_status(&c.if_version(1).put(&bp_path(&bp), &json!({ "plan": "gold" })).await, 200);
    assert_eq!(v2["version"], 2);

    // Stale: based on version 1.
    let stale = c.if_version(1).put(&bp_path(&bp), &json!({ "plan": "platinum" })).await;
    assert_api_error(&stale, 409, Some("version_conflict"), None);
    let stale_bare = c.if_match("1").put(&bp_path(&bp), &json!({ "plan": "platinum" })).await;
    assert_api_error(&stale_bare, 409, Some("version_conflict"), None);
    assert_api_error(&c.if_version(1).delete(&bp_path(&bp)).await, 409, Some("version_conflict"), None);
    assert_eq!(expect_status(&c.get(&bp_path(&bp)).await, 200), v2, "stale writes change nothing");

    // Current: the ETag as it came back.
    let got = c.get(&bp_path(&bp)).await;
    let tag = etag(&got.1).expect("an ETag");
    assert_eq!(tag, "\"2\"");
    let v3 = expect_status(&c.if_match(&tag).put(&bp_path(&bp), &json!({ "plan": "platinum" })).await, 200);
    assert_eq!(v3["version"], 3);
    // Without If-Match the write is unconditional.
    let v4 = expect_status(&c.put(&bp_path(&bp), &json!({ "plan": "platinum", "additional_users": 1 })).await, 200);
    assert_eq!(v4["version"], 4);
    assert_eq!(c.if_version(4).delete(&bp_path(&bp)).await.0.as_u16(), 204);
}
both_backends!(billing_plan_if_match_rejects_stale_versions);

// ------------------------------------------------------------------------ idempotency -----

async fn idempotent_create_replays_the_first_result(backend: Backend) {
    let server = start(backend).await;
    let c = server.client().idempotency_key("create-bp-1");
    let body = json!({ "plan": "silver", "additional_users": 3 });
    let first = c.post(BP, &body).await;
    let created = expect_status(&first, 201);
    let retry = c.post(BP, &body).await;
    assert_eq!(retry.0, first.0, "same status");
    assert_eq!(retry.2, created, "same body");
    assert_eq!(list_all(&server.client(), BP).await.len(), 1, "one resource");

    // Without a key, the same body creates another one.
    create_billing_plan_with(&server.client(), body.clone()).await;
    assert_eq!(list_all(&server.client(), BP).await.len(), 2);
}
both_backends!(idempotent_create_replays_the_first_result);

async fn idempotency_key_reused_with_another_body_is_refused(backend: Backend) {
    let server = start(backend).await;
    let c = server.client().idempotency_key("create-bp-2");
    expect_status(&c.post(BP, &json!({ "plan": "silver" })).await, 201);
    let resp = c.post(BP, &json!({ "plan": "gold" })).await;
    assert_api_error(&resp, 409, Some("idempotency_key_reused"), None);
    let items = list_all(&server.client(), BP).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["plan"], "silver");
}
both_backends!(idempotency_key_reused_with_another_body_is_refused);

async fn idempotency_keys_are_per_organization(backend: Backend) {
    let server = start(backend).await;
    let other = server.create_token(&unique_name("other")).await;
    let body = json!({ "plan": "silver" });
    let a = expect_status(&server.client().idempotency_key("shared-key").post(BP, &body).await, 201);
    let b = expect_status(&server.client_with_token(&other).idempotency_key("shared-key").post(BP, &body).await, 201);
    assert_ne!(id(&a), id(&b), "another organization's key must not replay this one's resource");
    assert_eq!(list_all(&server.client(), BP).await.len(), 1);
    assert_eq!(list_all(&server.client_with_token(&other), BP).await.len(), 1);
}
both_backends!(idempotency_keys_are_per_organization);

/// A key is remembered for 24 hours: before that it replays, after it a new create happens
/// (the expired key is forgotten by the create itself, without a scan of every key).
async fn idempotency_keys_expire_after_a_day(backend: Backend) {
    let server = builder(backend).arg("--test-clock").start().await;
    let c = server.client().idempotency_key("daily-key");
    let first = expect_status(&c.post(BP, &json!({ "plan": "silver" })).await, 201);
    expect_status(&server.client().post("/v1/_test/clock", &json!({ "advance_seconds": 23 * 3600 })).await, 200);
    let replay = expect_status(&c.post(BP, &json!({ "plan": "silver" })).await, 201);
    assert_eq!(id(&replay), id(&first), "within 24 hours the key replays");
    expect_status(&server.client().post("/v1/_test/clock", &json!({ "advance_seconds": 2 * 3600 })).await, 200);
    let fresh = expect_status(&c.post(BP, &json!({ "plan": "gold" })).await, 201);
    assert_ne!(id(&fresh), id(&first), "after 24 hours the key is a new one");
    assert_eq!(fresh["plan"], "gold");
    assert_eq!(list_all(&server.client(), BP).await.len(), 2);
}
both_backends!(idempotency_keys_expire_after_a_day);

async fn idempotent_concurrent_retries_create_one_resource(backend: Backend) {
    let server = start(backend).await;
    let c = server.client().idempotency_key("concurrent-bp");
    let body = json!({ "plan": "gold" });
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (c, body) = (c.clone(), body.clone());
        set.spawn(async move { c.post(BP, &body).await });
    }
    let mut ids = Vec::new();
    while let Some(resp) = set.join_next().await {
        let resp = resp.expect("task");
        match resp.0.as_u16() {
            201 => ids.push(id(&resp.2)),
            // A retry that races the first request may be told to retry later.
            409 => {
                assert_api_error(&resp, 409, None, None);
            }
            other => panic!("unexpected status {other}: {}", resp.2),
        }
    }
    assert!(!ids.is_empty(), "no request succeeded");
    assert!(ids.iter().all(|i| i == &ids[0]), "different resources: {ids:?}");
    let items = list_all(&server.client(), BP).await;
    assert_eq!(items.len(), 1, "exactly one resource: {items:?}");
    assert_eq!(id(&items[0]), ids[0]);
}
both_backends!(idempotent_concurrent_retries_create_one_resource);

async fn concurrent_writers_with_the_same_version_one_wins(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan(&c, "silver").await;
    let mut set = tokio::task::JoinSet::new();
    for extra in 1..=6 {
        let (c, path) = (c.if_version(1), bp_path(&bp));
        set.spawn(async move { c.put(&path, &json!({ "plan": "silver", "additional_users": extra })).await });
    }
    let mut winners = Vec::new();
    while let Some(resp) = set.join_next().await {
        let resp = resp.expect("task");
        match resp.0.as_u16() {
            200 => winners.push(resp.2),
            _ => {
                assert_api_error(&resp, 409, Some("version_conflict"), None);
            }
        }
    }
    assert_eq!(winners.len(), 1, "several writers based on version 1 won: {winners:?}");
    let got = expect_status(&c.get(&bp_path(&bp)).await, 200);
    assert_eq!(got["version"], 2);
    assert_eq!(got, winners[0], "the stored state is the winner's");
}
both_backends!(concurrent_writers_with_the_same_version_one_wins);

// ------------------------------------------------------------------ Stripe webhooks -----

const WEBHOOK: &str = "/v1/stripe/webhook";
const WEBHOOK_SECRET: &str = "whsec_matrixhost_test";

/// Stripe's documented scheme, computed here independently of the server's code.
fn stripe_signature(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_webhook(server: &TestServer, signature: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(server.url(WEBHOOK)).header("content-type", "application/json").body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Signed events are taken once, and nothing unsigned, forged or stale is (R12's input).
async fn stripe_webhooks_take_only_signed_fresh_events_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("whsec");
    std::fs::write(&secret_file, format!("{WEBHOOK_SECRET}\n")).unwrap();
    let server = builder(backend).args(["--stripe-webhook-secret-file", secret_file.to_str().unwrap()]).start().await;
    let now = chrono::Utc::now().timestamp();
    let body = format!(r#"{{"id":"evt_test_1","type":"invoice.payment_failed","created":{now},"data":{{"object":{{"id":"in_1","subscription":"sub_nobody"}}}}}}"#);

    let (status, receipt) = post_webhook(&server, Some(&stripe_signature(WEBHOOK_SECRET, now, &body)), &body).await;
    assert_eq!((status, receipt["outcome"].as_str()), (200, Some("unknown_subscription")), "{receipt}");
    // Stripe delivers at least once: the same event again is a duplicate, still a 200.
    let (status, receipt) = post_webhook(&server, Some(&stripe_signature(WEBHOOK_SECRET, now, &body)), &body).await;
    assert_eq!((status, receipt["outcome"].as_str()), (200, Some("duplicate")), "{receipt}");

    let refused = [
        ("unsigned", None),
        ("forged", Some(stripe_signature("whsec_attacker", now, &body))),
        ("replayed after 10 minutes", Some(stripe_signature(WEBHOOK_SECRET, now - 600, &body))),
        ("malformed", Some("v1=abc".to_owned())),
    ];
    for (what, signature) in refused {
        let (status, error) = post_webhook(&server, signature.as_deref(), &body).await;
        assert_eq!(status, 401, "{what}: {error}");
        assert_eq!(error["code"], "invalid_signature", "{what}: {error}");
        assert_eq!(error["field"], "Stripe-Signature", "{what}: {error}");
        assert!(!error.to_string().contains(WEBHOOK_SECRET), "{what}: {error}");
    }
    // A signed body that is no event.
    let (status, error) = post_webhook(&server, Some(&stripe_signature(WEBHOOK_SECRET, now, "[]")), "[]").await;
    assert_eq!((status, error["code"].as_str()), (400, Some("invalid_body")), "{error}");
    assert!(!server.log().contains(WEBHOOK_SECRET), "the signing secret reached the log");
}
both_backends!(stripe_webhooks_take_only_signed_fresh_events_once);

/// Without a signing secret the server takes no webhooks at all.
async fn stripe_webhooks_are_off_without_a_secret(backend: Backend) {
    let server = start(backend).await;
    let now = chrono::Utc::now().timestamp();
    let body = format!(r#"{{"id":"evt_test_2","type":"invoice.paid","created":{now},"data":{{"object":{{}}}}}}"#);
    let (status, error) = post_webhook(&server, Some(&stripe_signature(WEBHOOK_SECRET, now, &body)), &body).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")), "{error}");
}
both_backends!(stripe_webhooks_are_off_without_a_secret);
