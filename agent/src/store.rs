//! Where encrypted archives are kept (R4). The store only ever sees ciphertext.
//!
//! [`BackupStore`] is the interface; [`DirStore`] keeps archives in a local directory outside
//! every tenant volume. An S3-compatible store maps onto the same calls: `put` is a multipart
//! upload that becomes visible only on `commit` (complete) and is aborted when dropped, `get` a
//! ranged or streamed GET, `delete` a DELETE (idempotent there too), and `remove_incomplete`
//! the listing and aborting of stale multipart uploads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Archives' file suffix.
const SUFFIX: &str = ".mhbk";
/// An archive being written; it only gets its real name once complete.
const PARTIAL: &str = ".partial";

/// A new object being written. Dropped without [`commit`](ObjectWriter::commit), it is discarded.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible under its name; returns its size in bytes.
    fn commit(self: Box<Self>) -> anyhow::Result<u64>;
}

pub trait BackupStore: Send + Sync + std::fmt::Debug {
    /// Starts writing the object `name` (`<homeserver id>/<backup id>`).
    fn put(&self, name: &str) -> anyhow::Result<Box<dyn ObjectWriter>>;
    /// Reads a complete object.
    fn get(&self, name: &str) -> anyhow::Result<Box<dyn Read + Send>>;
    /// Size of a complete object, or `None` if there is none.
    fn size(&self, name: &str) -> anyhow::Result<Option<u64>>;
    /// Deletes an object. Idempotent: `Ok(false)` when it was already gone.
    fn delete(&self, name: &str) -> anyhow::Result<bool>;
    /// Discards objects left incomplete by a crash; returns their names. Only called while no
    /// backup is being written.
    fn remove_incomplete(&self) -> anyhow::Result<Vec<String>>;
    /// Where the store is, for logs.
    fn describe(&self) -> String;
}

/// Archives as files: `<root>/<homeserver id>/<backup id>.mhbk`, root-only (0700/0600).
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
}

/// Object names are ids we make (`hs_…/bk_…`), checked so a name never leaves the root.
fn check_name(name: &str) -> anyhow::Result<(&str, &str)> {
    let (dir, file) = name.split_once('/').with_context(|| format!("bad backup object name {name:?}"))?;
    let ok = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    anyhow::ensure!(ok(dir) && ok(file), "bad backup object name {name:?}");
    Ok((dir, file))
}

impl DirStore {
    /// Opens (creating) the store directory, private to root.
    pub fn open(root: &Path) -> anyhow::Result<DirStore> {
        fs::create_dir_all(root).with_context(|| format!("cannot create the backup directory {}", root.display()))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).with_context(|| format!("cannot restrict {}", root.display()))?;
        Ok(DirStore { root: std::path::absolute(root).unwrap_or_else(|_| root.to_owned()) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a complete object.
    pub fn path_of(&self, name: &str) -> anyhow::Result<PathBuf> {
        let (dir, file) = check_name(name)?;
        Ok(self.root.join(dir).join(format!("{file}{SUFFIX}")))
    }
}

struct PendingFile {
    file: Option<BufWriter<File>>,
    partial: PathBuf,
    target: PathBuf,
}

impl Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("open until commit").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl ObjectWriter for PendingFile {
    fn commit(mut self: Box<Self>) -> anyhow::Result<u64> {
        let file = self.file.take().expect("committed once").into_inner().map_err(|e| e.into_error())?;
        // Data first, then the name, then the directory entry: after a crash the archive is
        // either complete under its name or only a `.partial` that the next start removes.
        file.sync_all().context("fsync of the archive")?;
        let size = file.metadata()?.len();
        drop(file);
        fs::rename(&self.partial, &self.target).context("renaming the finished archive")?;
        let dir = self.target.parent().expect("objects live in a directory");
        File::open(dir).and_then(|d| d.sync_all()).context("fsync of the backup directory")?;
        Ok(size)
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

impl BackupStore for DirStore {
    fn put(&self, name: &str) -> anyhow::Result<Box<dyn ObjectWriter>> {
        let target = self.path_of(name)?;
        let dir = target.parent().expect("objects live in a directory");
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        anyhow::ensure!(!target.exists(), "backup object {name} already exists");
        let partial = dir.join(format!("{}{PARTIAL}", target.file_name().and_then(|n| n.to_str()).expect("utf-8 name")));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(Box::new(PendingFile { file: Some(BufWriter::with_capacity(1 << 20, file)), partial, target }))
    }

    fn get(&self, name: &str) -> anyhow::Result<Box<dyn Read + Send>> {
        let path = self.path_of(name)?;
        let file = File::open(&path).with_context(|| format!("the archive of backup {name} is missing from the store ({})", path.display()))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, file)))
    }

    fn size(&self, name: &str) -> anyhow::Result<Option<u64>> {
        match fs::metadata(self.path_of(name)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, name: &str) -> anyhow::Result<bool> {
        let path = self.path_of(name)?;
        let existed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot delete {}", path.display()))),
        };
        // The homeserver's directory goes with its last archive (fails harmlessly otherwise).
        if let Some(dir) = path.parent() {
            let _ = fs::remove_dir(dir);
        }
        Ok(existed)
    }

    fn remove_incomplete(&self) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(dir.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(PARTIAL).and_then(|n| n.strip_suffix(SUFFIX)) {
                    fs::remove_file(file.path())?;
                    removed.push(format!("{}/{stem}", dir.file_name().to_string_lossy()));
                }
            }
        }
        Ok(removed)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_appear_only_when_committed_and_deletes_are_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(&tmp.path().join("b")).unwrap();
        let mut w = store.put("hs_a/bk_1").unwrap();
        w.write_all(b"cipher").unwrap();
        assert_eq!(store.size("hs_a/bk_1").unwrap(), None, "invisible until committed");
        assert_eq!(w.commit().unwrap(), 6);
        assert_eq!(store.size("hs_a/bk_1").unwrap(), Some(6));
        let mut back = String::new();
        store.get("hs_a/bk_1").unwrap().read_to_string(&mut back).unwrap();
        assert_eq!(back, "cipher");
        // Dropped without commit: nothing is left.
        let mut w = store.put("hs_a/bk_2").unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        assert_eq!(store.size("hs_a/bk_2").unwrap(), None);
        assert!(!store.root().join("hs_a/bk_2.mhbk.partial").exists());
        // A crash leaves a partial file: removed at the next start.
        let w = store.put("hs_a/bk_3").unwrap();
        std::mem::forget(w);
        assert_eq!(store.remove_incomplete().unwrap(), vec!["hs_a/bk_3".to_owned()]);
        assert!(store.delete("hs_a/bk_1").unwrap());
        assert!(!store.delete("hs_a/bk_1").unwrap(), "deleting again is fine");
        assert!(store.put("../x").is_err());
        assert!(store.put("hs_a/../../x").is_err());
        let mode = fs::metadata(store.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
