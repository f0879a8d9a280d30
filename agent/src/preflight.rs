//! What the host must give the agent, checked at start-up. Every problem is reported at once,
//! each with the path it concerns and the fix, so an operator fixes a host in one pass.

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cgroup::Cgroups;
use crate::sandbox::Kind;
use crate::volume::VolumeManager;
use crate::AgentSettings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub path: Option<PathBuf>,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "problem: {}", self.what)?;
        if let Some(p) = &self.path {
            write!(f, "\n  path: {}", p.display())?;
        }
        write!(f, "\n  fix: {}", self.fix)
    }
}

fn problem(what: impl Into<String>, path: Option<&Path>, fix: impl Into<String>) -> Problem {
    Problem { what: what.into(), path: path.map(Path::to_owned), fix: fix.into() }
}

/// Runs every check; an empty list means the host is ready.
pub fn check(settings: &AgentSettings) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !rustix::process::geteuid().is_root() {
        problems.push(problem(
            "matrixhost-agent must run as root (volumes, mounts, keys, tenant users, sandboxes and cgroups need it)",
            None,
            "start it as root, e.g. from a systemd unit without User=",
        ));
        // Nothing else can be checked meaningfully without root.
        return problems;
    }
    match nix::unistd::User::from_name(&settings.api_user) {
        Ok(Some(_)) => {}
        _ => problems.push(problem(
            format!("the control plane's user `{}` does not exist", settings.api_user),
            None,
            format!("useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {}", settings.api_user),
        )),
    }
    problems.extend(check_private_root(settings.layout.root(), "the state directory", "chown root:root {path} && chmod 0711 {path}"));
    problems.extend(check_private_root(&settings.backup_dir, "the backup directory", "chown root:root {path} && chmod 0700 {path}"));
    problems.extend(check_sandbox(settings));
    problems.extend(check_venv(&settings.venv, settings.sandbox));
    if let Err(e) = VolumeManager::new(settings.layout.agent_dir().join("volumes")).check_support() {
        problems.push(problem(
            format!("encrypted volumes cannot be made here: {e:#}"),
            None,
            "see docs/volumes.md: root, loop devices, e2fsprogs with `encrypt` and a kernel with ext4 encryption",
        ));
    }
    match Cgroups::detect(&settings.cgroup_root, &settings.cgroup_parent).and_then(|c| c.prepare()) {
        Ok(()) => {}
        Err(e) => problems.push(problem(
            format!("homeservers cannot get resource limits: {e:#}"),
            Some(&settings.cgroup_root),
            "mount cgroup v2 there (with the memory, cpu and pids controllers), or cgroup v1 with writable memory, cpu and pids hierarchies",
        )),
    }
    problems
}

/// A directory root alone controls: owned by root, not writable by anyone else, and not a
/// symlink. Missing is fine (it is created).
fn check_private_root(path: &Path, what: &str, fix: &str) -> Vec<Problem> {
    let fix = fix.replace("{path}", &path.display().to_string());
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Vec::new();
    };
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return vec![problem(format!("{what} is not a directory (a symlink or a file)"), Some(path), format!("replace it with a directory: {fix}"))];
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return vec![problem(format!("{what} is not root's alone (owner uid {}, mode {:o})", meta.uid(), meta.mode() & 0o7777), Some(path), fix)];
    }
    // Whoever can rename a parent could swap the directory under the agent.
    for parent in path.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(parent) else {
            continue;
        };
        let sticky = m.mode() & 0o1000 != 0;
        if (m.mode() & 0o002 != 0 && !sticky) || (m.uid() != 0 && m.mode() & 0o200 != 0) {
            return vec![problem(
                format!("a directory above {what} can be changed by another user (owner uid {}, mode {:o})", m.uid(), m.mode() & 0o7777),
                Some(parent),
                "make every parent directory root's and not writable by others, or move the directory",
            )];
        }
    }
    Vec::new()
}

fn check_sandbox(settings: &AgentSettings) -> Vec<Problem> {
    let mut problems = Vec::new();
    if crate::tools::find("setpriv").is_none() {
        problems.push(problem("`setpriv` is not installed", None, "apt-get install util-linux"));
    }
    if settings.sandbox != Kind::Bubblewrap {
        return problems;
    }
    let Some(bwrap) = crate::tools::find("bwrap") else {
        problems.push(problem("`bwrap` (bubblewrap) is not installed; homeservers cannot be sandboxed", None, "apt-get install bubblewrap"));
        return problems;
    };
    let ran = Command::new(&bwrap)
        .args(["--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--new-session", "--", "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match ran {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(problem(
            format!("bubblewrap cannot make namespaces here: {}", String::from_utf8_lossy(&out.stderr).trim()),
            Some(&bwrap),
            "allow mount, PID and network namespaces for root (containers: run privileged or with CAP_SYS_ADMIN)",
        )),
        Err(e) => problems.push(problem(format!("bubblewrap does not run: {e}"), Some(&bwrap), "reinstall bubblewrap")),
    }
    problems
}

/// The venv is bound read-only into the sandbox, which sees the host's `/usr` only: its
/// interpreter must live there.
fn check_venv(venv: &Path, kind: Kind) -> Vec<Problem> {
    let python = venv.join("bin/python");
    let fix = "create it with /usr/bin/python3 -m venv, then pip install matrix-synapse (scripts/setup.sh does both)";
    let Ok(real) = std::fs::canonicalize(&python) else {
        return vec![problem("the Synapse virtualenv has no python", Some(&python), fix)];
    };
    let executable = std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o001 != 0);
    if !executable {
        return vec![problem(format!("the Synapse virtualenv's python ({}) is not executable by tenant users", real.display()), Some(&python), fix)];
    }
    if kind == Kind::Bubblewrap && !real.starts_with("/usr") {
        return vec![problem(
            format!("the Synapse virtualenv's python is {}, outside /usr, which the sandbox does not see", real.display()),
            Some(&python),
            fix,
        )];
    }
    if !venv.join("pyvenv.cfg").is_file() {
        return vec![problem("the Synapse directory is not a virtualenv (no pyvenv.cfg)", Some(venv), fix)];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_path_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let found = check_private_root(&dir, "the state directory", "chmod 0711 {path}");
        assert_eq!(found.len(), 1, "{found:?}");
        let text = found[0].to_string();
        assert!(text.contains(&dir.display().to_string()) && text.contains("fix: chmod 0711"), "{text}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(check_private_root(&link, "the state directory", "x")[0].what.contains("symlink"));
        assert!(check_private_root(&tmp.path().join("missing"), "x", "y").is_empty());

        let venv = tmp.path().join("venv");
        assert!(check_venv(&venv, Kind::Bubblewrap)[0].what.contains("no python"));
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/env", venv.join("bin/python")).unwrap();
        assert!(check_venv(&venv, Kind::Bubblewrap)[0].what.contains("not a virtualenv"));
        std::fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        assert!(check_venv(&venv, Kind::Bubblewrap).is_empty());
    }
}
