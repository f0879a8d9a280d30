//! Directory-relative file operations that never follow a symlink.
//!
//! The agent runs as root, and some of its work happens inside directories a tenant can write
//! (a homeserver's data directory, during backups and restores). A compromised tenant can plant
//! symlinks, hard links, FIFOs or huge files there, or swap a directory for a symlink while the
//! agent works. So every operation here is relative to an open directory descriptor, takes a
//! single name, and resolves it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`; on kernels without `openat2` it falls back to
//! `openat(O_NOFOLLOW)`, which is equivalent for a single component. Ownership and modes are
//! changed on descriptors (`fchown`, `fchmod`), never by path.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};

/// What a directory entry is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// Symlinks, sockets, FIFOs, devices: never archived or followed.
    Other,
}

#[derive(Debug)]
pub struct Dir(OwnedFd);

/// Set once `openat2` answered ENOSYS; from then on `openat(O_NOFOLLOW)` is used.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

fn check_name(name: &str) -> io::Result<()> {
    // One component only: a name with a slash could reach through a symlinked parent.
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"));
    }
    Ok(())
}

fn kind_of(file_type: FileType) -> Kind {
    match file_type {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        _ => Kind::Other,
    }
}

impl Dir {
    /// Opens `path` as a directory. The last component must not be a symlink. Only for paths
    /// the agent controls (its own state directory); inside a tenant's tree use [`Dir::open_dir`].
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Dir(fd))
    }

    fn openat(&self, name: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        check_name(name)?;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
            match rfs::openat2(self.0.as_fd(), name, flags, mode, resolve) {
                Err(rustix::io::Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                other => return Ok(other?),
            }
        }
        Ok(rfs::openat(self.0.as_fd(), name, flags, mode)?)
    }

    /// The subdirectory `name` (not a symlink).
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        Ok(Dir(self.openat(name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?))
    }

    /// The regular file `name` for reading (not a symlink, FIFO, socket or device).
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        // O_NONBLOCK: opening a FIFO a tenant planted must not hang the agent.
        let file = File::from(self.openat(name, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY, Mode::empty())?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is not a regular file")));
        }
        Ok(file)
    }

    /// Creates the file `name`, which must not exist.
    pub fn create_file(&self, name: &str, mode: u32) -> io::Result<File> {
        Ok(File::from(self.openat(name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, Mode::from_raw_mode(mode))?))
    }

    /// Replaces the file `name` with `contents`: written to a fresh temporary file with `mode`,
    /// synced, then renamed over `name` (a symlink at either name is replaced, never followed).
    pub fn replace_file(&self, name: &str, contents: &[u8], mode: u32) -> io::Result<File> {
        use std::io::Write;
        let tmp = format!(".{name}.tmp");
        self.remove_all(&tmp)?;
        let mut f = self.create_file(&tmp, mode)?;
        f.write_all(contents)?;
        f.sync_all()?;
        rfs::renameat(self.0.as_fd(), tmp.as_str(), self.0.as_fd(), name)?;
        Ok(f)
    }

    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        check_name(name)?;
        rfs::mkdirat(self.0.as_fd(), name, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// The directory `name`, created with `mode` if it is missing; an existing entry that is not
    /// a real directory (a symlink, a file) is removed first.
    pub fn ensure_dir(&self, name: &str, mode: u32) -> io::Result<Dir> {
        match self.kind(name)? {
            Some(Kind::Dir) => {}
            Some(_) => {
                self.remove_all(name)?;
                self.mkdir(name, mode)?;
            }
            None => self.mkdir(name, mode)?,
        }
        self.open_dir(name)
    }

    /// What `name` is, or `None` if it does not exist.
    pub fn kind(&self, name: &str) -> io::Result<Option<Kind>> {
        check_name(name)?;
        match rfs::statat(self.0.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(kind_of(FileType::from_raw_mode(st.st_mode)))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The entries (name, kind), sorted by name; `.` and `..` left out. A name that is not
    /// UTF-8 cannot be archived and is skipped.
    pub fn entries(&self) -> io::Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        let mut dir = rfs::Dir::read_from(self.0.as_fd())?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(bytes) else {
                tracing::warn!("skipping a file whose name is not UTF-8");
                continue;
            };
            let kind = match entry.file_type() {
                FileType::Unknown => self.kind(name)?.unwrap_or(Kind::Other),
                t => kind_of(t),
            };
            out.push((name.to_owned(), kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn unlink(&self, name: &str, dir: bool) -> io::Result<()> {
        check_name(name)?;
        let flags = if dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        rfs::unlinkat(self.0.as_fd(), name, flags)?;
        Ok(())
    }

    /// Removes `name` and everything under it, never following a symlink. Missing is fine.
    pub fn remove_all(&self, name: &str) -> io::Result<()> {
        match self.kind(name)? {
            None => Ok(()),
            Some(Kind::Dir) => {
                let sub = self.open_dir(name)?;
                for (child, _) in sub.entries()? {
                    sub.remove_all(&child)?;
                }
                self.unlink(name, true)
            }
            Some(_) => self.unlink(name, false),
        }
    }

    /// Moves `name` here to `to_name` in `to` (same filesystem); fails if the target exists.
    pub fn rename_to(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        self.renameat2(name, to, to_name, RenameFlags::NOREPLACE)
    }

    /// Atomically swaps `name` here with `to_name` in `to`; both must exist.
    pub fn exchange(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        self.renameat2(name, to, to_name, RenameFlags::EXCHANGE)
    }

    fn renameat2(&self, name: &str, to: &Dir, to_name: &str, flags: RenameFlags) -> io::Result<()> {
        check_name(name)?;
        check_name(to_name)?;
        rfs::renameat_with(self.0.as_fd(), name, to.0.as_fd(), to_name, flags)?;
        Ok(())
    }

    /// Writes everything of this directory's filesystem to disk.
    pub fn sync_fs(&self) -> io::Result<()> {
        rfs::syncfs(self.0.as_fd())?;
        Ok(())
    }

    /// Gives this directory itself to `uid:gid` with `mode` (umask does not apply).
    pub fn set_owner_mode(&self, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
        set_owner_mode(self.0.as_fd(), uid, gid, mode)
    }

    /// This directory's permission bits.
    pub fn mode(&self) -> io::Result<u32> {
        Ok(rfs::fstat(self.0.as_fd())?.st_mode & 0o7777)
    }

    /// fsync of the directory itself (its entries).
    pub fn sync(&self) -> io::Result<()> {
        rfs::fsync(self.0.as_fd())?;
        Ok(())
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// `fchown` + `fchmod` on an open file or directory (set-id bits dropped).
pub fn set_owner_mode(fd: impl AsFd, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let (uid, gid) = (rustix::process::Uid::from_raw(uid), rustix::process::Gid::from_raw(gid));
    rfs::fchown(fd.as_fd(), Some(uid), Some(gid))?;
    rfs::fchmod(fd.as_fd(), Mode::from_raw_mode(mode & 0o777))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"x").unwrap();
        let inside = tmp.path().join("inside");
        std::fs::create_dir(&inside).unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), inside.join("file-link")).unwrap();
        assert!(Dir::open(&inside.join("link")).is_err());
        let d = Dir::open(&inside).unwrap();
        assert!(d.open_dir("link").is_err());
        assert!(d.open_file("file-link").is_err());
        assert!(d.create_file("file-link", 0o600).is_err());
        assert!(d.open_file("../outside/secret").is_err(), "only single components");
        assert_eq!(d.kind("link").unwrap(), Some(Kind::Other));
        assert_eq!(d.entries().unwrap(), vec![("file-link".into(), Kind::Other), ("link".into(), Kind::Other)]);
        d.remove_all("link").unwrap();
        assert!(outside.join("secret").exists(), "removing a symlink never touches its target");
        d.replace_file("file-link", b"mine", 0o600).unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"x", "replacing never writes through a symlink");
        assert_eq!(std::fs::read(inside.join("file-link")).unwrap(), b"mine");
        d.mkdir("a", 0o700).unwrap();
        d.open_dir("a").unwrap().create_file("f", 0o600).unwrap();
        d.remove_all("a").unwrap();
        assert_eq!(d.kind("a").unwrap(), None);
        d.remove_all("a").unwrap();
        d.mkdir("x", 0o700).unwrap();
        d.mkdir("y", 0o700).unwrap();
        d.open_dir("y").unwrap().create_file("marker", 0o600).unwrap();
        d.exchange("x", &d, "y").unwrap();
        assert!(inside.join("x/marker").exists());
        assert!(d.rename_to("x", &d, "y").is_err(), "rename_to never replaces");
        std::os::unix::fs::symlink(&outside, inside.join("z")).unwrap();
        let z = d.ensure_dir("z", 0o700).unwrap();
        z.create_file("new", 0o600).unwrap();
        assert!(!outside.join("new").exists(), "ensure_dir replaced the symlink with a real directory");
    }

    #[test]
    fn fifos_and_sockets_are_not_files() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let d = Dir::open(tmp.path()).unwrap();
        let started = std::time::Instant::now();
        let err = d.open_file("fifo").unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "opening a FIFO must not block");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(d.kind("fifo").unwrap(), Some(Kind::Other));
    }
}
