//! The backup and restore API without a runtime (R4, R18), on SQLite and PostgreSQL: refusals,
//! retention, erasure and the policy's dates. Backups are seeded as rows, since without a
//! runtime (and its node agent, which keeps the archives) nothing is backed up; the real thing,
//! archives included, is in `backups_restore.rs` and `backups_schedule.rs`.

mod common;
use common::*;

/// Runs SQL against the server's database (sqlite3 or psql).
fn sql(server: &TestServer, statement: &str) {
    let out = match server.database_url() {
        None => std::process::Command::new("sqlite3").args(["-cmd", ".timeout 5000"]).arg(server.state_dir().join(SQLITE_FILE)).arg(statement).output().unwrap(),
        Some(url) => std::process::Command::new("psql").args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement]).output().unwrap(),
    };
    assert!(out.status.success(), "{statement}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A backup row (without an archive: only the node agent keeps those).
fn seed_backup(server: &TestServer, org: &str, hs: &str, id: &str, started: DateTime<Utc>, expires: DateTime<Utc>, status: &str) {
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    sql(
        server,
        &format!(
            "INSERT INTO backups (id, org_id, homeserver_id, status, kind, started_at, finished_at, size_bytes, expires_at) \
             VALUES ('{id}', '{org}', '{hs}', '{status}', 'scheduled', '{}', '{}', 5, '{}')",
            ts(started),
            ts(started),
            ts(expires)
        ),
    );
}

async fn org_id(c: &Client) -> String {
    expect_status(&c.get("/v1/organization").await, 200)["id"].as_str().unwrap().to_owned()
}

async fn start_with_clock(backend: Backend) -> TestServer {
    builder(backend).arg("--test-clock").start().await
}

// R4
async fn r4_without_a_runtime_backups_and_restores_are_refused_clearly(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let path = hs_path(&hs);
    assert_api_error(&c.post(&format!("{path}/backups"), &json!({})).await, 409, Some("not_running"), None);
    assert_api_error(&c.post(&format!("{path}/restores"), &json!({"backup_id": "bk_x"})).await, 409, Some("not_running"), None);
    assert_invalid(&c.post(&format!("{path}/restores"), &json!({})).await, "backup_id");
    assert_rejects_field(&c.post(&format!("{path}/restores"), &json!({"backup_id": "bk_x", "into": "x"})).await, "into");
    assert_eq!(expect_status(&c.get(&format!("{path}/restores")).await, 200), json!({"items": [], "next_page_token": null}));
    assert_api_error(&c.get(&format!("{path}/restores/rs_nosuchrestore")).await, 404, Some("not_found"), None);
    assert_api_error(&c.get(&format!("{path}/backups/bk_nosuchbackup")).await, 404, Some("not_found"), None);
    assert_api_error(&c.delete(&format!("{path}/backups/bk_nosuchbackup")).await, 404, Some("not_found"), None);
    // Another organization sees none of it.
    let other = c.with_token(&server.create_token(&unique_name("other")).await);
    assert_api_error(&other.get(&format!("{path}/backups")).await, 404, Some("not_found"), None);
    assert_api_error(&other.get(&format!("{path}/restores")).await, 404, Some("not_found"), None);
    assert_api_error(&other.delete(&format!("{path}/backups?erase=true")).await, 404, Some("not_found"), None);
    let missing = format!("/v1/homeservers/{}", sibling_id(&id(&hs)));
    assert_api_error(&c.get(&format!("{missing}/restores")).await, 404, Some("not_found"), None);
    assert_api_error(&c.post(&format!("{missing}/backups"), &json!({})).await, 404, Some("not_found"), None);
}
both_backends!(r4_without_a_runtime_backups_and_restores_are_refused_clearly);

// R4, R18
async fn r18_backups_outlive_their_homeserver_until_they_expire_or_are_erased(backend: Backend) {
    let server = start_with_clock(backend).await;
    let c = server.client();
    let org = org_id(&c).await;
    let hs = create_homeserver(&c, "chat", "silver").await;
    let hs_id = id(&hs);
    let now = now();
    seed_backup(&server, &org, &hs_id, "bk_aaaaaaaaaaaaaaaaaaaa", now - ChronoDuration::days(2), now + ChronoDuration::days(28), "completed");
    seed_backup(&server, &org, &hs_id, "bk_bbbbbbbbbbbbbbbbbbbb", now - ChronoDuration::days(1), now + ChronoDuration::days(29), "completed");
    let list = expect_status(&c.get(&format!("{}/backups", hs_path(&hs))).await, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let one = expect_status(&c.get(&format!("{}/backups/bk_aaaaaaaaaaaaaaaaaaaa", hs_path(&hs))).await, 200);
    assert_eq!((one["status"].as_str(), one["kind"].as_str(), one["size_bytes"].as_i64()), (Some("completed"), Some("scheduled"), Some(5)));

    // Deleting the homeserver keeps its backups (an accidental delete can be recovered from).
    assert_eq!(c.delete(&hs_path(&hs)).await.0.as_u16(), 204);
    assert_api_error(&c.get(&hs_path(&hs)).await, 404, Some("not_found"), None);
    let list = expect_status(&c.get(&format!("{}/backups", hs_path(&hs))).await, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "backups went with the homeserver: {list}");

    // R4: at its expiry a backup goes, archive included (the worker runs without a runtime too).
    advance_until_gone(&c, 28 * 86_400 + 60, &format!("{}/backups/bk_aaaaaaaaaaaaaaaaaaaa", hs_path(&hs))).await;
    let list = expect_status(&c.get(&format!("{}/backups", hs_path(&hs))).await, 200);
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bk_bbbbbbbbbbbbbbbbbbbb"]);

    // R18: erasure needs `erase=true`, then deletes every backup and archive at once.
    let msg = assert_invalid(&c.delete(&format!("{}/backups", hs_path(&hs))).await, "erase");
    assert!(msg.contains("R18"), "{msg}");
    let erased = expect_status(&c.delete(&format!("{}/backups?erase=true", hs_path(&hs))).await, 200);
    assert_eq!(erased, json!({"homeserver_id": hs_id, "deleted": 1}));
    // Nothing is left, so the deleted homeserver is not found any more.
    assert_api_error(&c.get(&format!("{}/backups", hs_path(&hs))).await, 404, Some("not_found"), None);
    assert_api_error(&c.delete(&format!("{}/backups?erase=true", hs_path(&hs))).await, 404, Some("not_found"), None);
}
both_backends!(r18_backups_outlive_their_homeserver_until_they_expire_or_are_erased);

/// Moves the clock, then waits until the worker has deleted the backup at `path`.
async fn advance_until_gone(c: &Client, seconds: i64, path: &str) {
    expect_status(&c.post("/v1/_test/clock", &json!({"advance_seconds": seconds})).await, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.get(path).await.0.as_u16() != 404 {
        assert!(std::time::Instant::now() < deadline, "the worker did not act");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

// R4
async fn r4_a_running_backup_is_never_deleted_and_retention_changes_apply(backend: Backend) {
    let server = start_with_clock(backend).await;
    let c = server.client();
    let org = org_id(&c).await;
    let hs = create_homeserver(&c, "chat", "silver").await;
    let hs_id = id(&hs);
    expect_status(&c.post(&format!("{}/backup-policy", hs_path(&hs)), &json!({})).await, 201);
    let now = now();
    // Already past its expiry, but still being written: retention leaves it alone.
    seed_backup(&server, &org, &hs_id, "bk_runningrunningrunn", now - ChronoDuration::days(40), now - ChronoDuration::days(10), "running");
    seed_backup(&server, &org, &hs_id, "bk_completedcompleted", now - ChronoDuration::days(10), now + ChronoDuration::days(20), "completed");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let b = expect_status(&c.get(&format!("{}/backups/bk_runningrunningrunn", hs_path(&hs))).await, 200);
    assert_eq!(b["status"], "running");
    assert_api_error(&c.delete(&format!("{}/backups/bk_runningrunningrunn", hs_path(&hs))).await, 409, Some("backup_running"), None);
    assert_api_error(&c.delete(&format!("{}/backups?erase=true", hs_path(&hs))).await, 409, Some("backup_running"), None);
    expect_status(&c.get(&format!("{}/backups/bk_completedcompleted", hs_path(&hs))).await, 200);

    // R4: a shorter retention applies to the backups already taken.
    let p = expect_status(&c.put(&format!("{}/backup-policy", hs_path(&hs)), &json!({"retention_days": 7})).await, 200);
    assert_eq!(p["retention_days"], 7);
    advance_until_gone(&c, 60, &format!("{}/backups/bk_completedcompleted", hs_path(&hs))).await;
    // The policy's last backup is the last completed one (none now), the next is the window.
    let p = expect_status(&c.get(&format!("{}/backup-policy", hs_path(&hs))).await, 200);
    assert!(p["last_backup_at"].is_null(), "{p}");
    // Deleting one backup is idempotent in effect: a second delete is simply not found.
    seed_backup(&server, &org, &hs_id, "bk_deletemedeleteme00", now, now + ChronoDuration::days(7), "completed");
    assert_eq!(c.delete(&format!("{}/backups/bk_deletemedeleteme00", hs_path(&hs))).await.0.as_u16(), 204);
    assert_api_error(&c.delete(&format!("{}/backups/bk_deletemedeleteme00", hs_path(&hs))).await, 404, Some("not_found"), None);
}
both_backends!(r4_a_running_backup_is_never_deleted_and_retention_changes_apply);
