//! Issue 6 (R4): encrypted backups of real homeservers, restored. These run real Synapse through
//! matrixhostd's API, like `runtime_homeservers.rs`: they need root, loop devices and the
//! Synapse venv, are skipped loudly elsewhere, and fail in CI instead.

use std::time::{Duration, Instant};

use matrixhost_tests::backups::*;
use matrixhost_tests::runtime::{self, create_homeserver, runtime_available, wait_status, Matrix, RuntimeServer};
use matrixhost_tests::{assert_api_error, expect_status};
use reqwest::Method;
use serde_json::json;

/// A running homeserver with an admin reserved user `alice` logged in and a room.
struct Setup {
    server: RuntimeServer,
    id: String,
    m: Matrix,
    token: String,
    room: String,
}

async fn setup(name: &str) -> Setup {
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", name, json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    reserved_user(&client, &id, "alice", true).await;
    let running = wait_status(&client, &id, "running").await;
    let m = Matrix::new(running["client_url"].as_str().unwrap());
    let token = login_eventually(&m, "alice").await;
    // The reserved account costs one restart (R8); work once that is over.
    wait_status(&client, &id, "running").await;
    let token = if m.call(Method::GET, "/_matrix/client/v3/account/whoami", Some(&token), None).await.0 == 200 { token } else { login_eventually(&m, "alice").await };
    let room = create_room(&m, &token).await;
    Setup { server, id, m, token, room }
}

// R4
#[tokio::test]
async fn r4_a_wiped_homeserver_gets_its_message_and_media_back() {
    if !runtime_available("r4_restore_round_trip") {
        return;
    }
    let Setup { server, id, m, token, room } = setup("restoreme").await;
    let client = server.client();
    let marker = marker();
    let (status, sent) = send_text(&m, &token, &room, "t1", &marker).await;
    assert_eq!(status, 200, "{sent}");
    let media = random_bytes(300_000);
    let media_sha = sha256_hex(&media);
    let mxc = upload_media(&m, &token, media.clone()).await;

    let started = Instant::now();
    let backup = take_backup(&client, &id).await;
    eprintln!("measured: on-demand backup {:?}, {} bytes", started.elapsed(), backup["size_bytes"]);
    let bk = backup["id"].as_str().unwrap();
    assert!(backup["size_bytes"].as_i64().unwrap() > 300_000, "{backup}");
    assert!(backup["finished_at"].is_string() && backup["error"].is_null(), "{backup}");
    // R4: a backup is kept for the policy's retention, 30 days by default.
    let kept = matrixhost_tests::timestamp(&backup["expires_at"]) - matrixhost_tests::timestamp(&backup["started_at"]);
    assert_eq!(kept, chrono::Duration::days(30));
    // The archive is ciphertext only.
    let archive = archive_path(server.state_dir(), &id, bk);
    assert!(!file_contains(&archive, marker.as_bytes()), "the message is in plaintext in the archive");
    assert!(!file_contains(&archive, &media[1000..1064]), "the media is in plaintext in the archive");
    assert!(!file_contains(&archive, b"SQLite format 3"), "the database is in plaintext in the archive");

    // Wipe: the room and its messages are purged, the media deleted (as a mistake would).
    let server_name = mxc.trim_start_matches("mxc://").split('/').next().unwrap().to_owned();
    let media_id = mxc.rsplit('/').next().unwrap().to_owned();
    let (status, body) = m.call(Method::DELETE, &format!("/_synapse/admin/v1/rooms/{room}"), Some(&token), Some(json!({"purge": true}))).await;
    assert_eq!(status, 200, "purging the room: {body}");
    let (status, body) = m.call(Method::DELETE, &format!("/_synapse/admin/v1/media/{server_name}/{media_id}"), Some(&token), None).await;
    assert_eq!(status, 200, "deleting the media: {body}");
    let (status, gone) = messages(&m, &token, &room, 50).await;
    assert!(!gone.contains(&marker), "the message survived the wipe: {status} {gone:?}");
    assert_eq!(download_media(&m, &token, &mxc).await.0, 404, "the media survived the wipe");

    let started = Instant::now();
    let restored = restore(&client, &id, bk).await;
    eprintln!("measured: restore (verify, swap, restart) {:?}", started.elapsed());
    assert_eq!(restored["status"], "completed", "{restored}");
    assert_eq!(restored["backup_id"], bk);
    assert_eq!(restored["requested_by"], "api");
    assert!(restored["started_at"].is_string() && restored["finished_at"].is_string(), "{restored}");
    let hs = wait_status(&client, &id, "running").await;
    assert!(hs["status_reason"].is_null(), "{hs}");

    // The user logs in, the message and the media are back, byte for byte.
    let token = login_eventually(&m, "alice").await;
    let (status, back) = messages(&m, &token, &room, 50).await;
    assert_eq!(status, 200);
    assert!(back.contains(&marker), "the message is not back: {back:?}");
    let (status, bytes) = download_media(&m, &token, &mxc).await;
    assert_eq!(status, 200, "the media is not back");
    assert_eq!(sha256_hex(&bytes), media_sha, "the media came back different");
    // Nothing plaintext was left beside the data.
    let data = server.data_dir(&id);
    assert!(!data.join(".mh-restore-staging").exists() && !data.join(".mh-backup-staging").exists());
    // The restore is listed with its outcome.
    let list = expect_status(&client.get(&format!("/v1/homeservers/{id}/restores")).await, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

// R4
#[tokio::test]
async fn r4_a_tampered_archive_is_refused_and_the_live_data_is_untouched() {
    if !runtime_available("r4_tampered_archive") {
        return;
    }
    let Setup { server, id, m, token, room } = setup("tamper").await;
    let client = server.client();
    let before = marker();
    assert_eq!(send_text(&m, &token, &room, "t1", &before).await.0, 200);
    let backup = take_backup(&client, &id).await;
    let bk = backup["id"].as_str().unwrap().to_owned();
    // Written after the backup: a restore would lose it, a refused one must not.
    let after = marker();
    assert_eq!(send_text(&m, &token, &room, "t2", &after).await.0, 200);
    let pids = runtime::synapse_pids(&id);
    assert_eq!(pids.len(), 1);

    let archive = archive_path(server.state_dir(), &id, &bk);
    assert!(!file_contains(&archive, before.as_bytes()), "plaintext marker in the archive");
    let original = std::fs::read(&archive).unwrap();

    // One flipped byte in the middle.
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    std::fs::write(&archive, &flipped).unwrap();
    let refused = restore(&client, &id, &bk).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    // The customer reads the platform's words and a reference; the reference leads the
    // operator to the details in the agent's log.
    let error = refused["error"].as_str().unwrap();
    assert!(error.starts_with("the backup archive failed authentication"), "{error}");
    let reference = error.rsplit("(ref ").next().unwrap().trim_end_matches(')');
    let line = server.agent_log().lines().find(|l| l.contains(reference)).map(str::to_owned).unwrap_or_default();
    assert!(line.contains(&format!("backup {bk} is corrupt: authentication failed at chunk ")), "no details under {reference}: {line}");

    // Cut short at a chunk boundary (the final chunk is missing): refused as truncated.
    let body = original.len() - archive_header_len(&original);
    let whole_chunks = body / ARCHIVE_CHUNK;
    let cut = archive_header_len(&original) + whole_chunks * ARCHIVE_CHUNK;
    std::fs::write(&archive, &original[..cut]).unwrap();
    let truncated = restore(&client, &id, &bk).await;
    assert_eq!(truncated["status"], "failed", "{truncated}");
    let error = truncated["error"].as_str().unwrap();
    assert!(error.starts_with("the backup archive failed authentication"), "{error}");
    let reference = error.rsplit("(ref ").next().unwrap().trim_end_matches(')');
    let line = server.agent_log().lines().find(|l| l.contains(reference)).map(str::to_owned).unwrap_or_default();
    assert!(line.contains(&format!("backup {bk} is truncated")), "no details under {reference}: {line}");

    // The homeserver never went down and still has everything, including what came after.
    assert_eq!(runtime::synapse_pids(&id), pids, "synapse was stopped or restarted");
    let hs = expect_status(&client.get(&format!("/v1/homeservers/{id}")).await, 200);
    assert_eq!(hs["status"], "running", "{hs}");
    let (status, now) = messages(&m, &token, &room, 50).await;
    assert_eq!(status, 200);
    assert!(now.contains(&before) && now.contains(&after), "{now:?}");
    assert!(!server.data_dir(&id).join(".mh-restore-staging").exists(), "staged plaintext left behind");

    // The intact archive still restores, here through the operator CLI, which waits for the
    // serving matrixhostd to carry it out.
    std::fs::write(&archive, &original).unwrap();
    let listed = server.cli_ok(&["backup", "list", &id]).await;
    assert!(listed.contains(&bk) && listed.contains("completed"), "{listed}");
    let restore_id = server.cli_ok(&["backup", "restore", &bk]).await.trim().to_owned();
    let ok = expect_status(&client.get(&format!("/v1/homeservers/{id}/restores/{restore_id}")).await, 200);
    assert_eq!(ok["status"], "completed", "{ok}");
    assert_eq!(ok["requested_by"], "operator", "{ok}");
    let token = login_eventually(&m, "alice").await;
    let (_, back) = messages(&m, &token, &room, 50).await;
    assert!(back.contains(&before) && !back.contains(&after), "{back:?}");

    // A running or failed backup cannot be restored; an unknown one is not found.
    assert_api_error(&client.post(&format!("/v1/homeservers/{id}/restores"), &json!({"backup_id": "bk_nosuchbackup"})).await, 404, None, Some("backup_id"));
}

// R4
#[tokio::test]
async fn r4_a_backup_during_continuous_writes_restores_a_consistent_database() {
    if !runtime_available("r4_backup_during_writes") {
        return;
    }
    let Setup { server, id, m, token, room } = setup("busy").await;
    let client = server.client();
    // Synapse limits messages per user (burst 10); the writer should not wait on that.
    let user_id = m.call(Method::GET, "/_matrix/client/v3/account/whoami", Some(&token), None).await.1["user_id"].as_str().unwrap().to_owned();
    let (status, body) = m
        .call(Method::POST, &format!("/_synapse/admin/v1/users/{user_id}/override_ratelimit"), Some(&token), Some(json!({"messages_per_second": 0, "burst_count": 0})))
        .await;
    assert_eq!(status, 200, "{body}");
    // A writer sends numbered messages as fast as Synapse takes them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (m, token, room, stop, sent) = (m.clone(), token.clone(), room.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, body) = send_text(&m, &token, &room, &format!("w{n}"), &format!("msg-{n}")).await;
                assert_eq!(status, 200, "{body}");
                n += 1;
                sent.store(n, std::sync::atomic::Ordering::SeqCst);
            }
            n
        })
    };
    while sent.load(std::sync::atomic::Ordering::SeqCst) < 20 {
        if writer.is_finished() {
            panic!("the writer stopped: {:?}", writer.await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = sent.load(std::sync::atomic::Ordering::SeqCst);
    let backup = take_backup(&client, &id).await;
    let during = sent.load(std::sync::atomic::Ordering::SeqCst);
    if writer.is_finished() {
        panic!("the writer stopped during the backup: {:?}", writer.await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let total = writer.await.unwrap();
    eprintln!("measured: {before} messages before the backup, {during} when it completed, {total} in all");
    assert!(during > before, "the writes did not go on during the backup");

    let restored = restore(&client, &id, backup["id"].as_str().unwrap()).await;
    assert_eq!(restored["status"], "completed", "{restored}");
    wait_status(&client, &id, "running").await;
    assert_eq!(integrity_check(&id), "ok");
    // What came back is one consistent moment: msg-0 .. msg-k with no gap, k between what was
    // sent when the backup was asked for and when it was done.
    let token = login_eventually(&m, "alice").await;
    let (status, back) = messages(&m, &token, &room, 1000).await;
    assert_eq!(status, 200);
    let numbers: Vec<u64> = back.iter().filter_map(|b| b.strip_prefix("msg-")?.parse().ok()).collect();
    let k = numbers.len() as u64;
    assert_eq!(numbers, (0..k).collect::<Vec<_>>(), "the restored messages are not a prefix");
    assert!(k >= before && k <= during, "restored {k} messages; expected {before}..={during}");
}
