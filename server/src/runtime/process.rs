//! Synapse processes: start (as the tenant's user), find again after a restart, and stop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A Synapse process the runtime owns.
#[derive(Debug, Clone)]
pub struct Running {
    pub pid: i32,
    pub config_hash: String,
    pub config_path: PathBuf,
}

/// Whether `pid` is a live Synapse started with `config_path` (not a recycled pid).
pub fn is_synapse(pid: i32, config_path: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let wanted = config_path.as_os_str().as_encoded_bytes();
    let is_zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true);
    !is_zombie && args.iter().any(|a| *a == b"synapse.app.homeserver") && args.iter().any(|a| *a == wanted)
}

/// Every live Synapse started with `config_path`, found by scanning `/proc` (Synapse writes
/// no pid file unless it daemonizes, and a file in the tenant's directory could be forged).
pub fn find(config_path: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| is_synapse(*pid, config_path))
        .collect();
    pids.sort_unstable();
    pids
}

/// Reaps a child we started, so it never lingers as a zombie, and reports how it ended.
pub fn reap(mut child: tokio::process::Child, homeserver_id: String) {
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => tracing::info!(homeserver_id, %status, "synapse exited"),
            Err(e) => tracing::warn!(homeserver_id, error = %e, "could not wait for synapse"),
        }
    });
}

/// SIGTERM to the process group, then SIGKILL after `grace`. Returns once the process is gone.
pub async fn stop(pid: i32, config_path: &Path, grace: Duration) {
    if !is_synapse(pid, config_path) {
        return;
    }
    signal_group(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_synapse(pid, config_path) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(pid, "synapse ignored SIGTERM; killing it");
    signal_group(pid, libc::SIGKILL);
    while is_synapse(pid, config_path) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal_group(pid: i32, signal: i32) {
    // Synapse runs in its own process group (pgid = pid), so this reaches any helpers too.
    // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
    unsafe {
        if libc::kill(-pid, signal) != 0 {
            libc::kill(pid, signal);
        }
    }
}
