//! Issue 4: real homeservers. These tests run real Synapse through matrixhostd's API on
//! encrypted volumes, as separate tenant users. They need root, loop devices and the Synapse
//! venv (`scripts/setup.sh`); elsewhere they are skipped loudly, and in CI they fail instead.

use std::time::{Duration, Instant};

use matrixhost_tests::runtime::{self, create_homeserver, runtime_available, wait_status, Matrix, RuntimeServer};
use matrixhost_tests::{assert_api_error, expect_status, Client};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "a long enough password 1";

/// A catalog with a tiny plan so the MAU cap can be reached in a test.
fn tiny_plan_config(dir: &std::path::Path) -> String {
    runtime::catalog_config(
        dir,
        r#"
[[catalog.plans]]
tier = "tiny"
name = "Tiny"
mau = 3
price_per_mau_cents = 100
support_tier = "best_effort"
e2ee_can_be_disabled = true
limits = { cpu_millicores = 500, memory_mb = 512, storage_gb = 5 }
"#,
    )
}

async fn reserved_user(client: &matrixhost_tests::Client, hs: &str, email: &str, localpart: &str, admin: bool) -> Value {
    let resp = client
        .post(&format!("/v1/homeservers/{hs}/reserved-users"), &json!({"email": email, "localpart": localpart, "admin": admin, "initial_password": PASSWORD}))
        .await;
    expect_status(&resp, 201)
}

/// Logs in, retrying while the runtime is still creating the account.
async fn login_eventually(m: &Matrix, user: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = m.login(user, PASSWORD).await;
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "login of {user} never worked: {status} {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn homeserver_runs_and_a_reserved_user_logs_in() {
    if !runtime_available("homeserver_runs_and_a_reserved_user_logs_in") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let started = Instant::now();
    let hs = create_homeserver(&client, "nickel", "staff", json!({})).await;
    let id = hs["id"].as_str().unwrap();
    assert_eq!(hs["status"], "provisioning");
    let running = wait_status(&client, id, "running").await;
    eprintln!("measured: create-to-running {:?}", started.elapsed());
    let client_url = running["client_url"].as_str().expect("client_url once running");
    assert!(running["privacy_notice_url"].as_str().unwrap().starts_with(client_url));
    let m = Matrix::new(client_url);
    let (status, versions) = m.call(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, 200, "{versions}");
    reserved_user(&client, id, "Alice@Acme.example", "alice", true).await;
    let login = login_eventually(&m, "alice").await;
    assert_eq!(login["user_id"], format!("@alice:{}", running["server_name"].as_str().unwrap()));

    // R19: the privacy notice names the controller, the server and the processor.
    let notice = reqwest::get(format!("{client_url}/_matrix/consent")).await.unwrap().text().await.unwrap();
    for expected in ["Acme Corp", "dpo@acme.example", running["server_name"].as_str().unwrap(), "matrixhost"] {
        assert!(notice.contains(expected), "privacy notice lacks {expected}: {notice}");
    }

    // R23: usage is counts and bytes.
    let usage = expect_status(&client.get(&format!("/v1/homeservers/{id}/usage")).await, 200);
    assert!(usage["registered_users"].as_u64().unwrap() >= 1, "{usage}");
    assert!(usage["volume_bytes_used"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(usage["mau_cap"], 10);
    let rss_kb = runtime::synapse_pids(id)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .sum::<u64>();
    eprintln!("measured: synapse RSS {} MiB", rss_kb / 1024);
}

#[tokio::test]
async fn r2_a_message_is_readable_through_the_mount_and_absent_from_the_raw_image() {
    if !runtime_available("r2_marker") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "secret", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    let running = wait_status(&client, &id, "running").await;
    reserved_user(&client, &id, "bob@acme.example", "bob", false).await;
    let m = Matrix::new(running["client_url"].as_str().unwrap());
    let token = login_eventually(&m, "bob").await["access_token"].as_str().unwrap().to_owned();
    // R19: nothing is sent before the user accepts the privacy notice.
    let (status, refused) = m.call(Method::POST, "/_matrix/client/v3/createRoom", Some(&token), Some(json!({"preset": "private_chat"}))).await;
    assert_eq!((status, refused["errcode"].as_str()), (403, Some("M_CONSENT_NOT_GIVEN")), "{refused}");
    m.accept_consent(refused["consent_uri"].as_str().unwrap()).await;
    let (status, room) = m.call(Method::POST, "/_matrix/client/v3/createRoom", Some(&token), Some(json!({"preset": "private_chat"}))).await;
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().unwrap();
    let marker = format!("MARKER-{}", hex_marker());
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/txn1");
    let (status, sent) = m.call(Method::PUT, &path, Some(&token), Some(json!({"msgtype": "m.text", "body": marker}))).await;
    assert_eq!(status, 200, "{sent}");

    // R19: the control plane keeps the acceptance (Synapse keeps only the last one).
    let db = server.state_dir().join("api/matrixhost.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("sqlite3").arg(&db).arg("SELECT user_id || ' ' || notice_version FROM consent_acceptances").output().unwrap();
        let rows = String::from_utf8_lossy(&out.stdout).into_owned();
        if rows.contains("@bob:") {
            assert!(rows.contains(" v"), "{rows}");
            break;
        }
        assert!(Instant::now() < deadline, "the acceptance was never recorded: {rows}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Readable through the mounted (unlocked) volume...
    let data = server.data_dir(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir_contains(&data, marker.as_bytes()) {
        assert!(Instant::now() < deadline, "marker never reached the data directory");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // ...and absent from the raw image bytes (R2), after everything reached the disk.
    let _ = std::process::Command::new("sync").status();
    let image = server.image_path(&id);
    assert!(image.exists());
    assert!(!file_contains(&image, marker.as_bytes()), "the marker is in plaintext in the volume image");
    assert!(!file_contains(&image, b"homeserver.db"), "file names are in plaintext in the volume image");
}

#[tokio::test]
async fn r3_tenants_cannot_read_each_other() {
    if !runtime_available("r3_isolation") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let a = create_homeserver(&client, "nickel", "tenant-a", json!({})).await;
    let b = create_homeserver(&client, "nickel", "tenant-b", json!({})).await;
    let (a, b) = (a["id"].as_str().unwrap().to_owned(), b["id"].as_str().unwrap().to_owned());
    let ra = wait_status(&client, &a, "running").await;
    let rb = wait_status(&client, &b, "running").await;
    assert_ne!(ra["client_url"], rb["client_url"], "each tenant has its own port");
    // R3: outside its sandbox a tenant's uid reaches no volume by its host path, not B's and not
    // even its own (inside, it sees only its own, as /data: see the hostile-tenant suite).
    let user_a = runtime::tenant_user_name(&a);
    for path in [server.data_dir(&b).join("homeserver.db"), server.data_dir(&a).join("homeserver.db")] {
        let out = std::process::Command::new("runuser").args(["-u", &user_a, "--", "cat"]).arg(&path).output().unwrap();
        assert!(!out.status.success(), "tenant A read {}", path.display());
        assert!(String::from_utf8_lossy(&out.stderr).contains("ermission denied"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Their processes run as different users.
    let owner = |id: &str| {
        let pid = runtime::synapse_pids(id)[0];
        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap().lines().find(|l| l.starts_with("Uid:")).unwrap().to_owned()
    };
    assert_ne!(owner(&a), owner(&b));
    assert!(!owner(&a).contains("\t0\t"), "synapse runs as root: {}", owner(&a));
}

#[tokio::test]
async fn r7_r8_the_cap_locks_out_new_users_but_not_reserved_ones() {
    if !runtime_available("r7_r8_cap") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_plan_config(dir.path());
    // R6's 2-day trial would keep new users out of the count for two days; the test sets it to 0.
    let server = RuntimeServer::start(&["--config", &config, "--mau-trial-days", "0"]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "tiny", "capped", json!({"registration": "open"})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    reserved_user(&client, &id, "ceo@acme.example", "ceo", false).await;
    let running = wait_status(&client, &id, "running").await;
    let m = Matrix::new(running["client_url"].as_str().unwrap());
    login_eventually(&m, "ceo").await;
    // Wait until the reserved account holds its slot (the runtime restarts Synapse once for it).
    wait_status(&client, &id, "running").await;
    // Cap 3 with 1 reserved user: 2 other users fit...
    for user in ["user1", "user2"] {
        let (status, body) = register_when_up(&m, user).await;
        assert_eq!(status, 200, "{user}: {body}");
        // A user becomes a MAU with an authenticated request (R6).
        let token = body["access_token"].as_str().unwrap();
        let (status, _) = m.call(Method::GET, "/_matrix/client/v3/account/whoami", Some(token), None).await;
        assert_eq!(status, 200);
    }
    // The cap is now full: the reserved user and the two others are monthly active users.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let usage = expect_status(&client.get(&format!("/v1/homeservers/{id}/usage")).await, 200);
        if usage["monthly_active_users"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the MAU count never reached the cap: {usage}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // ...and the 3rd is locked out (R7).
    let (status, body) = register_when_up(&m, "user3").await;
    assert_eq!(body["errcode"], "M_RESOURCE_LIMIT_EXCEEDED", "{status} {body}");
    // The reserved user can still log in (R8).
    let (status, body) = m.login("ceo", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let usage = expect_status(&client.get(&format!("/v1/homeservers/{id}/usage")).await, 200);
    assert_eq!(usage["mau_cap"], 3);
    assert!(usage["monthly_active_users"].as_u64().unwrap() >= 3, "{usage}");
}

/// Registers, retrying while Synapse restarts after a config change.
async fn register_when_up(m: &Matrix, user: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = m.register(user, PASSWORD).await;
        if status != 0 && status != 502 && !(status == 200 && body.is_null()) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "{user}: synapse never answered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn r9_registration_guests_and_federation_follow_the_settings() {
    if !runtime_available("r9_settings") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(
        &client,
        "nickel",
        "locked",
        json!({"registration": "email_domains", "allowed_email_domains": ["acme.example"], "guest_access": false, "federation_enabled": false}),
    )
    .await;
    let id = hs["id"].as_str().unwrap().to_owned();
    reserved_user(&client, &id, "it@acme.example", "it", false).await;
    let running = wait_status(&client, &id, "running").await;
    let m = Matrix::new(running["client_url"].as_str().unwrap());
    // Email-domain registration refuses another domain.
    let request = json!({"client_secret": "secret123", "email": "eve@elsewhere.example", "send_attempt": 1});
    let (status, body) = m.call(Method::POST, "/_matrix/client/v3/register/email/requestToken", None, Some(request)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_THREEPID_DENIED", "{body}");
    // Guests are refused.
    let (status, body) = m.call(Method::POST, "/_matrix/client/v3/register?kind=guest", None, Some(json!({}))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("Guest access is disabled"), "{body}");
    // Federation off refuses a remote invite.
    let token = login_eventually(&m, "it").await["access_token"].as_str().unwrap().to_owned();
    let (_, refused) = m.call(Method::POST, "/_matrix/client/v3/createRoom", Some(&token), Some(json!({}))).await;
    m.accept_consent(refused["consent_uri"].as_str().expect("consent first")).await;
    let (_, room) = m.call(Method::POST, "/_matrix/client/v3/createRoom", Some(&token), Some(json!({}))).await;
    let room_id = room["room_id"].as_str().unwrap();
    let (status, body) = m
        .call(Method::POST, &format!("/_matrix/client/v3/rooms/{room_id}/invite"), Some(&token), Some(json!({"user_id": "@bob:remote.example"})))
        .await;
    assert!(status >= 400, "a remote invite went through: {status} {body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
}

#[tokio::test]
async fn r12_blocking_blocks_logins_and_unblocking_restores_them() {
    if !runtime_available("r12_block") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "blockme", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    reserved_user(&client, &id, "ops@acme.example", "ops", false).await;
    let running = wait_status(&client, &id, "running").await;
    let m = Matrix::new(running["client_url"].as_str().unwrap());
    login_eventually(&m, "ops").await;

    server.cli_ok(&["homeserver", "block", &id, "--reason", "Blocked for a test"]).await;
    let blocked = wait_status(&client, &id, "blocked").await;
    assert_eq!(blocked["status_reason"], "Blocked for a test");
    let (status, body) = m.login("ops", PASSWORD).await;
    assert_ne!(status, 200, "login worked on a blocked homeserver: {body}");
    assert_eq!(body["errcode"], "M_RESOURCE_LIMIT_EXCEEDED", "{body}");

    server.cli_ok(&["homeserver", "unblock", &id]).await;
    wait_status(&client, &id, "running").await;
    login_eventually(&m, "ops").await;

    // R12: a failed payment blocks too.
    let bp = running["billing_plan_id"].as_str().unwrap();
    server.cli_ok(&["billing", "payment-failed", bp]).await;
    wait_status(&client, &id, "blocked").await;
    server.cli_ok(&["billing", "payment-settled", bp]).await;
    wait_status(&client, &id, "running").await;
}

/// R12 at 100% of resources: a homeserver whose volume is full is blocked (Synapse refuses
/// every request with the reason) until the volume is grown; both moments are events.
#[tokio::test]
async fn r12_a_full_volume_blocks_until_it_is_grown() {
    if !runtime_available("r12_storage") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "filled", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    reserved_user(&client, &id, "ops@acme.example", "ops", false).await;
    let running = wait_status(&client, &id, "running").await;
    let m = Matrix::new(running["client_url"].as_str().unwrap());
    login_eventually(&m, "ops").await;
    // The tenant fills its volume (think: media uploads) until the disk says no.
    let out = runtime::as_tenant(&id, "dd if=/dev/zero of=/data/media_store/filler bs=1M 2>&1 | tail -1; sync");
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied"), "{}", String::from_utf8_lossy(&out.stdout));
    let blocked = wait_status(&client, &id, "blocked").await;
    let reason = blocked["status_reason"].as_str().unwrap();
    assert!(reason.starts_with("R12: this homeserver's storage is full") && reason.contains("grown"), "{reason}");
    let (status, body) = m.login("ops", PASSWORD).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_RESOURCE_LIMIT_EXCEEDED")), "{body}");
    assert_eq!(body["error"], reason, "users read the same reason");
    let events: Value = expect_status(&client.get(&format!("/v1/homeservers/{id}/events")).await, 200);
    assert!(events["items"].as_array().unwrap().iter().any(|e| e["kind"] == "storage_full"), "{events}");

    // Growing the volume lifts the block.
    let mut settings = json!({
        "federation_enabled": false, "registration": "invite_only", "allowed_email_domains": [], "guest_access": false,
        "encryption_by_default": true, "deletion_protection": false, "volume": {"size_gb": 2, "encrypted": true},
        "data_controller": running["data_controller"],
    });
    settings["registration"] = running["registration"].clone();
    expect_status(&client.put(&format!("/v1/homeservers/{id}"), &settings).await, 200);
    let back = wait_status(&client, &id, "running").await;
    assert!(back["status_reason"].is_null(), "{back}");
    login_eventually(&m, "ops").await;
    let events: Value = expect_status(&client.get(&format!("/v1/homeservers/{id}/events")).await, 200);
    let kinds: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "storage_full").count(), 1, "{kinds:?}");
    assert!(kinds.ends_with(&["storage_available"]), "{kinds:?}");
}

/// The usual `/var/lib` layout: the state directory under a parent only root may enter. The
/// control plane (its own user) and every homeserver (their own users, in their sandboxes)
/// still work, and a backup completes.
#[tokio::test]
async fn a_state_dir_under_a_private_parent_runs_homeservers() {
    use std::os::unix::fs::PermissionsExt;
    if !runtime_available("private_parent") {
        return;
    }
    let parent = tempfile::Builder::new().prefix("matrixhost-private.").tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = tempfile::Builder::new().prefix("state.").tempdir_in(parent.path()).unwrap();
    let server = RuntimeServer::start_in(Some(state), &[], &[]).await;
    assert!(server.state_dir().starts_with(parent.path()));
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "private", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    let running = wait_status(&client, &id, "running").await;
    let (status, _) = Matrix::new(running["client_url"].as_str().unwrap()).call(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(matrixhost_tests::backups::take_backup(&client, &id).await["status"], "completed");
    // A restart finds its database where it left it.
    let server = server.kill_and_restart().await;
    let again = expect_status(&server.client().get(&format!("/v1/homeservers/{id}")).await, 200);
    assert_eq!(again["status"], "running", "{again}");
}

/// R5: each homeserver's cgroup carries its plan's limits (and the agent's pids limit).
#[tokio::test]
async fn r5_the_plans_limits_are_the_homeservers_cgroup() {
    if !runtime_available("r5_limits") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "silver", "limited", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    wait_status(&client, &id, "running").await;
    let read = |controller: &str, v1: &str, v2: &str| {
        let dir = runtime::cgroup_dir(&id, controller);
        std::fs::read_to_string(dir.join(v1)).or_else(|_| std::fs::read_to_string(dir.join(v2))).unwrap().trim().to_owned()
    };
    // silver: 2048 MiB, 2000 millicores.
    assert_eq!(read("memory", "memory.limit_in_bytes", "memory.max"), (2048u64 << 20).to_string());
    let cpu = read("cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == "200000" || cpu == "200000 100000", "{cpu}");
    assert_eq!(read("pids", "pids.max", "pids.max"), "512");
    // Synapse is in that cgroup.
    let pid = runtime::synapse_pids(&id)[0];
    assert!(runtime::cgroup_pids(&id).contains(&pid));
}

#[tokio::test]
async fn sigkill_and_restart_readopts_every_homeserver() {
    if !runtime_available("sigkill_readopt") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let mut ids = Vec::new();
    for name in ["one", "two"] {
        let hs = create_homeserver(&client, "nickel", name, json!({})).await;
        ids.push(hs["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        wait_status(&client, id, "running").await;
    }
    let before: Vec<Vec<i32>> = ids.iter().map(|id| runtime::synapse_pids(id)).collect();
    assert!(before.iter().all(|p| p.len() == 1), "{before:?}");
    let starts = |log: &str| log.matches("homeserver sandbox started").count();
    let started_before = starts(&server.agent_log());

    let started = Instant::now();
    let server = server.kill_and_restart().await;
    let client = server.client();
    for id in &ids {
        let hs = wait_status(&client, id, "running").await;
        let (status, _) = Matrix::new(hs["client_url"].as_str().unwrap()).call(Method::GET, "/_matrix/client/versions", None, None).await;
        assert_eq!(status, 200);
    }
    eprintln!("measured: restart-to-all-running {:?}", started.elapsed());
    // Give the reconciler a few passes: nothing may be started twice or left behind.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after: Vec<Vec<i32>> = ids.iter().map(|id| runtime::synapse_pids(id)).collect();
    assert_eq!(before, after, "homeservers were restarted or duplicated instead of re-adopted");
    assert_eq!(starts(&server.agent_log()), started_before, "the agent started a homeserver again");
}

/// The data plane outlives the node agent too: killed (SIGKILL) and started again, the agent
/// finds every homeserver in its cgroup, and none is restarted.
#[tokio::test]
async fn homeservers_outlive_a_killed_agent() {
    if !runtime_available("outlive_agent") {
        return;
    }
    let mut server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "steady", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    let running = wait_status(&client, &id, "running").await;
    let before = runtime::synapse_pids(&id);
    assert_eq!(before.len(), 1);
    server.kill_agent();
    // While the agent is gone the homeserver still answers (through matrixhostd's ingress).
    let m = Matrix::new(running["client_url"].as_str().unwrap());
    assert_eq!(m.call(Method::GET, "/_matrix/client/versions", None, None).await.0, 200);
    server.restart_agent().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let hs = wait_status(&client, &id, "running").await;
    assert!(hs["status_reason"].is_null(), "{hs}");
    assert_eq!(runtime::synapse_pids(&id), before, "the homeserver was restarted");
    assert_eq!(m.call(Method::GET, "/_matrix/client/versions", None, None).await.0, 200);
}

#[tokio::test]
async fn deleting_a_homeserver_leaves_nothing_behind() {
    if !runtime_available("delete_leaves_nothing") {
        return;
    }
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "nickel", "doomed", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    let running = wait_status(&client, &id, "running").await;
    let image = server.image_path(&id);
    assert_eq!(runtime::synapse_pids(&id).len(), 1);

    let resp = client.delete(&format!("/v1/homeservers/{id}")).await;
    let body = expect_status(&resp, 202);
    assert_eq!(body["status"], "deleting");
    runtime::wait_for(&client, &id, "gone", Duration::from_secs(60), |r| r.0.as_u16() == 404).await;
    assert!(runtime::synapse_pids(&id).is_empty(), "synapse still runs");
    assert!(runtime::mounts_under(server.state_dir()).is_empty(), "a volume is still mounted");
    assert!(!image.exists(), "the volume image is still there");
    let loops = std::process::Command::new("losetup").arg("-a").output().unwrap();
    assert!(!String::from_utf8_lossy(&loops.stdout).contains(&id), "a loop device still backs the image");
    let user = std::process::Command::new("id").arg(runtime::tenant_user_name(&id)).output().unwrap();
    assert!(!user.status.success(), "the tenant user still exists");
    // The cgroups, the config, the socket directory and the key went with it.
    assert!(!runtime::cgroup_dir(&id, "memory").exists(), "the cgroup is still there");
    for leftover in [format!("agent/config/{id}"), format!("run/homeservers/{id}"), format!("agent/keys/{id}.key"), format!("agent/run/{id}.json")] {
        assert!(!server.state_dir().join(&leftover).exists(), "{leftover} is still there");
    }
    // The port is free again.
    let port = running["client_url"].as_str().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is still taken");
    // The API lists nothing.
    let list = expect_status(&client.get("/v1/homeservers").await, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    assert_api_error(&client.get(&format!("/v1/homeservers/{id}/usage")).await, 404, Some("not_found"), None);
}

fn hex_marker() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim().replace('-', "")
}

fn dir_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            dir_contains(&p, needle)
        } else {
            file_contains(&p, needle)
        }
    })
}

/// Streams the file in 1 MiB chunks, keeping an overlap so a match across chunks is found.
fn file_contains(path: &std::path::Path, needle: &[u8]) -> bool {
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

/// R18: erasing an account takes its running homeservers (volume, tenant, processes) and its
/// backup archives with it.
#[tokio::test]
async fn r18_erasing_an_account_removes_its_homeservers_and_backups() {
    use matrixhost_tests::backups::{advance_clock, archive_path, take_backup};
    use matrixhost_tests::console::Browser;
    use matrixhost_tests::mail::{link_to, wait_for_mail, SmtpServer};
    if !runtime_available("r18_erasure") {
        return;
    }
    let smtp = SmtpServer::start().await;
    let server = RuntimeServer::start(&["--smtp-url", &smtp.url()]).await;
    let b = Browser::new(&server);
    b.sign_up("ops@erased.example", "erased", PASSWORD).await;
    let verify = link_to(&wait_for_mail(&smtp.maildir(), "ops@erased.example", "Verify", 0).await.text, "/console/verify");
    b.follow_link(&verify, &[]).await;
    b.log_in("ops@erased.example", PASSWORD).await;
    let page = b.submit("/console/tokens", &[("name", "ci"), ("expires_in_days", "0")]).await;
    let at = page.body.find("id=\"new-token\">").unwrap() + "id=\"new-token\">".len();
    let client = server.client().with_token(&page.body[at..at + 67]);

    let hs = create_homeserver(&client, "nickel", "chat", json!({ "deletion_protection": true })).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    wait_status(&client, &id, "running").await;
    let backup = take_backup(&client, &id).await;
    let archive = archive_path(server.state_dir(), &id, backup["id"].as_str().unwrap());
    assert!(archive.exists());
    let console = b.get(&format!("/console/homeservers/{id}")).await;
    assert!(console.body.contains("Monthly active users") && console.body.contains("<svg"), "usage is drawn (R23)");

    b.submit("/console/account/delete", &[("confirm", "erased"), ("current_password", PASSWORD)]).await;
    advance_clock(&server.client(), 7 * 86_400 + 60).await;
    wait_for_mail(&smtp.maildir(), "ops@erased.example", "account was deleted", 0).await;
    assert!(runtime::synapse_pids(&id).is_empty(), "synapse still runs");
    assert!(!server.image_path(&id).exists(), "the volume image is still there");
    assert!(!archive.exists(), "the backup archive is still there");
    let user = std::process::Command::new("id").arg(runtime::tenant_user_name(&id)).output().unwrap();
    assert!(!user.status.success(), "the tenant user still exists");
    assert_api_error(&client.get("/v1/homeservers").await, 401, None, None);
}

/// A reserved user without an initial password is invited by email and chooses their own
/// password through a one-time link (72 hours); no password passes through the API.
#[tokio::test]
async fn a_reserved_user_is_invited_by_email_and_chooses_a_password() {
    use matrixhost_tests::backups::advance_clock;
    use matrixhost_tests::console::Browser;
    use matrixhost_tests::mail::{link_to, token_of, wait_for_mail, SmtpServer};
    if !runtime_available("invitations") {
        return;
    }
    let smtp = SmtpServer::start().await;
    let server = RuntimeServer::start(&["--smtp-url", &smtp.url()]).await;
    let client = server.client();
    let hs = create_homeserver(&client, "silver", "invites", json!({})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    let running = wait_status(&client, &id, "running").await;
    let matrix = Matrix::new(running["client_url"].as_str().unwrap());
    let mut reserved = Vec::new();
    for (email, localpart) in [("carol@corp.example", "carol"), ("dave@corp.example", "dave")] {
        let resp = client.post(&format!("/v1/homeservers/{id}/reserved-users"), &json!({ "email": email, "localpart": localpart })).await;
        let made = expect_status(&resp, 201);
        assert_eq!(made["apply_status"], "pending", "the homeserver has yet to make the account: {made}");
        reserved.push(made["id"].as_str().unwrap().to_owned());
    }
    let mail = wait_for_mail(&smtp.maildir(), "carol@corp.example", "Your Matrix account on", 0).await;
    assert!(mail.text.contains("@carol:") && !mail.html.is_empty());
    let link = link_to(&mail.text, "/console/invite");
    let b = Browser::new(&server);
    // The account may still be being made: the page says so, and the link keeps working.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let page = b.get(&link).await;
        if page.status == 200 {
            assert!(page.body.contains("@carol:"));
            break;
        }
        assert_eq!(page.status, 409, "{}", page.body);
        assert!(Instant::now() < deadline, "the account was never made");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let weak = b.post("/console/invite", &[("token", &token_of(&link)), ("password", "short")]).await;
    assert_eq!(weak.status, 422);
    assert!(weak.field_error("password").unwrap().contains("12 characters"));
    let chosen = "lighthouse keeper 42";
    let set = b.post("/console/invite", &[("token", &token_of(&link)), ("password", chosen)]).await;
    assert_eq!(set.status, 200, "{}", set.body);
    login_with(&matrix, "carol", chosen).await;
    assert_eq!(b.get(&link).await.status, 400, "the link works once");
    assert!(!server.log().contains(chosen), "the password is never logged");

    // An expired link offers a new one, mailed to the address on record. (Dave's account is
    // made once his reserved user shows `applied`.)
    wait_applied(&client, &format!("/v1/homeservers/{id}/reserved-users/{}", reserved[1])).await;
    let dave = link_to(&wait_for_mail(&smtp.maildir(), "dave@corp.example", "Your Matrix account on", 0).await.text, "/console/invite");
    advance_clock(&client, 73 * 3600).await;
    let expired = b.get(&dave).await;
    assert_eq!(expired.status, 400);
    assert!(expired.body.contains("Mail me a new link"));
    assert_eq!(b.post("/console/invite/renew", &[("token", &token_of(&dave))]).await.status, 200);
    let renewed = link_to(&wait_for_mail(&smtp.maildir(), "dave@corp.example", "Your Matrix account on", 1).await.text, "/console/invite");
    assert_ne!(renewed, dave);
    assert_eq!(b.post("/console/invite", &[("token", &token_of(&renewed)), ("password", "harbour pilot 1977")]).await.status, 200);
    login_with(&matrix, "dave", "harbour pilot 1977").await;
}

/// Polls an object until the homeserver has applied it.
async fn wait_applied(client: &Client, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let object = expect_status(&client.get(path).await, 200);
        if object["apply_status"] == "applied" {
            return object;
        }
        assert_eq!(object["apply_status"], "pending", "{object}");
        assert!(Instant::now() < deadline, "never applied: {object}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Logs in with `password`, retrying while Synapse restarts to take new reservations (R8).
async fn login_with(m: &Matrix, user: &str, password: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = m.login(user, password).await;
        if status == 200 {
            return;
        }
        assert!(status == 502 || status == 503, "login of {user} refused: {status} {body}");
        assert!(Instant::now() < deadline, "login of {user} never worked: {status} {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
