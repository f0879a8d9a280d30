//! R5: each homeserver's resource limits, as a cgroup of its own.
//!
//! Both cgroup versions are supported:
//! * **v2** (unified hierarchy mounted at the root, `cgroup.controllers` present): one directory
//!   `ROOT/<parent>/<id>` with `memory.max`, `memory.swap.max`, `cpu.max` and `pids.max`.
//! * **v1** (a hierarchy per controller): `ROOT/{memory,cpu,pids,freezer}/<parent>/<id>`, with
//!   `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` where swap accounting exists),
//!   `cpu.cfs_quota_us`/`cpu.cfs_period_us` and `pids.max`. `freezer` is used to stop a cgroup
//!   race-free when it is there.
//!
//! The limits sit on the homeserver's cgroup; its processes live in two leaves below it:
//! `synapse` (the homeserver's sandbox: the homeserver runs while this leaf has processes) and
//! `helpers` (short jobs as the tenant, such as reading its database for a backup), so both
//! count against the tenant's plan. A process joins its leaf before it execs the sandbox (see
//! `supervisor.rs`), so nothing a tenant runs is ever outside it, and only root can move a
//! process between cgroups. The kernel's OOM killer then acts inside the cgroup only: a tenant
//! running out of memory kills its own processes, never another tenant's.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use matrixhost_agent_api::{HomeserverId, Limits};

/// The CFS period every homeserver gets: quota = millicores × period / 1000.
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Where the homeservers' cgroups live.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: Version,
    /// The cgroup filesystem root, normally `/sys/fs/cgroup`.
    root: PathBuf,
    /// The directory under each hierarchy that holds every homeserver's cgroup.
    parent: String,
}

const V1_REQUIRED: [&str; 3] = ["memory", "cpu", "pids"];
const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

impl Cgroups {
    /// Finds the cgroup version mounted at `root`. `parent` is a plain directory name.
    pub fn detect(root: &Path, parent: &str) -> Result<Cgroups> {
        if parent.is_empty() || !parent.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            bail!("the cgroup parent `{parent}` must be a plain name ([A-Za-z0-9_-])");
        }
        let version = if root.join("cgroup.controllers").is_file() {
            Version::V2
        } else if V1_REQUIRED.iter().all(|c| root.join(c).is_dir()) {
            Version::V1
        } else {
            bail!(
                "no usable cgroup hierarchy at {}: need cgroup v2 mounted there, or cgroup v1 with the {} controllers under it",
                root.display(),
                V1_REQUIRED.join(", ")
            );
        };
        Ok(Cgroups { version, root: root.to_owned(), parent: parent.to_owned() })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The hierarchies a homeserver's cgroup has a directory in.
    fn hierarchies(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V2 => vec![self.root.clone()],
            Version::V1 => {
                let mut h: Vec<PathBuf> = V1_REQUIRED.iter().map(|c| self.root.join(c)).collect();
                if self.root.join("freezer").is_dir() {
                    h.push(self.root.join("freezer"));
                }
                h
            }
        }
    }

    /// Creates the parent cgroups; on v2 also lets them hand memory, cpu and pids down.
    pub fn prepare(&self) -> Result<()> {
        for h in self.hierarchies() {
            let dir = h.join(&self.parent);
            fs::create_dir_all(&dir).with_context(|| format!("cannot create the cgroup {} (is it writable?)", dir.display()))?;
        }
        if self.version == Version::V2 {
            let wanted: String = V2_CONTROLLERS.iter().map(|c| format!("+{c} ")).collect();
            for dir in [self.root.clone(), self.root.join(&self.parent)] {
                let file = dir.join("cgroup.subtree_control");
                fs::write(&file, wanted.trim()).with_context(|| format!("cannot enable the memory, cpu and pids controllers in {}", file.display()))?;
            }
        }
        Ok(())
    }

    /// The homeserver's cgroup and its two leaves (created if missing).
    pub fn ensure(&self, id: &HomeserverId) -> Result<TenantCgroup> {
        let cg = self.of(id);
        for dir in &cg.dirs {
            fs::create_dir_all(dir).with_context(|| format!("cannot create the cgroup {}", dir.display()))?;
        }
        if self.version == Version::V2 {
            // Per-leaf memory and pids files (the limits themselves sit on this cgroup).
            let file = cg.dirs[0].join("cgroup.subtree_control");
            fs::write(&file, "+memory +pids").with_context(|| format!("cannot enable controllers in {}", file.display()))?;
        }
        for leaf in [Leaf::Synapse, Leaf::Helpers] {
            for dir in cg.leaf(leaf).dirs {
                fs::create_dir_all(&dir).with_context(|| format!("cannot create the cgroup {}", dir.display()))?;
            }
        }
        Ok(cg)
    }

    /// The homeserver's cgroup, whether or not it exists.
    pub fn of(&self, id: &HomeserverId) -> TenantCgroup {
        let dirs = self.hierarchies().into_iter().map(|h| h.join(&self.parent).join(id.as_str())).collect();
        TenantCgroup { version: self.version, dirs }
    }
}

/// One homeserver's cgroup (a directory per hierarchy on v1, one on v2), where its limits are.
#[derive(Debug, Clone)]
pub struct TenantCgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

/// Where a tenant's process goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// The homeserver's sandbox.
    Synapse,
    /// Short jobs run as the tenant.
    Helpers,
}

impl Leaf {
    fn name(self) -> &'static str {
        match self {
            Leaf::Synapse => "synapse",
            Leaf::Helpers => "helpers",
        }
    }
}

/// A leaf of a homeserver's cgroup: where processes are.
#[derive(Debug, Clone)]
pub struct LeafCgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("cannot write `{value}` to {}", path.display()))
}

/// `key value` lines (memory.events, memory.oom_control): the value of `key`.
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The directory of `controller` among a cgroup's directories (v1), or the only one (v2).
fn dir_of<'a>(version: Version, dirs: &'a [PathBuf], controller: &str, depth: usize) -> &'a Path {
    match version {
        Version::V2 => &dirs[0],
        Version::V1 => {
            dirs.iter().find(|d| d.ancestors().nth(depth).and_then(Path::file_name).is_some_and(|n| n == controller)).map(PathBuf::as_path).unwrap_or(&dirs[0])
        }
    }
}

impl TenantCgroup {
    fn dir_of(&self, controller: &str) -> &Path {
        // ROOT/<controller>/<parent>/<id>
        dir_of(self.version, &self.dirs, controller, 2)
    }

    pub fn leaf(&self, leaf: Leaf) -> LeafCgroup {
        LeafCgroup { version: self.version, dirs: self.dirs.iter().map(|d| d.join(leaf.name())).collect() }
    }

    pub fn exists(&self) -> bool {
        self.dirs.iter().all(|d| d.is_dir())
    }

    /// R5: memory, CPU and pids from the plan (and the agent's pids limit). Takes effect at
    /// once, also for a homeserver that is running.
    pub fn set_limits(&self, limits: Limits, pids_max: u32) -> Result<()> {
        let memory = u64::from(limits.memory_mb) * 1024 * 1024;
        let quota = u64::from(limits.cpu_millicores) * CPU_PERIOD_US / 1000;
        match self.version {
            Version::V2 => {
                let d = &self.dirs[0];
                write(&d.join("memory.max"), &memory.to_string())?;
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), "0")?;
                }
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&d.join("pids.max"), &pids_max.to_string())?;
            }
            Version::V1 => {
                let mem = self.dir_of("memory");
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                // memsw must stay >= the memory limit: raise it first when growing, after when shrinking.
                if memsw.exists() {
                    let current: u64 = read_trimmed(&mem.join("memory.limit_in_bytes"))?.parse().unwrap_or(u64::MAX);
                    if memory > current {
                        write(&memsw, &memory.to_string())?;
                        write(&mem.join("memory.limit_in_bytes"), &memory.to_string())?;
                    } else {
                        write(&mem.join("memory.limit_in_bytes"), &memory.to_string())?;
                        write(&memsw, &memory.to_string())?;
                    }
                } else {
                    write(&mem.join("memory.limit_in_bytes"), &memory.to_string())?;
                }
                let cpu = self.dir_of("cpu");
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(&self.dir_of("pids").join("pids.max"), &pids_max.to_string())?;
            }
        }
        Ok(())
    }

    /// Processes the kernel killed for the memory limit since the cgroup was created. The
    /// kernel counts a kill in the victim's cgroup, so the leaves are added up.
    pub fn oom_kills(&self) -> u64 {
        [Leaf::Synapse, Leaf::Helpers].iter().map(|l| self.leaf(*l).oom_kills()).sum()
    }

    /// Kills what is left and removes the cgroup's directories.
    pub fn remove(&self) -> Result<()> {
        if !self.dirs.iter().any(|d| d.exists()) {
            return Ok(());
        }
        let leaves = [self.leaf(Leaf::Synapse), self.leaf(Leaf::Helpers)];
        for leaf in &leaves {
            if leaf.dirs.iter().any(|d| d.exists()) {
                leaf.kill_all(Duration::from_secs(10))?;
            }
        }
        for dir in leaves.iter().flat_map(|l| l.dirs.iter()).chain(self.dirs.iter()) {
            remove_dir(dir)?;
        }
        Ok(())
    }
}

/// An emptied cgroup may still be busy for an instant while its last task is reaped.
fn remove_dir(d: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e).with_context(|| format!("cannot remove the cgroup {}", d.display())),
        }
    }
}

impl LeafCgroup {
    fn dir_of(&self, controller: &str) -> &Path {
        // ROOT/<controller>/<parent>/<id>/<leaf>
        dir_of(self.version, &self.dirs, controller, 3)
    }

    fn has_freezer(&self) -> bool {
        match self.version {
            Version::V2 => true,
            Version::V1 => self.dirs.iter().any(|d| d.ancestors().nth(3).and_then(Path::file_name).is_some_and(|n| n == "freezer")),
        }
    }

    /// The `cgroup.procs` files a new process writes its pid to, prepared before `fork` (the
    /// child may not allocate).
    pub fn procs_files(&self) -> Result<Vec<CString>> {
        self.dirs.iter().map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes()).context("a cgroup path holds a NUL")).collect()
    }

    /// The processes in the leaf.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let file = self.dir_of("pids").join("cgroup.procs");
        match fs::read_to_string(&file) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.pids()?.is_empty())
    }

    fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => self.dirs[0].join("memory.events"),
            Version::V1 => self.dir_of("memory").join("memory.oom_control"),
        };
        fs::read_to_string(file).ok().and_then(|t| keyed_value(&t, "oom_kill")).unwrap_or(0)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self.version {
            Version::V2 => write(&self.dirs[0].join("cgroup.freeze"), if frozen { "1" } else { "0" }),
            Version::V1 => {
                let state = self.dir_of("freezer").join("freezer.state");
                write(&state, if frozen { "FROZEN" } else { "THAWED" })?;
                if frozen {
                    // FREEZING until every task has stopped.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while read_trimmed(&state)? != "FROZEN" && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends `signal` to every process in the leaf whose real uid is `only_uid` (or to all).
    /// With a freezer the leaf is frozen meanwhile, so no process can fork away or exit and
    /// have its pid reused while the signals go out.
    pub fn signal_all(&self, signal: rustix::process::Signal, only_uid: Option<u32>) -> Result<usize> {
        let freeze = self.has_freezer();
        if freeze {
            self.set_frozen(true)?;
        }
        let mut sent = 0;
        let result = (|| -> Result<()> {
            for pid in self.pids()? {
                if let Some(uid) = only_uid {
                    let owner = procfs::process::Process::new(pid).ok().and_then(|p| p.uid().ok());
                    if owner != Some(uid) {
                        continue;
                    }
                }
                let Some(pid) = rustix::process::Pid::from_raw(pid) else {
                    continue;
                };
                if rustix::process::kill_process(pid, signal).is_ok() {
                    sent += 1;
                }
            }
            Ok(())
        })();
        if freeze {
            self.set_frozen(false)?;
        }
        result.map(|()| sent)
    }

    /// Kills everything in the leaf and waits until it is empty (v2's `cgroup.kill` when the
    /// kernel has it).
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_empty()? {
                return Ok(());
            }
            let kill_file = self.dirs[0].join("cgroup.kill");
            if self.version == Version::V2 && kill_file.exists() {
                write(&kill_file, "1")?;
            } else {
                self.signal_all(rustix::process::Signal::KILL, None)?;
            }
            if Instant::now() > deadline {
                bail!("processes survive SIGKILL in the cgroup {}", self.dirs[0].display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_are_read() {
        assert_eq!(keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"), Some(3));
        assert_eq!(keyed_value("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom"), Some(1));
        assert_eq!(keyed_value("x 1\n", "oom_kill"), None);
    }

    #[test]
    fn v1_and_v2_layouts() {
        let tmp = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "pids", "freezer"] {
            fs::create_dir(tmp.path().join(c)).unwrap();
        }
        let cg = Cgroups::detect(tmp.path(), "matrixhost").unwrap();
        assert_eq!(cg.version(), Version::V1);
        let id = HomeserverId::parse("hs_abc").unwrap();
        let t = cg.of(&id);
        assert_eq!(t.dir_of("memory"), tmp.path().join("memory/matrixhost/hs_abc"));
        assert_eq!(t.dir_of("cpu"), tmp.path().join("cpu/matrixhost/hs_abc"));
        let leaf = t.leaf(Leaf::Synapse);
        assert_eq!(leaf.dir_of("pids"), tmp.path().join("pids/matrixhost/hs_abc/synapse"));
        assert!(leaf.has_freezer());
        assert!(Cgroups::detect(tmp.path(), "../x").is_err());

        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let cg = Cgroups::detect(v2.path(), "matrixhost").unwrap();
        assert_eq!(cg.version(), Version::V2);
        let t = cg.of(&id);
        fs::create_dir_all(v2.path().join("matrixhost/hs_abc")).unwrap();
        t.set_limits(Limits { memory_mb: 512, cpu_millicores: 1500 }, 256).unwrap();
        let dir = v2.path().join("matrixhost/hs_abc");
        assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), (512u64 << 20).to_string());
        assert_eq!(fs::read_to_string(dir.join("cpu.max")).unwrap(), "150000 100000");
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "256");
        assert!(Cgroups::detect(tempfile::tempdir().unwrap().path(), "matrixhost").is_err());
    }
}
