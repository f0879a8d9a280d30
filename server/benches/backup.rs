//! Benchmark (not a test) of backups (R4): backup and restore throughput for a real homeserver
//! whose database is at least 200 MB, and the peak memory of `matrixhostd`.
//!
//! ```sh
//! cargo bench -p matrixhost-server --bench backup            # 256 MB database
//! MH_BENCH_DB_MB=1024 cargo bench -p matrixhost-server --bench backup
//! ```
//!
//! It runs the release `matrixhostd` with its runtime (root, loop devices and the Synapse venv,
//! as the runtime tests), creates a homeserver, grows its Synapse database with incompressible
//! filler rows (written as the tenant user, while Synapse runs), then takes an on-demand backup
//! and restores it through the API. Numbers: wall time from the request to `completed`, the
//! server's own timing from its log, and `VmHWM` (peak resident memory) of `matrixhostd`.

use std::time::{Duration, Instant};

use matrixhost_tests::backups::{tenant_python, wait_backup, wait_restore};
use matrixhost_tests::runtime::{cleanup_tenants, create_homeserver, runtime_available, wait_status};
use matrixhost_tests::{expect_status, strip_ansi, Backend, TestServer};
use serde_json::json;

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// The value of `key=...` in the last log line containing `what`.
fn log_field(log: &str, what: &str, key: &str) -> Option<String> {
    let line = strip_ansi(log).lines().rev().find(|l| l.contains(what))?.to_owned();
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let value = rest.split_whitespace().next()?.trim_matches('"');
    Some(value.to_owned())
}

fn main() {
    if !runtime_available("bench backup") {
        return;
    }
    let db_mb: u64 = std::env::var("MH_BENCH_DB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_matrixhostd"));
        let server = TestServer::builder(bin, Backend::Sqlite).with_runtime().args(["--test-clock", "--homeserver-ports", "29500-29549"]).start().await;
        // Dropped before the server, even on a panic: removes the tenant's processes, user,
        // mount and loop device (and stops matrixhostd, whose command line names the state).
        let _cleanup = Cleanup(server.state_dir().to_owned());
        run(&server, db_mb).await;
    });
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup_tenants(&self.0);
    }
}

async fn run(server: &TestServer, db_mb: u64) {
    let client = server.client();
    let pid = server.pid().expect("matrixhostd runs");
    let volume_gb = (db_mb * 4 / 1000 + 2).max(2);
    let hs = create_homeserver(&client, "nickel", "bench", json!({"volume": {"size_gb": volume_gb, "encrypted": true}})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    wait_status(&client, &id, "running").await;
    let data_dir = server.state_dir().join("volumes/mnt").join(&id).join("data");
    let db = data_dir.join("homeserver.db");

    // Grow the live database with incompressible rows, 1 MiB each, as the tenant.
    let grow = Instant::now();
    let script = r#"
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=60)
con.execute("CREATE TABLE IF NOT EXISTS bench_filler (id INTEGER PRIMARY KEY, data BLOB)")
for i in range(int(sys.argv[2])):
    con.execute("INSERT INTO bench_filler (data) VALUES (?)", (os.urandom(1 << 20),))
    if i % 32 == 0:
        con.commit()
con.commit()
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
"#;
    tenant_python(&id, script, &[&db.to_string_lossy(), &db_mb.to_string()]);
    let db_bytes = std::fs::metadata(&db).unwrap().len();
    eprintln!("grew the database to {:.1} MB in {:?}", db_bytes as f64 / 1e6, grow.elapsed());
    assert!(db_bytes >= 200_000_000, "the database is only {db_bytes} bytes");
    let idle_hwm = vm_hwm_kib(pid);

    // Backup.
    let started = Instant::now();
    let b = expect_status(&client.post(&format!("/v1/homeservers/{id}/backups"), &json!({})).await, 202);
    let bk = b["id"].as_str().unwrap().to_owned();
    let done = wait_backup(&client, &id, &bk, Duration::from_secs(3600)).await;
    let backup_wall = started.elapsed().as_secs_f64();
    assert_eq!(done["status"], "completed", "{done}");
    let archive_bytes = done["size_bytes"].as_u64().unwrap();
    let log = server.log();
    let server_secs: f64 = log_field(&log, "backup completed", "seconds").and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let plaintext: f64 = log_field(&log, "backup completed", "plaintext_bytes").and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let copy_secs: f64 = log_field(&log, "backup completed", "database_copy_seconds").and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let backup_hwm = vm_hwm_kib(pid);

    // Restore.
    let started = Instant::now();
    let r = expect_status(&client.post(&format!("/v1/homeservers/{id}/restores"), &json!({"backup_id": bk})).await, 202);
    let restored = wait_restore(&client, &id, r["id"].as_str().unwrap()).await;
    let restore_wall = started.elapsed().as_secs_f64();
    assert_eq!(restored["status"], "completed", "{restored}");
    let log = server.log();
    let unpack_secs: f64 = log_field(&log, "archive verified and unpacked", "seconds").and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let restore_hwm = vm_hwm_kib(pid);
    wait_status(&client, &id, "running").await;

    let mb = |bytes: f64| bytes / 1e6;
    println!();
    println!("backup benchmark (release matrixhostd, real Synapse, database {:.1} MB)", mb(db_bytes as f64));
    println!("  plaintext archived          {:>10.1} MB", mb(plaintext));
    println!("  archive size                {:>10.1} MB", mb(archive_bytes as f64));
    println!("  backup, server side         {:>10.2} s   {:>8.1} MB/s", server_secs, mb(plaintext) / server_secs);
    println!("    of which SQLite online copy {:>8.2} s   (then {:.2} s to encrypt and store: {:.1} MB/s)", copy_secs, server_secs - copy_secs, mb(plaintext) / (server_secs - copy_secs));
    println!("  backup, request to done     {:>10.2} s   {:>8.1} MB/s", backup_wall, mb(plaintext) / backup_wall);
    println!("  restore, verify + unpack    {:>10.2} s   {:>8.1} MB/s", unpack_secs, mb(plaintext) / unpack_secs);
    println!("  restore, request to running {:>10.2} s   {:>8.1} MB/s  (includes stopping and starting Synapse)", restore_wall, mb(plaintext) / restore_wall);
    println!("  matrixhostd VmHWM           {:>10.1} MiB idle, {:.1} MiB after the backup, {:.1} MiB after the restore", idle_hwm as f64 / 1024.0, backup_hwm as f64 / 1024.0, restore_hwm as f64 / 1024.0);
}
