//! `matrixhost-agent`, the privileged node agent.
//!
//! The control plane (`matrixhostd`) decides; the agent does what needs root and nothing else:
//! tenant users, encrypted volumes and their keys, sandboxes, cgroups, processes, and the file
//! work of backups and restores. It answers a small typed API (`matrixhost-agent-api`) on a
//! Unix socket only the control plane's user can open, and it never interprets what a tenant
//! wrote: a tenant's files are touched through directory descriptors without following links,
//! a tenant's database is read by Python running as the tenant inside its sandbox, and what
//! goes back over the socket is typed values and codes from a fixed set.

#[cfg(all(feature = "test-hooks", not(debug_assertions)))]
compile_error!("the test-hooks feature is for test builds only; release builds never enable it");

pub mod agent;
pub mod archive;
pub mod backups;
pub mod cgroup;
pub mod failure;
pub mod fsat;
pub mod keys;
pub mod preflight;
pub mod sandbox;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod supervisor;
pub mod synapse;
pub mod tenant;
pub mod tenant_db;
pub mod tools;
pub mod volume;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrixhost_agent_api::StateLayout;

/// Everything the agent is told at start-up.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub layout: StateLayout,
    /// The control plane's system user: it alone may use the socket.
    pub api_user: String,
    /// The Synapse virtualenv (bound read-only into every sandbox).
    pub venv: PathBuf,
    pub backup_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub cgroup_parent: String,
    /// R5: the pids limit of every homeserver (plans set memory and CPU).
    pub pids_max: u32,
    pub sandbox: sandbox::Kind,
    /// Test hook: a pause inside every backup.
    pub backup_pause: Option<Duration>,
}

/// The control plane's user and group ids.
pub fn api_ids(name: &str) -> Result<(u32, u32)> {
    let user = nix::unistd::User::from_name(name)
        .with_context(|| format!("cannot look up the user {name}"))?
        .with_context(|| format!("the control plane's user `{name}` does not exist"))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

fn ensure_dir(path: &std::path::Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => bail!("{} must be a directory, not a symlink or a file", path.display()),
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?,
    }
    fsat::Dir::open(path).and_then(|d| d.set_owner_mode(uid, gid, mode)).with_context(|| format!("cannot set the owner and mode of {}", path.display()))
}

/// Lays out the state directory (see `StateLayout`): root's parts private, the control plane's
/// directory handed to its user, the run directory traversable so it reaches its socket.
pub fn prepare_layout(settings: &AgentSettings) -> Result<()> {
    let (api_uid, api_gid) = api_ids(&settings.api_user)?;
    let layout = &settings.layout;
    ensure_dir(layout.root(), 0, 0, 0o711)?;
    ensure_dir(&layout.agent_dir(), 0, 0, 0o700)?;
    ensure_dir(&layout.run_dir(), 0, 0, 0o711)?;
    ensure_dir(&layout.sockets_dir(), 0, 0, 0o711)?;
    ensure_dir(&layout.api_dir(), api_uid, api_gid, 0o700)?;
    ensure_dir(&settings.backup_dir, 0, 0, 0o700)?;
    Ok(())
}
