//! Benchmark (not a test) of backups (R4): backup and restore throughput for a real homeserver
//! whose database is at least 200 MB, and the peak memory of the two daemons. Run it with
//! `scripts/bench.sh backup` (`MH_BENCH_DB_MB=1024` for a larger database); see
//! `docs/benchmarks.md`.
//!
//! It runs the optimised `matrixhost-agent` and `matrixhostd` (profile `bench-hooks`) with real
//! Synapse, creates a homeserver, grows its database with incompressible filler rows (written as
//! the tenant, inside its sandbox, while Synapse runs), then takes an on-demand backup and
//! restores it through the API. Numbers: wall time from the request to `completed`, the agent's
//! own timing from its log, and `VmHWM` (peak resident memory) of the agent, which does the file
//! work, and of `matrixhostd`, which only drives it.

use std::time::{Duration, Instant};

use matrixhost_tests::backups::{wait_backup, wait_restore};
use matrixhost_tests::runtime::{as_tenant, create_homeserver, runtime_available, wait_status, RuntimeServer};
use matrixhost_tests::{expect_status, strip_ansi};
use serde_json::json;

fn vm_hwm_mib(pid: Option<u32>) -> f64 {
    let status = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok()).unwrap_or_default();
    let kib: u64 = status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    kib as f64 / 1024.0
}

/// The value of `key=...` in the last log line containing `what`.
fn log_field(log: &str, what: &str, key: &str) -> f64 {
    let Some(line) = strip_ansi(log).lines().rev().find(|l| l.contains(what)).map(str::to_owned) else {
        return f64::NAN;
    };
    let Some(start) = line.find(&format!(" {key}=")) else {
        return f64::NAN;
    };
    let rest = &line[start + key.len() + 2..];
    rest.split_whitespace().next().map(|v| v.trim_matches('"')).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn main() {
    if !runtime_available("bench backup") {
        return;
    }
    let db_mb: u64 = std::env::var("MH_BENCH_DB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(db_mb));
}

async fn run(db_mb: u64) {
    let server = RuntimeServer::start(&[]).await;
    let client = server.client();
    let volume_gb = (db_mb * 4 / 1000 + 2).clamp(2, 10);
    let hs = create_homeserver(&client, "nickel", "bench", json!({"volume": {"size_gb": volume_gb, "encrypted": true}})).await;
    let id = hs["id"].as_str().unwrap().to_owned();
    wait_status(&client, &id, "running").await;
    let db = server.data_dir(&id).join("homeserver.db");

    // Grow the live database with incompressible rows, 1 MiB each, as the tenant.
    let grow = Instant::now();
    let script = format!(
        r#"/opt/synapse/bin/python - <<'PY'
import os, sqlite3
con = sqlite3.connect("/data/homeserver.db", timeout=60)
con.execute("CREATE TABLE IF NOT EXISTS bench_filler (id INTEGER PRIMARY KEY, data BLOB)")
for i in range({db_mb}):
    con.execute("INSERT INTO bench_filler (data) VALUES (?)", (os.urandom(1 << 20),))
    if i % 32 == 0:
        con.commit()
con.commit()
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
PY"#
    );
    let out = as_tenant(&id, &script);
    assert!(out.status.success(), "growing the database: {}", String::from_utf8_lossy(&out.stderr));
    let db_bytes = std::fs::metadata(&db).unwrap().len();
    eprintln!("grew the database to {:.1} MB in {:?}", db_bytes as f64 / 1e6, grow.elapsed());
    assert!(db_bytes >= 200_000_000, "the database is only {db_bytes} bytes");
    let idle = (vm_hwm_mib(server.agent_pid()), vm_hwm_mib(server.pid()));

    let started = Instant::now();
    let b = expect_status(&client.post(&format!("/v1/homeservers/{id}/backups"), &json!({})).await, 202);
    let bk = b["id"].as_str().unwrap().to_owned();
    let done = wait_backup(&client, &id, &bk, Duration::from_secs(3600)).await;
    let backup_wall = started.elapsed().as_secs_f64();
    assert_eq!(done["status"], "completed", "{done}");
    let archive_bytes = done["size_bytes"].as_u64().unwrap() as f64;
    let log = server.agent_log();
    let agent_secs = log_field(&log, "backup written", "seconds");
    let plaintext = log_field(&log, "backup written", "plaintext_bytes");
    let copy_secs = log_field(&log, "backup written", "database_copy_seconds");
    let after_backup = (vm_hwm_mib(server.agent_pid()), vm_hwm_mib(server.pid()));

    let started = Instant::now();
    let r = expect_status(&client.post(&format!("/v1/homeservers/{id}/restores"), &json!({"backup_id": bk})).await, 202);
    let restored = wait_restore(&client, &id, r["id"].as_str().unwrap()).await;
    let restore_wall = started.elapsed().as_secs_f64();
    assert_eq!(restored["status"], "completed", "{restored}");
    let unpack_secs = log_field(&server.log(), "archive verified and unpacked", "seconds");
    let after_restore = (vm_hwm_mib(server.agent_pid()), vm_hwm_mib(server.pid()));
    wait_status(&client, &id, "running").await;

    let mb = |bytes: f64| bytes / 1e6;
    println!();
    println!("backup benchmark (profile {}, real Synapse, database {:.1} MB)", matrixhost_tests::bin_profile(), mb(db_bytes as f64));
    println!("  plaintext archived            {:>9.1} MB", mb(plaintext));
    println!("  archive size                  {:>9.1} MB", mb(archive_bytes));
    println!("  backup, in the agent          {:>9.2} s   {:>8.1} MB/s", agent_secs, mb(plaintext) / agent_secs);
    println!(
        "    of which SQLite online copy {:>9.2} s   (then {:.2} s to encrypt and store: {:.1} MB/s)",
        copy_secs,
        agent_secs - copy_secs,
        mb(plaintext) / (agent_secs - copy_secs)
    );
    println!("  backup, request to done       {:>9.2} s   {:>8.1} MB/s", backup_wall, mb(plaintext) / backup_wall);
    println!("  restore, verify + unpack      {:>9.2} s   {:>8.1} MB/s", unpack_secs, mb(plaintext) / unpack_secs);
    println!("  restore, request to running   {:>9.2} s   {:>8.1} MB/s  (includes stopping and starting Synapse)", restore_wall, mb(plaintext) / restore_wall);
    println!("  peak RSS (VmHWM), MiB          agent  matrixhostd");
    for (when, (agent, api)) in [("idle", idle), ("after the backup", after_backup), ("after the restore", after_restore)] {
        println!("    {when:<27} {agent:>6.1} {api:>12.1}");
    }
}
