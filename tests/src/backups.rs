//! Helpers for backup tests (R4): take and wait for backups and restores through the API, move
//! the test clock, look into the backup store, and talk to Synapse beyond JSON (media).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};

use crate::runtime::Matrix;
use crate::{expect_status, Client};

pub const PASSWORD: &str = "a long enough password 1";

/// Moves the server's test clock forward; returns the server's new now.
pub async fn advance_clock(client: &Client, seconds: i64) -> DateTime<Utc> {
    let body = expect_status(&client.post("/v1/_test/clock", &json!({ "advance_seconds": seconds })).await, 200);
    crate::timestamp(&body["now"])
}

/// The server's now (its test clock).
pub async fn server_now(client: &Client) -> DateTime<Utc> {
    advance_clock(client, 0).await
}

/// A window start `minutes` ahead of `now` (to the minute): `("HH:MM", when)`.
pub fn window_after(now: DateTime<Utc>, minutes: i64) -> (String, DateTime<Utc>) {
    let t = now + chrono::Duration::minutes(minutes);
    let t = t.with_second(0).and_then(|t| t.with_nanosecond(0)).expect("valid time");
    (format!("{:02}:{:02}", t.hour(), t.minute()), t)
}

/// Every backup of the homeserver (all pages), ordered by `started_at`.
pub async fn list_backups(client: &Client, hs: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/homeservers/{hs}/backups?limit=100&page_token={t}"),
            None => format!("/v1/homeservers/{hs}/backups?limit=100"),
        };
        let page = expect_status(&client.get(&path).await, 200);
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    all.sort_by(|a, b| a["started_at"].as_str().cmp(&b["started_at"].as_str()));
    all
}

/// Polls a backup until it is no longer `running`.
pub async fn wait_backup(client: &Client, hs: &str, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let b = expect_status(&client.get(&format!("/v1/homeservers/{hs}/backups/{id}")).await, 200);
        if b["status"] != "running" {
            return b;
        }
        assert!(Instant::now() < deadline, "backup {id} still running after {timeout:?}: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An on-demand backup, waited for until it completes or fails.
pub async fn try_backup(client: &Client, hs: &str) -> Value {
    let b = expect_status(&client.post(&format!("/v1/homeservers/{hs}/backups"), &json!({})).await, 202);
    assert_eq!(b["kind"], "on_demand", "{b}");
    wait_backup(client, hs, b["id"].as_str().unwrap(), Duration::from_secs(300)).await
}

/// An on-demand backup, waited for; panics unless it completes.
pub async fn take_backup(client: &Client, hs: &str) -> Value {
    let done = try_backup(client, hs).await;
    assert_eq!(done["status"], "completed", "{done}");
    done
}

/// Requests a restore and waits for its outcome (`completed` or `failed`).
pub async fn restore(client: &Client, hs: &str, backup_id: &str) -> Value {
    let r = expect_status(&client.post(&format!("/v1/homeservers/{hs}/restores"), &json!({ "backup_id": backup_id })).await, 202);
    wait_restore(client, hs, r["id"].as_str().unwrap()).await
}

pub async fn wait_restore(client: &Client, hs: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = expect_status(&client.get(&format!("/v1/homeservers/{hs}/restores/{id}")).await, 200);
        if r["status"] == "completed" || r["status"] == "failed" {
            return r;
        }
        assert!(Instant::now() < deadline, "restore {id} did not finish: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where the node agent's directory store keeps a backup's archive.
pub fn archive_path(state_dir: &Path, hs: &str, backup_id: &str) -> PathBuf {
    state_dir.join("agent/backups").join(hs).join(format!("{backup_id}.mhbk"))
}

/// Archives still being written (or left behind by a crash).
pub fn partial_archives(state_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(state_dir.join("agent/backups")).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().ends_with(".partial") {
                out.push(f.path());
            }
        }
    }
    out
}

/// Whether `needle` occurs in the file (streamed, so large files are fine).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = needle.len().saturating_sub(1).min(carry.len());
        carry.drain(..carry.len() - keep);
    }
}

/// SHA-256 (hex) with the system's `sha256sum`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// Random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b
}

pub fn marker() -> String {
    format!("MARKER-{}", hex(&random_bytes(12)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `PRAGMA integrity_check` of the homeserver's database, run as the tenant inside its sandbox
/// (so no root-owned file appears in its data directory).
pub fn integrity_check(homeserver_id: &str) -> String {
    let script = r#"/opt/synapse/bin/python -c "import sqlite3; c = sqlite3.connect('/data/homeserver.db', timeout=30); print('\n'.join(r[0] for r in c.execute('PRAGMA integrity_check')))""#;
    let out = crate::runtime::as_tenant(homeserver_id, script);
    assert!(out.status.success(), "the integrity check failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Logs in, retrying while the runtime creates the account or Synapse restarts.
pub async fn login_eventually(m: &Matrix, user: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = m.login(user, PASSWORD).await;
        if status == 200 {
            return body["access_token"].as_str().expect("an access token").to_owned();
        }
        assert!(Instant::now() < deadline, "login of {user} never worked: {status} {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A reserved user with a password (admin if asked), so a test can log in as it.
pub async fn reserved_user(client: &Client, hs: &str, localpart: &str, admin: bool) -> Value {
    let body = json!({"email": format!("{localpart}@acme.example"), "localpart": localpart, "admin": admin, "initial_password": PASSWORD});
    expect_status(&client.post(&format!("/v1/homeservers/{hs}/reserved-users"), &body).await, 201)
}

/// A private room the user created after accepting the privacy notice (R19).
pub async fn create_room(m: &Matrix, token: &str) -> String {
    let (status, refused) = m.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(token), Some(json!({"preset": "private_chat"}))).await;
    if status == 403 && refused["errcode"] == "M_CONSENT_NOT_GIVEN" {
        m.accept_consent(refused["consent_uri"].as_str().unwrap()).await;
    } else {
        assert_eq!(status, 200, "{refused}");
        return refused["room_id"].as_str().unwrap().to_owned();
    }
    let (status, room) = m.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(token), Some(json!({"preset": "private_chat"}))).await;
    assert_eq!(status, 200, "{room}");
    room["room_id"].as_str().unwrap().to_owned()
}

pub async fn send_text(m: &Matrix, token: &str, room: &str, txn: &str, body: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    m.call(reqwest::Method::PUT, &path, Some(token), Some(json!({"msgtype": "m.text", "body": body}))).await
}

/// The bodies of the room's last `limit` text messages, oldest first.
pub async fn messages(m: &Matrix, token: &str, room: &str, limit: u32) -> (u16, Vec<String>) {
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={limit}");
    let (status, body) = m.call(reqwest::Method::GET, &path, Some(token), None).await;
    let mut out: Vec<String> = body["chunk"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == "m.room.message").filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    out.reverse();
    (status, out)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap()
}

/// `POST /_matrix/media/v3/upload`; returns the `mxc://server/id` URI.
pub async fn upload_media(m: &Matrix, token: &str, bytes: Vec<u8>) -> String {
    let resp = http()
        .post(format!("{}/_matrix/media/v3/upload?filename=report.bin", m.base))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("upload");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "upload failed: {status} {body}");
    body["content_uri"].as_str().expect("content_uri").to_owned()
}

/// Downloads media (authenticated media API); `(status, bytes)`.
pub async fn download_media(m: &Matrix, token: &str, mxc: &str) -> (u16, Vec<u8>) {
    let rest = mxc.strip_prefix("mxc://").expect("an mxc URI");
    let resp = http().get(format!("{}/_matrix/client/v1/media/download/{rest}", m.base)).bearer_auth(token).send().await.expect("download");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

/// One sealed chunk of an archive: 1 MiB of plaintext and a 16-byte tag.
pub const ARCHIVE_CHUNK: usize = (1 << 20) + 16;

/// The length of an archive's plaintext header (see `server/src/backup/archive.rs`).
pub fn archive_header_len(archive: &[u8]) -> usize {
    assert_eq!(&archive[..8], b"MHBACKUP");
    let mut at = 8 + 2 + 2 + 4 + 19;
    for _ in 0..3 {
        let len = u16::from_be_bytes([archive[at], archive[at + 1]]) as usize;
        at += 2 + len;
    }
    at + 8
}
