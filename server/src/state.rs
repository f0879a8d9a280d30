//! Where the control plane's state is, and who it runs as.
//!
//! `matrixhostd` never runs as root. Started as root (the usual way for a service, and the way
//! tests and the demo start it), it first lays out its own directory (`STATE/api`, owned by the
//! service user), opens the directories it needs as file descriptors, and only then switches
//! to the service user for good, before any thread exists. Everything it uses afterwards is
//! reached through those descriptors (`/proc/self/fd/N/...`), so the state directory works
//! wherever the operator puts it, even under a parent the service user cannot enter (a 0700
//! `/var/lib/...`). SQLite is the exception: it resolves the links in a database's path itself
//! and then needs to search every parent. When the service user cannot, the root start binds
//! `STATE/api` at `/run/matrixhostd/<device>-<inode>`, whose parents it can search (a bind mount
//! on the host, made once and reused; it exposes nothing, the directory stays 0700). Started as
//! the service user itself (a systemd unit with `User=`), it opens the same directories
//! directly, and a preflight names any path it cannot reach and the fix.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use matrixhost_agent_api::{HomeserverId, StateLayout, SYNAPSE_SOCKET};
use nix::unistd::{Uid, User};
use rustix::fs::{Mode, OFlags};

/// Files of the control plane in `STATE/api`.
pub const DATABASE_FILE: &str = "matrixhost.db";
pub const SECRETS_KEY_FILE: &str = "secrets.key";
pub const DEV_TOKEN_FILE: &str = "dev-token";
pub const ADDR_FILE: &str = "matrixhostd.addr";
/// R14: the password pepper (never in the database).
pub const PEPPER_FILE: &str = "password-pepper.key";
/// `--dev` without a mail relay: mail is delivered here.
pub const MAILDIR: &str = "maildir";

/// The control plane's directories, held open.
#[derive(Debug)]
pub struct StateDirs {
    layout: StateLayout,
    api: OwnedFd,
    /// `STATE/api` where SQLite can reach it (see the module's comment), if it was bound.
    database_dir: Option<PathBuf>,
    run: Option<OwnedFd>,
    sockets: Option<OwnedFd>,
}

fn via_fd(fd: &OwnedFd, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name)
}

fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

impl StateDirs {
    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    /// A file in `STATE/api`, reachable whatever the parents' permissions.
    pub fn api_file(&self, name: &str) -> PathBuf {
        via_fd(&self.api, name)
    }

    /// The node agent's socket (only with the runtime).
    pub fn agent_socket(&self) -> Option<PathBuf> {
        self.run.as_ref().map(|fd| via_fd(fd, "agent.sock"))
    }

    /// The Unix socket a homeserver's Synapse listens on (only with the runtime).
    pub fn homeserver_socket(&self, id: &HomeserverId) -> Option<PathBuf> {
        self.sockets.as_ref().map(|fd| via_fd(fd, id.as_str()).join(SYNAPSE_SOCKET))
    }

    /// The default database: SQLite in `STATE/api`.
    pub fn sqlite_url(&self) -> String {
        let path = match &self.database_dir {
            Some(dir) => dir.join(DATABASE_FILE),
            None => self.api_file(DATABASE_FILE),
        };
        format!("sqlite://{}?mode=rwc", path.display())
    }
}

/// A problem found before start-up, with the path and the fix.
fn problem(what: &str, path: &Path, fix: &str) -> anyhow::Error {
    anyhow::anyhow!("problem: {what}\n  path: {}\n  fix: {fix}", path.display())
}

/// Opens the state directory for the control plane and, when started as root, becomes the
/// service user `user`. Call before any thread is started. `runtime`: the node agent's
/// directories are needed too.
pub fn enter(root: &Path, user: &str, runtime: bool) -> Result<StateDirs> {
    let layout = StateLayout::new(root);
    if rustix::process::geteuid().is_root() {
        let account = User::from_name(user).with_context(|| format!("cannot look up the user {user}"))?.ok_or_else(|| {
            problem(
                &format!("matrixhostd runs as the unprivileged user `{user}`, which does not exist"),
                Path::new("/etc/passwd"),
                &format!("useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {user} (scripts/setup.sh does)"),
            )
        })?;
        prepare_as_root(&layout, &account)?;
        let mut dirs = open_all(&layout, runtime)?;
        if !searchable_by(&layout.api_dir(), &account) {
            dirs.database_dir = Some(bind_for_sqlite(&dirs.api)?);
        }
        become_user(&account)?;
        tracing::info!(user, uid = account.uid.as_raw(), "running as the unprivileged service user");
        Ok(dirs)
    } else {
        open_all(&layout, runtime)
    }
}

/// `STATE` (root's, 0711) and `STATE/api` (the service user's, 0700), and the files a root run
/// of an older build may have left there handed back to the service user.
fn prepare_as_root(layout: &StateLayout, account: &User) -> Result<()> {
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
    let root = layout.root();
    if !root.exists() {
        std::fs::create_dir_all(root).with_context(|| format!("cannot create the state directory {}", root.display()))?;
        chown_mode(root, 0, 0, 0o711)?;
    }
    let api = layout.api_dir();
    match std::fs::symlink_metadata(&api) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(problem("the control plane's directory is not a directory", &api, "remove it; matrixhostd makes it"))
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir(&api).with_context(|| format!("cannot create {}", api.display()))?,
    }
    chown_mode(&api, uid, gid, 0o700)?;
    let dir = rustix::fs::open(&api, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    for name in [DATABASE_FILE, "matrixhost.db-wal", "matrixhost.db-shm", SECRETS_KEY_FILE, PEPPER_FILE, DEV_TOKEN_FILE, ADDR_FILE] {
        let Ok(fd) = rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()) else {
            continue;
        };
        if rustix::fs::fstat(&fd).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile) {
            rustix::fs::fchown(&fd, Some(rustix::process::Uid::from_raw(uid)), Some(rustix::process::Gid::from_raw(gid)))?;
        }
    }
    Ok(())
}

/// Whether `account` (with its own group only, as [`become_user`] leaves it) may search every
/// directory from `/` down to `dir`.
fn searchable_by(dir: &Path, account: &User) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(real) = std::fs::canonicalize(dir) else { return false };
    real.ancestors().all(|d| {
        std::fs::metadata(d).is_ok_and(|m| {
            let bit = if m.uid() == account.uid.as_raw() {
                0o100
            } else if m.gid() == account.gid.as_raw() {
                0o010
            } else {
                0o001
            };
            m.mode() & bit != 0
        })
    })
}

/// Where [`bind_for_sqlite`] binds the directory `api`.
fn sqlite_bind_point(api: &OwnedFd) -> rustix::io::Result<PathBuf> {
    let st = rustix::fs::fstat(api)?;
    Ok(PathBuf::from("/run/matrixhostd").join(format!("{:x}-{:x}", st.st_dev, st.st_ino)))
}

/// Binds `STATE/api` at `/run/matrixhostd/<device>-<inode>` (once; a later start finds it
/// there), so SQLite has a path whose parents the service user may search.
fn bind_for_sqlite(api: &OwnedFd) -> Result<PathBuf> {
    let target = sqlite_bind_point(api)?;
    let same = |path: &Path, want: &OwnedFd| -> bool {
        let (Ok(a), Ok(b)) = (rustix::fs::stat(path), rustix::fs::fstat(want)) else { return false };
        (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    };
    if !same(&target, api) {
        std::fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;
        for dir in [Path::new("/run/matrixhostd"), target.as_path()] {
            chown_mode(dir, 0, 0, 0o755)?;
        }
        rustix::mount::mount_bind(via_fd(api, "."), &target).with_context(|| format!("cannot bind the control plane's directory at {}", target.display()))?;
        if !same(&target, api) {
            bail!("the bind of the control plane's directory at {} did not take", target.display());
        }
        tracing::info!(path = %target.display(), "the service user cannot search the state directory's parents; bound its directory for SQLite");
    }
    Ok(target)
}

fn chown_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("cannot open {}", path.display()))?;
    rustix::fs::fchown(&fd, Some(rustix::process::Uid::from_raw(uid)), Some(rustix::process::Gid::from_raw(gid)))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

fn open_all(layout: &StateLayout, runtime: bool) -> Result<StateDirs> {
    let api_dir = layout.api_dir();
    let api = open_dir(&api_dir).map_err(|e| {
        problem(
            &format!("the control plane cannot open its directory ({e})"),
            &api_dir,
            "start matrixhostd as root (it switches to its service user), or start matrixhost-agent first and give the service user a path it can traverse",
        )
    })?;
    // The directory must be ours to write to: a database that cannot be opened fails later and
    // less clearly.
    let writable = rustix::fs::accessat(rustix::fs::CWD, via_fd(&api, "."), rustix::fs::Access::WRITE_OK, rustix::fs::AtFlags::empty()).is_ok();
    if !writable {
        bail!(problem(
            "the control plane cannot write to its directory",
            &api_dir,
            "chown it to matrixhostd's service user (starting matrixhostd as root does)"
        ));
    }
    let (run, sockets) = if runtime {
        let run = open_dir(&layout.run_dir()).map_err(|e| {
            problem(
                &format!("the node agent's run directory cannot be opened ({e})"),
                &layout.run_dir(),
                "start matrixhost-agent (it makes the directory) before matrixhostd serve",
            )
        })?;
        let sockets = open_dir(&layout.sockets_dir()).map_err(|e| {
            problem(
                &format!("the homeservers' socket directory cannot be opened ({e})"),
                &layout.sockets_dir(),
                "start matrixhost-agent before matrixhostd serve",
            )
        })?;
        (Some(run), Some(sockets))
    } else {
        (None, None)
    };
    Ok(StateDirs { layout: layout.clone(), api, database_dir: None, run, sockets })
}

/// Drops root for good: the user's group as the only group, its gid, then its uid. Checked:
/// root cannot be regained.
fn become_user(account: &User) -> Result<()> {
    nix::unistd::setgroups(&[account.gid]).context("setgroups")?;
    nix::unistd::setgid(account.gid).context("setgid")?;
    nix::unistd::setuid(account.uid).context("setuid")?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root() || nix::unistd::getegid().as_raw() == 0 {
        bail!("dropping root privileges did not take");
    }
    Ok(())
}
