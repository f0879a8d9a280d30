//! `/v1/homeservers/{id}/backup-policy` and `/backups` (R4).

mod common;
use common::*;

fn policy_path(hs: &Value) -> String {
    format!("{}/backup-policy", hs_path(hs))
}

/// Asserts `next` is the next `HH:MM` UTC after the request: in the future, within 24 hours, at
/// that wall-clock time.
#[track_caller]
fn assert_next_window(next: &Value, window: &str, sent_at: DateTime<Utc>) {
    let t = timestamp(next);
    assert!(t > sent_at - ChronoDuration::seconds(1), "next_backup_at {t} is not in the future (sent {sent_at})");
    assert!(t <= sent_at + ChronoDuration::hours(24), "next_backup_at {t} is more than 24 h away");
    assert_eq!(format!("{:02}:{:02}", t.hour(), t.minute()), window, "next_backup_at {t} is not at {window} UTC");
    assert_eq!((t.second(), t.nanosecond()), (0, 0), "next_backup_at {t} is not on the minute");
}

// R4
async fn r4_backup_policy_defaults_are_daily_encrypted_30_days(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let sent = now();
    let resp = c.post(&policy_path(&hs), &json!({})).await;
    let policy = expect_status(&resp, 201);
    let _: matrixhost_api::BackupPolicy = serde_json::from_value(policy.clone()).expect("a BackupPolicy");
    assert_eq!(policy["homeserver_id"], hs["id"]);
    assert_eq!(policy["schedule"], "daily");
    assert_eq!(policy["window_start"], "03:00");
    assert_eq!(policy["retention_days"], 30);
    assert_eq!(policy["encrypted"], true);
    assert_eq!(policy["last_backup_at"], Value::Null);
    assert_eq!(policy["version"], 1);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"1\""));
    assert_next_window(&policy["next_backup_at"], "03:00", sent);
    let got = c.get(&policy_path(&hs)).await;
    assert_eq!(expect_status(&got, 200), policy);
    assert_eq!(etag(&got.1).as_deref(), Some("\"1\""));
}
both_backends!(r4_backup_policy_defaults_are_daily_encrypted_30_days);

// R4
async fn r4_backup_window_is_the_next_occurrence(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    // A window a few minutes ago is tomorrow; one a few minutes ahead is today.
    for (name, offset_min) in [("soon", 5i64), ("past", -5)] {
        let hs = create_homeserver(&c, name, "silver").await;
        let sent = now();
        let w = sent + ChronoDuration::minutes(offset_min);
        let window = format!("{:02}:{:02}", w.hour(), w.minute());
        let policy = expect_status(&c.post(&policy_path(&hs), &json!({ "window_start": window })).await, 201);
        assert_eq!(policy["window_start"], window.as_str());
        assert_next_window(&policy["next_backup_at"], &window, sent);
        let next = timestamp(&policy["next_backup_at"]);
        if offset_min > 0 {
            assert!(next - sent < ChronoDuration::minutes(6), "{window}: {next} should be in a few minutes");
        } else {
            assert!(next - sent > ChronoDuration::hours(23), "{window}: {next} should be tomorrow");
        }
    }
}
both_backends!(r4_backup_window_is_the_next_occurrence);

// R4
async fn r4_one_backup_policy_per_homeserver(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let first = expect_status(&c.post(&policy_path(&hs), &json!({ "retention_days": 45 })).await, 201);
    assert_api_error(&c.post(&policy_path(&hs), &json!({ "retention_days": 10 })).await, 409, None, None);
    assert_eq!(expect_status(&c.get(&policy_path(&hs)).await, 200), first);
}
both_backends!(r4_one_backup_policy_per_homeserver);

// R4
async fn r4_backup_policy_update(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let policy = expect_status(&c.post(&policy_path(&hs), &json!({})).await, 201);
    let sent = now();
    let resp = c.put(&policy_path(&hs), &json!({ "window_start": "22:15", "retention_days": 14 })).await;
    let v2 = expect_status(&resp, 200);
    assert_eq!(v2["window_start"], "22:15");
    assert_eq!(v2["retention_days"], 14);
    assert_eq!(v2["schedule"], "daily");
    assert_eq!(v2["encrypted"], true);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["id"], policy["id"]);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"2\""));
    assert_next_window(&v2["next_backup_at"], "22:15", sent);
    assert_eq!(expect_status(&c.get(&policy_path(&hs)).await, 200), v2);
    // The bounds themselves are allowed.
    assert_eq!(expect_status(&c.put(&policy_path(&hs), &json!({ "retention_days": 7 })).await, 200)["retention_days"], 7);
    let max = expect_status(&c.put(&policy_path(&hs), &json!({ "retention_days": 365 })).await, 200);
    assert_eq!(max["retention_days"], 365);
    // PUT is the whole desired state: omitted fields go back to their defaults.
    assert_eq!(max["window_start"], "03:00");
    assert_eq!(max["version"], 4);
}
both_backends!(r4_backup_policy_update);

async fn backup_policy_delete(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    expect_status(&c.post(&policy_path(&hs), &json!({})).await, 201);
    let resp = c.delete(&policy_path(&hs)).await;
    assert_eq!(resp.0.as_u16(), 204, "{}", resp.2);
    assert_api_error(&c.get(&policy_path(&hs)).await, 404, Some("not_found"), None);
    assert_api_error(&c.put(&policy_path(&hs), &json!({})).await, 404, Some("not_found"), None);
    assert_api_error(&c.delete(&policy_path(&hs)).await, 404, Some("not_found"), None);
    // A new one can be made.
    let again = expect_status(&c.post(&policy_path(&hs), &json!({})).await, 201);
    assert_eq!(again["version"], 1);
}
both_backends!(backup_policy_delete);

// R4
async fn r4_backup_policy_input_is_validated(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let path = policy_path(&hs);
    for days in [6, 366, -1] {
        let msg = assert_invalid(&c.post(&path, &json!({ "retention_days": days })).await, "retention_days");
        assert!(msg.contains("R4"), "{msg}");
    }
    for window in ["24:00", "3:00", "03:60", "0300"] {
        assert_invalid(&c.post(&path, &json!({ "window_start": window })).await, "window_start");
    }
    assert_invalid(&c.post(&path, &json!({ "schedule": "hourly" })).await, "schedule");
    assert_rejects_field(&c.post(&path, &json!({ "encrypted": false })).await, "encrypted");
    assert_api_error(&c.get(&path).await, 404, Some("not_found"), None);

    // The same rules on update.
    expect_status(&c.post(&path, &json!({})).await, 201);
    assert!(assert_invalid(&c.put(&path, &json!({ "retention_days": 366 })).await, "retention_days").contains("R4"));
    assert_invalid(&c.put(&path, &json!({ "window_start": "24:00" })).await, "window_start");
    assert_invalid(&c.put(&path, &json!({ "schedule": "hourly" })).await, "schedule");
    assert_eq!(expect_status(&c.get(&path).await, 200)["version"], 1);
}
both_backends!(r4_backup_policy_input_is_validated);

async fn backup_policy_of_unknown_homeserver_is_not_found(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let missing = format!("/v1/homeservers/{}", sibling_id(&id(&hs)));
    assert_api_error(&c.post(&format!("{missing}/backup-policy"), &json!({})).await, 404, Some("not_found"), None);
    assert_api_error(&c.get(&format!("{missing}/backup-policy")).await, 404, Some("not_found"), None);
    assert_api_error(&c.get(&format!("{missing}/backups")).await, 404, Some("not_found"), None);
}
both_backends!(backup_policy_of_unknown_homeserver_is_not_found);

// R4
async fn r4_backups_list_is_empty_without_a_runtime(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    expect_status(&c.post(&policy_path(&hs), &json!({})).await, 201);
    let page = expect_status(&c.get(&format!("{}/backups", hs_path(&hs))).await, 200);
    assert_eq!(page, json!({ "items": [], "next_page_token": null }));
}
both_backends!(r4_backups_list_is_empty_without_a_runtime);

async fn backup_policy_if_match_rejects_stale_versions(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let path = policy_path(&hs);
    expect_status(&c.post(&path, &json!({})).await, 201);
    let v2 = expect_status(&c.if_version(1).put(&path, &json!({ "retention_days": 60 })).await, 200);
    assert_api_error(&c.if_version(1).put(&path, &json!({ "retention_days": 90 })).await, 409, Some("version_conflict"), None);
    assert_api_error(&c.if_version(1).delete(&path).await, 409, Some("version_conflict"), None);
    assert_eq!(expect_status(&c.get(&path).await, 200), v2);
    assert_eq!(c.if_version(2).delete(&path).await.0.as_u16(), 204);
}
both_backends!(backup_policy_if_match_rejects_stale_versions);

async fn backup_policy_idempotent_create(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let k = c.idempotency_key("bp-policy-1");
    let body = json!({ "retention_days": 40 });
    let first = k.post(&policy_path(&hs), &body).await;
    let created = expect_status(&first, 201);
    let retry = k.post(&policy_path(&hs), &body).await;
    assert_eq!((retry.0, &retry.2), (first.0, &created), "a retry replays the first response, not a 409");
}
both_backends!(backup_policy_idempotent_create);
