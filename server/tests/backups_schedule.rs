//! Issue 6 (R4): the backup schedule on real homeservers with the injected clock: daily
//! backups, 30-day retention, one catch-up after an outage, and a crash in the middle of a
//! backup. Needs root, loop devices and the Synapse venv (skipped loudly elsewhere).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use matrixhost_tests::backups::*;
use matrixhost_tests::runtime::{create_homeserver, runtime_available, wait_status, RuntimeServer};
use matrixhost_tests::{expect_status, timestamp, Client};
use serde_json::{json, Value};

/// Moves the clock to `target` (plus a second), whatever the clock says now.
async fn advance_to(client: &Client, target: DateTime<Utc>) {
    let now = server_now(client).await;
    let seconds = (target - now).num_seconds() + 1;
    assert!(seconds > 0, "the clock is already past {target}");
    advance_clock(client, seconds).await;
}

/// Waits for a backup started at or after `since` to be `completed`; returns it.
async fn wait_completed_since(client: &Client, hs: &str, since: DateTime<Utc>, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let found = list_backups(client, hs).await.into_iter().find(|b| timestamp(&b["started_at"]) >= since);
        if let Some(b) = &found {
            if b["status"] == "completed" {
                return b.clone();
            }
            assert_ne!(b["status"], "failed", "the backup failed: {b}");
        }
        assert!(Instant::now() < deadline, "no completed backup since {since} within {timeout:?}: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn policy(client: &Client, hs: &str) -> Value {
    expect_status(&client.get(&format!("/v1/homeservers/{hs}/backup-policy")).await, 200)
}

// R4
#[tokio::test]
async fn r4_forty_days_give_forty_daily_backups_and_the_last_thirty_remain() {
    if !runtime_available("r4_forty_days") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "daily", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    wait_status(&client, &id, "running").await;
    let (window, first) = window_after(server_now(&client).await, 10);
    let created = expect_status(&client.post(&format!("/v1/homeservers/{id}/backup-policy"), &json!({"window_start": window, "retention_days": 30})).await, 201);
    assert_eq!(timestamp(&created["next_backup_at"]), first, "{created}");
    assert!(created["last_backup_at"].is_null());

    let started = Instant::now();
    let mut taken: Vec<String> = Vec::new();
    for day in 0..40 {
        let window_start = first + chrono::Duration::days(day);
        advance_to(&client, window_start).await;
        let b = wait_completed_since(&client, &id, window_start, Duration::from_secs(60)).await;
        assert_eq!(b["kind"], "scheduled", "{b}");
        assert!(timestamp(&b["started_at"]) - window_start < chrono::Duration::minutes(1), "day {day}: started late: {b}");
        taken.push(b["id"].as_str().unwrap().to_owned());
        // Exactly one backup for the day.
        let today = list_backups(&client, &id).await.into_iter().filter(|b| timestamp(&b["started_at"]) >= window_start).count();
        assert_eq!(today, 1, "day {day}: more than one backup");
    }
    eprintln!("measured: 40 simulated days in {:?}", started.elapsed());
    assert_eq!(taken.len(), 40);

    // R4: exactly the last 30 remain; the 10 older ones are gone with their archives. The
    // worker deletes on its next pass, which may come just after the last backup completed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut remaining = list_backups(&client, &id).await;
    while remaining.len() > 30 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        remaining = list_backups(&client, &id).await;
    }
    let ids: Vec<&str> = remaining.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, taken[10..].iter().map(String::as_str).collect::<Vec<_>>());
    for b in &remaining {
        assert_eq!(b["status"], "completed", "{b}");
        assert_eq!(timestamp(&b["expires_at"]) - timestamp(&b["started_at"]), chrono::Duration::days(30), "{b}");
    }
    for old in &taken[..10] {
        assert!(!archive_path(server.state_dir(), &id, old).exists(), "the archive of expired backup {old} is still there");
    }
    for kept in &taken[10..] {
        assert!(archive_path(server.state_dir(), &id, kept).exists(), "the archive of {kept} is missing");
    }
    // The policy reports the real last and next backups.
    let p = policy(&client, &id).await;
    assert_eq!(p["last_backup_at"], remaining.last().unwrap()["started_at"], "{p}");
    assert_eq!(timestamp(&p["next_backup_at"]), first + chrono::Duration::days(40), "{p}");

    // An outage over three windows (the clock jumps past them): one catch-up backup, not three.
    let back = first + chrono::Duration::days(42) + chrono::Duration::hours(5);
    advance_to(&client, back).await;
    let catch_up = wait_completed_since(&client, &id, back, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<Value> = list_backups(&client, &id).await;
    let new: Vec<&Value> = after.iter().filter(|b| timestamp(&b["started_at"]) > first + chrono::Duration::days(39) + chrono::Duration::hours(1)).collect();
    assert_eq!(new.len(), 1, "more than one catch-up backup: {new:?}");
    assert_eq!(new[0]["id"], catch_up["id"]);
    let p = policy(&client, &id).await;
    assert_eq!(timestamp(&p["next_backup_at"]), first + chrono::Duration::days(43), "{p}");
    // Retention went on: the backups of days 10-12 expired meanwhile.
    assert_eq!(after.len(), 28, "{after:?}");
}

// R4
#[tokio::test]
async fn r4_killing_matrixhostd_mid_backup_counts_nothing_and_the_next_run_succeeds() {
    if !runtime_available("r4_kill_mid_backup") {
        return;
    }
    // The test hook holds every backup for a few seconds once its database is in the archive.
    let server = RuntimeServer::start_with(&[], &["--test-backup-delay-seconds", "6"]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "crashy", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    wait_status(&client, &id, "running").await;
    let (window, first) = window_after(server_now(&client).await, 10);
    expect_status(&client.post(&format!("/v1/homeservers/{id}/backup-policy"), &json!({"window_start": window})).await, 201);
    advance_to(&client, first).await;

    // Wait until the backup is being written, then kill matrixhostd (SIGKILL).
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let list = list_backups(&client, &id).await;
        if let Some(b) = list.iter().find(|b| b["status"] == "running") {
            if !partial_archives(server.state_dir()).is_empty() {
                break b.clone();
            }
        }
        assert!(list.iter().all(|b| b["status"] != "completed"), "the backup completed before the kill: {list:?}");
        assert!(Instant::now() < deadline, "no backup started: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let server = server.kill_and_restart().await;
    let client = server.client();

    // The interrupted backup is failed, never complete, and its partial archive is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = expect_status(&client.get(&format!("/v1/homeservers/{id}/backups/{}", running["id"].as_str().unwrap())).await, 200);
        if b["status"] == "failed" {
            assert!(b["error"].as_str().unwrap().contains("interrupted"), "{b}");
            assert!(b["size_bytes"].is_null(), "{b}");
            break;
        }
        assert_eq!(b["status"], "running", "{b}");
        assert!(Instant::now() < deadline, "the interrupted backup was never marked failed: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(partial_archives(server.state_dir()).is_empty(), "a partial archive survived the restart");
    assert!(!archive_path(server.state_dir(), &id, running["id"].as_str().unwrap()).exists());
    assert!(policy(&client, &id).await["last_backup_at"].is_null(), "a half backup counts as the last backup");
    wait_status(&client, &id, "running").await;

    // The next day's run succeeds (the restarted test clock starts from the real time again).
    let next = first + chrono::Duration::days(1);
    advance_to(&client, next).await;
    let done = wait_completed_since(&client, &id, next, Duration::from_secs(90)).await;
    assert!(archive_path(server.state_dir(), &id, done["id"].as_str().unwrap()).exists());
    assert!(partial_archives(server.state_dir()).is_empty());
    assert!(!server.data_dir(&id).join(".mh-backup-staging").exists(), "the crashed backup's staging was not cleaned up");
    assert_eq!(policy(&client, &id).await["last_backup_at"], done["started_at"]);
    let all = list_backups(&client, &id).await;
    assert_eq!(all.iter().filter(|b| b["status"] == "completed").count(), 1, "{all:?}");
    // And it restores.
    let restored = restore(&client, &id, done["id"].as_str().unwrap()).await;
    assert_eq!(restored["status"], "completed", "{restored}");
}
