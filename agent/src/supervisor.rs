//! Process lifecycle (R3, R5): each homeserver's Synapse runs in its sandbox, inside its
//! cgroup's `synapse` leaf. The cgroup, not a pid file or a scan of `/proc`, is what says
//! whether a homeserver runs: only root can put a process into it or take one out, and a
//! restarted agent finds its homeservers again there. Short jobs as the tenant (reading its
//! database, generating its signing key) run in the same sandbox layout, without a network,
//! in the `helpers` leaf, with a timeout and a cap on their output.
//!
//! Synapse's own stdout and stderr go to `agent/logs/<id>.log`, a root-only file the tenant can
//! write to through its inherited descriptor but never replace or read back. It is kept
//! small, and its tail is logged (escaped) under a correlation id when the sandbox ends.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use matrixhost_agent_api::{correlation_id, ErrorCode, ExitReport, HomeserverId, Limits, Started, StateLayout, SynapseSpec};
use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroups, Leaf, LeafCgroup};
use crate::failure::{log_safe, Code, Failure, Outcome};
use crate::fsat::Dir;
use crate::sandbox::{Sandbox, TenantSandbox};
use crate::synapse;

/// How long Synapse gets to stop after SIGTERM before its cgroup is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// The output file is emptied when it grows past this (its tail is logged at every exit).
const OUTPUT_CAP: u64 = 1 << 20;
const TAIL_BYTES: u64 = 4096;

/// What the agent remembers of a started homeserver (root-only, `agent/run/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    fingerprint: String,
    started_at: i64,
    attempt: String,
}

/// A homeserver's tenant: who it runs as and where its data is.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: HomeserverId,
    pub uid: u32,
    pub gid: u32,
    /// The unlocked data directory on its volume (host path).
    pub data_dir: PathBuf,
}

/// What the supervisor knows about one homeserver's process.
#[derive(Debug, Clone)]
pub struct ProcessState {
    pub running: bool,
    pub fingerprint: Option<String>,
    pub oom_kills: u64,
    pub last_exit: Option<ExitReport>,
}

#[derive(Debug)]
pub struct Supervisor {
    layout: StateLayout,
    pub sandbox: Sandbox,
    pub cgroups: Cgroups,
    pub pids_max: u32,
    /// The control plane's group: it may enter each homeserver's socket directory.
    api_gid: u32,
    exits: Mutex<HashMap<HomeserverId, ExitReport>>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Joins `leaf` between fork and exec, before the sandbox exists: nothing the tenant runs is
/// ever outside its cgroup.
fn join_on_exec(cmd: &mut Command, leaf: &LeafCgroup) -> Result<()> {
    let files = leaf.procs_files()?;
    // SAFETY: the closure runs in the forked child before exec. It allocates nothing and only
    // makes async-signal-safe system calls (getpid, open, write, close).
    unsafe {
        cmd.pre_exec(move || {
            let mut pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
            let mut digits = [0u8; 10];
            let mut n = 0;
            loop {
                digits[digits.len() - 1 - n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let text = &digits[digits.len() - n..];
            for file in &files {
                let fd = rustix::fs::open(file.as_c_str(), rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())?;
                rustix::io::write(&fd, text)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// Reads at most `max` bytes, then stops (the writer then gets EPIPE). Returns whether more was
/// offered.
fn read_capped(mut r: impl Read, max: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) if out.len() + n > max => {
                out.extend_from_slice(&buf[..max - out.len()]);
                return (out, true);
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

impl Supervisor {
    pub fn new(layout: StateLayout, sandbox: Sandbox, cgroups: Cgroups, pids_max: u32, api_gid: u32) -> Result<Supervisor> {
        for dir in ["config", "logs", "run"] {
            let path = layout.agent_dir().join(dir);
            fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
            crate::fsat::Dir::open(&path)?.set_owner_mode(0, 0, 0o700)?;
        }
        Ok(Supervisor { layout, sandbox, cgroups, pids_max, api_gid, exits: Mutex::default() })
    }

    fn config_dir(&self, id: &HomeserverId) -> PathBuf {
        self.layout.agent_dir().join("config").join(id.as_str())
    }

    fn output_path(&self, id: &HomeserverId) -> PathBuf {
        self.layout.agent_dir().join("logs").join(format!("{id}.log"))
    }

    fn record_path(&self, id: &HomeserverId) -> PathBuf {
        self.layout.agent_dir().join("run").join(format!("{id}.json"))
    }

    fn record(&self, id: &HomeserverId) -> Option<RunRecord> {
        serde_json::from_slice(&fs::read(self.record_path(id)).ok()?).ok()
    }

    fn sandbox_of(&self, t: &Tenant, network: bool) -> TenantSandbox {
        TenantSandbox {
            data_dir: t.data_dir.clone(),
            config_dir: self.config_dir(&t.id),
            socket_dir: self.layout.homeserver_socket_dir(&t.id),
            uid: t.uid,
            gid: t.gid,
            network,
        }
    }

    /// Whether the homeserver's sandbox has processes.
    pub fn running(&self, id: &HomeserverId) -> Result<bool> {
        let cg = self.cgroups.of(id);
        Ok(cg.exists() && !cg.leaf(Leaf::Synapse).is_empty()?)
    }

    pub fn state(&self, id: &HomeserverId) -> Result<ProcessState> {
        self.trim_output(id);
        let cg = self.cgroups.of(id);
        Ok(ProcessState {
            running: self.running(id)?,
            fingerprint: self.record(id).map(|r| r.fingerprint),
            oom_kills: if cg.exists() { cg.oom_kills() } else { 0 },
            last_exit: self.exits.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned(),
        })
    }

    /// The last few KiB Synapse printed (root-only file; the caller escapes it for the log).
    fn output_tail(&self, id: &HomeserverId) -> String {
        let read = || -> std::io::Result<String> {
            let mut f = File::open(self.output_path(id))?;
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
            let mut buf = Vec::new();
            f.take(TAIL_BYTES).read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        };
        read().unwrap_or_default()
    }

    /// A tenant can make Synapse print without end: the file is emptied past [`OUTPUT_CAP`].
    fn trim_output(&self, id: &HomeserverId) {
        let path = self.output_path(id);
        if fs::metadata(&path).is_ok_and(|m| m.len() > OUTPUT_CAP) {
            if let Ok(f) = OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
                let _ = f.set_len(0);
                tracing::warn!(homeserver = %id, "the homeserver's output passed {OUTPUT_CAP} bytes; emptied it");
            }
        }
    }

    /// Starts the homeserver with `spec` and `limits`. Running the same spec already, it only
    /// gets the new limits; running another spec, it is stopped first.
    pub async fn start(self: &Arc<Self>, t: Tenant, spec: SynapseSpec, limits: Limits, attempt: String) -> Outcome<Started> {
        synapse::check(&spec).code(ErrorCode::InvalidRequest)?;
        let fingerprint = spec.fingerprint();
        let this = self.clone();
        let id = t.id.clone();
        let running = tokio::task::spawn_blocking(move || -> Outcome<bool> {
            let cg = this.cgroups.ensure(&id).code(ErrorCode::SandboxFailed)?;
            cg.set_limits(limits, this.pids_max).code(ErrorCode::SandboxFailed)?;
            this.running(&id).code(ErrorCode::Internal)
        })
        .await
        .code(ErrorCode::Internal)??;
        if running {
            if self.record(&t.id).is_some_and(|r| r.fingerprint == fingerprint) {
                return Ok(Started { started: false, fingerprint });
            }
            self.stop(&t.id, t.uid, None).await?;
        }
        let this = self.clone();
        let (t2, spec2) = (t.clone(), spec.clone());
        let cmd = tokio::task::spawn_blocking(move || this.prepare(&t2, &spec2)).await.code(ErrorCode::Internal)??;
        let mut child = tokio::process::Command::from(cmd).spawn().code(ErrorCode::SandboxFailed)?;
        let record = RunRecord { fingerprint: fingerprint.clone(), started_at: now_unix(), attempt: attempt.clone() };
        let json = serde_json::to_vec(&record).expect("a record serialises");
        fs::write(self.record_path(&t.id), json).code(ErrorCode::Internal)?;
        tracing::info!(homeserver = %t.id, attempt = %attempt, pid = child.id().unwrap_or(0), "homeserver sandbox started");
        let this = self.clone();
        let id = t.id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            this.reaped(&id, status.ok());
        });
        Ok(Started { started: true, fingerprint })
    }

    /// Records how a sandbox this agent started ended, and logs its last output.
    fn reaped(&self, id: &HomeserverId, status: Option<ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let reference = correlation_id();
        let (code, signal) = status.map(|s| (s.code(), s.signal())).unwrap_or((None, None));
        tracing::info!(
            homeserver = %id, correlation_id = %reference, code, signal,
            output_tail = %log_safe(&self.output_tail(id), TAIL_BYTES as usize),
            "homeserver sandbox exited"
        );
        let report = ExitReport { code, signal, at: now_unix(), correlation_id: reference };
        self.exits.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), report);
    }

    /// Files, socket directory and signing key; returns the command that starts Synapse.
    fn prepare(&self, t: &Tenant, spec: &SynapseSpec) -> Outcome<Command> {
        let ts = self.sandbox_of(t, spec.federation_enabled);
        let at = self.sandbox.placement(&ts);
        #[cfg(feature = "test-hooks")]
        self.loosen_for_unsandboxed(t).code(ErrorCode::SandboxFailed)?;
        let config = self.config_dir_for(t).code(ErrorCode::ConfigWriteFailed)?;
        synapse::write_config(&config, spec, &at, t.gid).code(ErrorCode::ConfigWriteFailed)?;
        self.socket_dir_for(t, true).code(ErrorCode::SandboxFailed)?;
        let data = Dir::open(&t.data_dir).code(ErrorCode::VolumeOpenFailed)?;
        if data.kind(synapse::SIGNING_KEY_FILE).code(ErrorCode::VolumeOpenFailed)?.is_none() {
            let argv = self.synapse_argv(&at, &["--generate-keys"]);
            self.run_helper(t, argv, Duration::from_secs(120), 64 * 1024).code(ErrorCode::SigningKeyFailed)?;
        }
        self.trim_output(&t.id);
        let output =
            OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(self.output_path(&t.id)).code(ErrorCode::Internal)?;
        let mut cmd = self.sandbox.command(&ts, &self.synapse_argv(&at, &[]));
        cmd.stdout(Stdio::from(output.try_clone().code(ErrorCode::Internal)?)).stderr(Stdio::from(output));
        join_on_exec(&mut cmd, &self.cgroups.of(&t.id).leaf(Leaf::Synapse)).code(ErrorCode::SandboxFailed)?;
        Ok(cmd)
    }

    fn synapse_argv(&self, at: &synapse::Placement, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.sandbox.python().to_string_lossy().into_owned(),
            "-m".into(),
            "synapse.app.homeserver".into(),
            "--config-path".into(),
            at.config_file().to_string_lossy().into_owned(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// `agent/config/<id>`: root's, readable by the tenant's group.
    fn config_dir_for(&self, t: &Tenant) -> Result<Dir> {
        let parent = Dir::open(&self.layout.agent_dir().join("config"))?;
        let dir = parent.ensure_dir(t.id.as_str(), 0o750)?;
        dir.set_owner_mode(0, t.gid, 0o750)?;
        Ok(dir)
    }

    /// `run/homeservers/<id>`: the tenant's (it binds its socket there), entered by the control
    /// plane's group only. With `clear`, whatever the tenant left there goes first (a stale
    /// socket or lock would stop Synapse from binding).
    fn socket_dir_for(&self, t: &Tenant, clear: bool) -> Result<()> {
        let parent = Dir::open(&self.layout.sockets_dir())?;
        let dir = parent.ensure_dir(t.id.as_str(), 0o750)?;
        dir.set_owner_mode(t.uid, self.api_gid, 0o750)?;
        if clear {
            for (name, _) in dir.entries()? {
                dir.remove_all(&name)?;
            }
        }
        Ok(())
    }

    /// Without the sandbox the tenant reaches its files by their host paths (test builds only).
    #[cfg(feature = "test-hooks")]
    fn loosen_for_unsandboxed(&self, t: &Tenant) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.sandbox.kind != crate::sandbox::Kind::Unsandboxed {
            return Ok(());
        }
        let mut dirs = vec![self.layout.root().to_owned(), self.layout.agent_dir(), self.layout.agent_dir().join("config")];
        dirs.extend(t.data_dir.ancestors().skip(1).take_while(|d| d.starts_with(self.layout.agent_dir())).map(|d| d.to_owned()));
        for d in dirs {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o711))?;
        }
        Ok(())
    }

    /// Stops the homeserver: SIGTERM to the tenant's processes, then, after the grace period,
    /// SIGKILL to everything in its `synapse` leaf. With `diagnose`, its last output is logged
    /// under that correlation id first.
    pub async fn stop(self: &Arc<Self>, id: &HomeserverId, tenant_uid: u32, diagnose: Option<String>) -> Outcome<()> {
        if let Some(reference) = diagnose {
            tracing::warn!(homeserver = %id, correlation_id = %reference, output_tail = %log_safe(&self.output_tail(id), TAIL_BYTES as usize), "stopping the homeserver after a failure");
        }
        if !self.running(id).code(ErrorCode::StopFailed)? {
            return Ok(());
        }
        let leaf = self.cgroups.of(id).leaf(Leaf::Synapse);
        let term = leaf.clone();
        tokio::task::spawn_blocking(move || term.signal_all(rustix::process::Signal::TERM, Some(tenant_uid)))
            .await
            .code(ErrorCode::Internal)?
            .code(ErrorCode::StopFailed)?;
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if leaf.is_empty().code(ErrorCode::StopFailed)? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(homeserver = %id, "synapse ignored SIGTERM; killing its cgroup");
        tokio::task::spawn_blocking(move || leaf.kill_all(Duration::from_secs(10))).await.code(ErrorCode::Internal)?.code(ErrorCode::StopFailed)
    }

    /// Runs `argv` as the tenant in its sandbox (no network), in the `helpers` leaf, for at
    /// most `timeout`, and returns its stdout (at most `max_output` bytes). Blocking.
    pub fn run_helper(&self, t: &Tenant, argv: Vec<String>, timeout: Duration, max_output: usize) -> Result<Vec<u8>> {
        // The sandbox binds these; they must exist even before the homeserver first started.
        self.config_dir_for(t)?;
        self.socket_dir_for(t, false)?;
        let cg = self.cgroups.ensure(&t.id)?;
        let leaf = cg.leaf(Leaf::Helpers);
        let mut cmd = self.sandbox.command(&self.sandbox_of(t, false), &argv);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        join_on_exec(&mut cmd, &leaf)?;
        let mut child = cmd.spawn().context("cannot start the sandbox")?;
        let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let out_reader = std::thread::spawn(move || read_capped(out, max_output));
        let err_reader = std::thread::spawn(move || read_capped(err, 16 * 1024));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = leaf.kill_all(Duration::from_secs(10));
                let _ = child.kill();
                let _ = child.wait();
                bail!("the job as the tenant did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Nothing the job started outlives it.
        leaf.kill_all(Duration::from_secs(10))?;
        let (stdout, too_much) = out_reader.join().unwrap_or_default();
        let (stderr, _) = err_reader.join().unwrap_or_default();
        if too_much {
            bail!("the job as the tenant printed more than {max_output} bytes");
        }
        if !status.success() {
            bail!("the job as the tenant failed ({status}): {}", log_safe(&String::from_utf8_lossy(&stderr), 2048));
        }
        Ok(stdout)
    }

    /// Removes the homeserver's cgroup, config, socket directory, output and record. The
    /// process must be stopped.
    pub fn forget(&self, id: &HomeserverId) -> Result<()> {
        self.cgroups.of(id).remove()?;
        for (parent, name) in [
            (self.layout.agent_dir().join("config"), id.to_string()),
            (self.layout.sockets_dir(), id.to_string()),
            (self.layout.agent_dir().join("logs"), format!("{id}.log")),
            (self.layout.agent_dir().join("run"), format!("{id}.json")),
        ] {
            Dir::open(&parent)?.remove_all(&name).with_context(|| format!("cannot remove {}", parent.join(&name).display()))?;
        }
        self.exits.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        Ok(())
    }

    /// Homeservers with a config, a record or a cgroup.
    pub fn known(&self) -> Result<Vec<HomeserverId>> {
        let mut ids = Vec::new();
        for dir in [self.layout.agent_dir().join("config"), self.layout.agent_dir().join("run")] {
            for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
                let name = entry?.file_name();
                let name = name.to_string_lossy();
                if let Ok(id) = HomeserverId::parse(name.strip_suffix(".json").unwrap_or(&name)) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }
}

impl From<Failure> for anyhow::Error {
    fn from(f: Failure) -> Self {
        f.detail.context(f.code.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped() {
        let (v, more) = read_capped(&b"0123456789"[..], 4);
        assert_eq!((v.as_slice(), more), (&b"0123"[..], true));
        let (v, more) = read_capped(&b"01"[..], 4);
        assert_eq!((v.as_slice(), more), (&b"01"[..], false));
    }
}
