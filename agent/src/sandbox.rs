//! R3: each homeserver runs in a sandbox built with bubblewrap (`bwrap`).
//!
//! Why bubblewrap (see `docs/architecture.md`): it is a small, widely deployed tool (Flatpak's
//! sandbox) that builds exactly what we need from command-line flags, with no image, bundle or
//! daemon: fresh mount, PID, IPC, UTS and cgroup namespaces, and a network namespace when the
//! homeserver has no federation. The sandbox sees only:
//!
//! | in the sandbox        | from the host                            | mode       |
//! |-----------------------|------------------------------------------|------------|
//! | `/usr` (+ `/lib`, …)  | the system's programs and libraries      | read-only  |
//! | `/opt/synapse`        | the Synapse virtualenv                   | read-only  |
//! | `/config`             | the agent's config dir for this tenant   | read-only  |
//! | `/data`               | the tenant's encrypted data directory    | read-write |
//! | `/run/matrixhost`     | the tenant's socket directory            | read-write |
//! | `/etc/ssl`, …         | TLS roots and, with federation, DNS      | read-only  |
//! | `/proc`, `/dev`, `/tmp` | fresh, the sandbox's own               |            |
//!
//! bubblewrap starts as root (it needs to mount), then `setpriv` drops to the tenant's uid and
//! gid with no supplementary groups, an empty capability bounding set and `no_new_privs`, and
//! execs Synapse. Nothing the tenant runs keeps a capability.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

/// Where the Synapse virtualenv appears inside the sandbox.
pub const VENV: &str = "/opt/synapse";

/// Host files a homeserver may need; missing ones are skipped. TLS roots always (Python loads
/// them for outbound HTTPS); name resolution only with the host's network.
const ETC_ALWAYS: &[&str] = &["/etc/ssl", "/etc/ca-certificates", "/etc/localtime"];
const ETC_NETWORK: &[&str] = &["/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bubblewrap,
    /// No namespaces, no limits: a process as the tenant's user, as before the sandbox existed.
    /// Only in test builds, as the baseline of the sandbox benchmark.
    #[cfg(feature = "test-hooks")]
    Unsandboxed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bubblewrap => "bubblewrap",
            #[cfg(feature = "test-hooks")]
            Kind::Unsandboxed => "none",
        }
    }

    pub fn parse(s: &str) -> Result<Kind> {
        match s {
            "bubblewrap" => Ok(Kind::Bubblewrap),
            #[cfg(feature = "test-hooks")]
            "none" => Ok(Kind::Unsandboxed),
            #[cfg(not(feature = "test-hooks"))]
            "none" => bail!("--sandbox none exists only in test builds (the sandbox benchmark's baseline)"),
            other => bail!("unknown sandbox `{other}`; use bubblewrap"),
        }
    }
}

/// One tenant's sandbox: what it binds and who it runs as.
#[derive(Debug, Clone)]
pub struct TenantSandbox {
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The host's network (for federation); without it, a namespace with only loopback.
    pub network: bool,
}

/// The programs the sandbox is built from.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub kind: Kind,
    pub bwrap: PathBuf,
    pub setpriv: PathBuf,
    pub venv: PathBuf,
}

impl Sandbox {
    pub fn new(kind: Kind, venv: PathBuf) -> Result<Sandbox> {
        let Some(setpriv) = crate::tools::find("setpriv") else { bail!("`setpriv` (util-linux) is not installed") };
        let bwrap = match kind {
            Kind::Bubblewrap => crate::tools::find("bwrap").ok_or_else(|| anyhow::anyhow!("`bwrap` (bubblewrap) is not installed"))?,
            #[cfg(feature = "test-hooks")]
            Kind::Unsandboxed => PathBuf::new(),
        };
        Ok(Sandbox { kind, bwrap, setpriv, venv })
    }

    /// Where Synapse finds things, as it sees them.
    pub fn placement(&self, #[allow(unused_variables)] t: &TenantSandbox) -> crate::synapse::Placement {
        match self.kind {
            Kind::Bubblewrap => crate::synapse::Placement::sandboxed(),
            #[cfg(feature = "test-hooks")]
            Kind::Unsandboxed => crate::synapse::Placement { data_dir: t.data_dir.clone(), config_dir: t.config_dir.clone(), socket_dir: t.socket_dir.clone() },
        }
    }

    /// The venv's python, as the sandbox sees it.
    pub fn python(&self) -> PathBuf {
        match self.kind {
            Kind::Bubblewrap => Path::new(VENV).join("bin/python"),
            #[cfg(feature = "test-hooks")]
            Kind::Unsandboxed => self.venv.join("bin/python"),
        }
    }

    /// `argv` run as the tenant inside its sandbox. The caller adds stdio and joins the cgroup.
    pub fn command(&self, t: &TenantSandbox, argv: &[String]) -> Command {
        let mut cmd = match self.kind {
            Kind::Bubblewrap => {
                let mut cmd = Command::new(&self.bwrap);
                cmd.args(self.bwrap_args(t));
                cmd.arg("--").arg(&self.setpriv);
                cmd
            }
            #[cfg(feature = "test-hooks")]
            Kind::Unsandboxed => {
                let mut cmd = Command::new(&self.setpriv);
                cmd.current_dir(&t.data_dir).env_clear().env("HOME", &t.data_dir).env("PATH", "/usr/bin:/bin").env("LANG", "C.UTF-8");
                cmd
            }
        };
        cmd.args(setpriv_args(t.uid, t.gid)).arg("--").args(argv);
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    fn bwrap_args(&self, t: &TenantSandbox) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--new-session", "--hostname", "homeserver"]);
        if !t.network {
            push(&["--unshare-net"]);
        }
        // setpriv needs these three to drop to the tenant; it then clears every capability.
        push(&["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]);
        push(&["--ro-bind", "/usr", "/usr"]);
        for dir in ["/lib", "/lib64", "/bin", "/sbin"] {
            match std::fs::read_link(dir) {
                // A merged /usr: /lib -> usr/lib.
                Ok(target) => a.extend(["--symlink".into(), target.to_string_lossy().into_owned(), dir.into()]),
                Err(_) if Path::new(dir).is_dir() => a.extend(["--ro-bind".into(), dir.into(), dir.into()]),
                Err(_) => {}
            }
        }
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        // SQLite and Python need a writable temp directory; what is written there counts against
        // the tenant's memory limit (tmpfs is charged to its cgroup).
        push(&["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]);
        push(&["--perms", "0755", "--dir", "/etc"]);
        let etc = ETC_ALWAYS.iter().chain(if t.network { ETC_NETWORK } else { &[] });
        for path in etc {
            push(&["--ro-bind-try", path, path]);
        }
        push(&["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/run"]);
        let bind = |a: &mut Vec<String>, how: &str, from: &Path, to: &str| a.extend([how.into(), from.to_string_lossy().into_owned(), to.into()]);
        bind(&mut a, "--ro-bind", &self.venv, VENV);
        bind(&mut a, "--ro-bind", &t.config_dir, "/config");
        bind(&mut a, "--bind", &t.data_dir, "/data");
        bind(&mut a, "--bind", &t.socket_dir, "/run/matrixhost");
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        // `/`, not `/data`: bubblewrap changes directory after it has dropped its capabilities,
        // and root without them cannot enter the tenant's 0700 directory. Paths are absolute.
        push(&["--chdir", "/", "--clearenv", "--setenv", "HOME", "/data", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]);
        push(&["--setenv", "PYTHONDONTWRITEBYTECODE", "1"]);
        a
    }
}

fn setpriv_args(uid: u32, gid: u32) -> Vec<String> {
    vec![
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        "--bounding-set=-all".into(),
        "--no-new-privs".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(network: bool) -> TenantSandbox {
        TenantSandbox {
            data_dir: "/state/agent/volumes/mnt/hs_a/data".into(),
            config_dir: "/state/agent/config/hs_a".into(),
            socket_dir: "/state/run/homeservers/hs_a".into(),
            uid: 1234,
            gid: 1235,
            network,
        }
    }

    fn sandbox() -> Sandbox {
        Sandbox { kind: Kind::Bubblewrap, bwrap: "/usr/bin/bwrap".into(), setpriv: "/usr/bin/setpriv".into(), venv: "/srv/venv".into() }
    }

    #[test]
    fn the_sandbox_sees_only_its_own_data_and_drops_to_the_tenant() {
        let cmd = sandbox().command(&tenant(false), &["/opt/synapse/bin/python".into(), "-V".into()]);
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        for expected in [
            "--unshare-pid",
            "--unshare-net",
            "--new-session",
            "--ro-bind /srv/venv /opt/synapse",
            "--ro-bind /state/agent/config/hs_a /config",
            "--bind /state/agent/volumes/mnt/hs_a/data /data",
            "--bind /state/run/homeservers/hs_a /run/matrixhost",
            "--clearenv",
            "-- /usr/bin/setpriv --reuid=1234 --regid=1235 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- /opt/synapse/bin/python -V",
        ] {
            assert!(joined.contains(expected), "missing `{expected}` in {joined}");
        }
        assert!(!joined.contains("resolv.conf"), "no DNS without a network");
        // Nothing else of the state directory is bound.
        assert_eq!(args.iter().filter(|a| a.starts_with("/state")).count(), 3);
    }

    #[test]
    fn federation_keeps_the_hosts_network_and_dns() {
        let args: Vec<String> = sandbox().command(&tenant(true), &[]).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!args.iter().any(|a| a == "--unshare-net"));
        assert!(args.join(" ").contains("--ro-bind-try /etc/resolv.conf /etc/resolv.conf"));
    }

    #[test]
    fn only_test_builds_run_unsandboxed() {
        assert_eq!(Kind::parse("bubblewrap").unwrap(), Kind::Bubblewrap);
        #[cfg(not(feature = "test-hooks"))]
        assert!(Kind::parse("none").unwrap_err().to_string().contains("only in test builds"));
        assert!(Kind::parse("docker").is_err());
    }
}
