//! Directory-relative file operations that never follow a symlink.
//!
//! Backups and restores run as root inside a data directory that the tenant owns (R3). A tenant
//! could plant a symlink (or swap a directory for one) to make root read or write outside its
//! volume. Every operation here is relative to an open directory descriptor and refuses
//! symlinks at every step (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), so the paths reached are the
//! ones inside the directory that was opened, whatever the tenant does meanwhile.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

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

fn cname(name: &str) -> io::Result<CString> {
    // One component only: a name with a slash could reach through a symlinked parent.
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a plain file name: {name:?}")));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a file name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Dir {
    /// Opens `path` as a directory; the last component must not be a symlink.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        // SAFETY: a NUL-terminated path; the returned descriptor is owned below.
        let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn openat(&self, name: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
        let c = cname(name)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = check(unsafe { libc::openat(self.0.as_raw_fd(), c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, mode as libc::c_uint) })?;
        // SAFETY: fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The subdirectory `name` (not a symlink).
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        Ok(Dir(self.openat(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?))
    }

    /// The regular file `name` for reading (not a symlink, FIFO or device).
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        // O_NONBLOCK: opening a FIFO the tenant planted must not hang the backup.
        let file = File::from(self.openat(name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is not a regular file")));
        }
        Ok(file)
    }

    /// Creates the file `name`, which must not exist.
    pub fn create_file(&self, name: &str, mode: u32) -> io::Result<File> {
        Ok(File::from(self.openat(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode as libc::mode_t)?))
    }

    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and name.
        check(unsafe { libc::mkdirat(self.0.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
        Ok(())
    }

    /// Gives `name` (never a symlink's target) to `uid:gid`.
    pub fn chown(&self, name: &str, uid: u32, gid: u32) -> io::Result<()> {
        let c = cname(name)?;
        // SAFETY: valid descriptor and name.
        check(unsafe { libc::fchownat(self.0.as_raw_fd(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(())
    }

    /// What `name` is, or `None` if it does not exist.
    pub fn kind(&self, name: &str) -> io::Result<Option<Kind>> {
        let c = cname(name)?;
        // SAFETY: a zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, name and out-parameter.
        let ret = unsafe { libc::fstatat(self.0.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::NotFound { Ok(None) } else { Err(e) };
        }
        Ok(Some(match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        }))
    }

    /// The entries (name, kind), sorted by name; `.` and `..` left out.
    pub fn entries(&self) -> io::Result<Vec<(String, Kind)>> {
        // The /proc link names this very directory, even if it was renamed meanwhile.
        let mut out = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", self.0.as_raw_fd()))? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                // A name that is not UTF-8 cannot be archived; it is skipped.
                tracing::warn!("skipping a file whose name is not UTF-8");
                continue;
            };
            let t = entry.file_type()?;
            let kind = if t.is_file() {
                Kind::File
            } else if t.is_dir() {
                Kind::Dir
            } else {
                Kind::Other
            };
            out.push((name, kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn unlink(&self, name: &str, dir: bool) -> io::Result<()> {
        let c = cname(name)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid descriptor and name.
        check(unsafe { libc::unlinkat(self.0.as_raw_fd(), c.as_ptr(), flags) })?;
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

    /// Moves `name` here to `to_name` in `to` (same filesystem), replacing nothing: fails if
    /// the target exists.
    pub fn rename_to(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        self.renameat2(name, to, to_name, libc::RENAME_NOREPLACE)
    }

    /// Atomically swaps `name` here with `to_name` in `to`; both must exist.
    pub fn exchange(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        self.renameat2(name, to, to_name, libc::RENAME_EXCHANGE)
    }

    fn renameat2(&self, name: &str, to: &Dir, to_name: &str, flags: libc::c_uint) -> io::Result<()> {
        let (a, b) = (cname(name)?, cname(to_name)?);
        // SAFETY: valid descriptors and names.
        check(unsafe { libc::renameat2(self.0.as_raw_fd(), a.as_ptr(), to.0.as_raw_fd(), b.as_ptr(), flags) })?;
        Ok(())
    }

    /// Writes everything of this directory's filesystem to disk.
    pub fn sync_fs(&self) -> io::Result<()> {
        // SAFETY: valid descriptor.
        check(unsafe { libc::syncfs(self.0.as_raw_fd()) })?;
        Ok(())
    }

    /// Gives this directory itself to `uid:gid` with `mode` (umask does not apply).
    pub fn set_owner_mode(&self, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
        // SAFETY: valid descriptor.
        check(unsafe { libc::fchown(self.0.as_raw_fd(), uid, gid) })?;
        // SAFETY: valid descriptor.
        check(unsafe { libc::fchmod(self.0.as_raw_fd(), (mode & 0o777) as libc::mode_t) })?;
        Ok(())
    }

    /// This directory's permission bits.
    pub fn mode(&self) -> io::Result<u32> {
        // SAFETY: a zeroed stat is a valid out-parameter for fstat on a valid descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(self.0.as_raw_fd(), &mut st) })?;
        Ok(st.st_mode & 0o7777)
    }

    /// fsync of the directory itself (its entries).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: valid descriptor.
        check(unsafe { libc::fsync(self.0.as_raw_fd()) })?;
        Ok(())
    }
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
    }
}
