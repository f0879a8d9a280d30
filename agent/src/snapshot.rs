//! A homeserver's data as a backup sees it (R4): a consistent copy of the live database made
//! with SQLite's online backup API, plus the signing key and the media store. (The config is
//! not data: it is rendered again from the spec.) Restoring unpacks an archive beside the live
//! data, then swaps it in while Synapse is stopped.
//!
//! Plaintext never leaves the encrypted volume (R2): the database copy is staged in the data
//! directory itself and streamed from there into the encrypting writer; a restore is unpacked
//! into a staging directory on the volume too.
//!
//! The data directory is the tenant's, and a compromised tenant may have planted anything in
//! it. So:
//! * the database copy is made by Python running as the tenant inside its sandbox
//!   ([`InTenant`]), never by root;
//! * root reads files only through [`fsat`](crate::fsat) (no symlink is ever followed, FIFOs
//!   and devices are skipped, only regular files are read);
//! * the total read is capped at the volume's size, so sparse "huge" files cannot fill the
//!   backup store, and every copy loop checks for cancellation.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::archive::{archive_error, Entry, EntryReader, EntryWriter};
use crate::fsat::{Dir, Kind};

/// The database file, copied with SQLite's backup API rather than read as it is.
pub const DATABASE: &str = "homeserver.db";
/// Everything else a backup holds, relative to the data directory. Logs are left out: they
/// hold client IP addresses, which are kept 30 days only (R17).
pub const ITEMS: &[&str] = &["signing.key", "media_store"];
/// The live database's companions belong to the database they sit next to.
const DB_COMPANIONS: &[&str] = &["homeserver.db-wal", "homeserver.db-shm", "homeserver.db-journal"];
pub const BACKUP_STAGING: &str = ".mh-backup-staging";
pub const RESTORE_STAGING: &str = ".mh-restore-staging";
/// Inside the restore staging directory: what the swap moved out of the way.
const PREVIOUS: &str = ".previous";

/// A homeserver's data directory (host path) and the user that owns it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub data_dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// Runs work as the tenant, inside its sandbox.
pub trait InTenant {
    /// Runs the Synapse virtualenv's Python with `script`; `args` are paths relative to the
    /// data directory. Fails unless the script exits 0.
    fn python(&self, script: &str, args: &[&str]) -> anyhow::Result<String>;
}

/// How much a backup may read, and whether it should stop.
#[derive(Debug)]
pub struct Budget<'a> {
    /// Plaintext bytes at most (the volume's size: a tenant cannot hold more real data).
    pub max_bytes: u64,
    pub cancel: &'a AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the homeserver has no database yet")]
    NoDatabase,
    #[error("the online copy of the database failed")]
    DatabaseCopy(#[source] anyhow::Error),
    #[error("the files add up to more than the volume's {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },
    #[error("cancelled")]
    Cancelled,
    #[error("the archive failed authentication: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What went into or came out of an archive.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub files: u64,
    /// Plaintext bytes of file contents.
    pub bytes: u64,
    /// Seconds spent on the online copy of the database (a backup only).
    pub copy_seconds: f64,
}

/// Copies the live database into the staging directory with SQLite's online backup API. One
/// `backup()` step copies every page inside one read transaction: the copy is a single
/// consistent state, and in WAL mode Synapse keeps writing meanwhile. The copy is switched to a
/// rollback journal (so it is one self-contained file) and checked before it is archived. It is
/// read back at once and then deleted, so it is not fsynced (`synchronous=OFF`).
const SNAPSHOT_PY: &str = r#"
import sqlite3, sys, urllib.parse
src = sqlite3.connect("file:" + urllib.parse.quote(sys.argv[1]) + "?mode=rw", uri=True, timeout=60)
dst = sqlite3.connect(sys.argv[2])
dst.execute("PRAGMA synchronous=OFF")
src.backup(dst)
src.close()
dst.execute("PRAGMA journal_mode=DELETE")
check = dst.execute("PRAGMA quick_check").fetchone()[0]
dst.close()
if check != "ok":
    sys.exit("the database copy failed its check: " + str(check)[:200])
"#;

fn open_data(t: &Tenant) -> anyhow::Result<Dir> {
    Dir::open(&t.data_dir).with_context(|| format!("cannot open the data directory {}", t.data_dir.display()))
}

/// Removes what an interrupted backup or restore left on the volume. Callers hold the
/// homeserver's lock, so no other backup or restore is using them.
pub fn clear_staging(t: &Tenant) -> anyhow::Result<()> {
    let d = open_data(t)?;
    d.remove_all(BACKUP_STAGING)?;
    d.remove_all(RESTORE_STAGING)?;
    Ok(())
}

/// Writes the homeserver's data as archive entries (ending with the end entry) and returns
/// the inner writer. `pause` is a test hook: a sleep once the database is in the archive.
pub fn take<W: Write>(t: &Tenant, runner: &dyn InTenant, out: W, budget: &Budget, pause: Option<Duration>) -> Result<(W, Stats), SnapshotError> {
    let d = open_data(t)?;
    d.remove_all(BACKUP_STAGING).context("cannot clear the backup staging directory")?;
    d.mkdir(BACKUP_STAGING, 0o700).context("cannot create the backup staging directory")?;
    // The tenant's python writes the copy here; root reads it back without following links.
    d.open_dir(BACKUP_STAGING).and_then(|s| s.set_owner_mode(t.uid, t.gid, 0o700)).context("cannot hand the staging directory to the tenant")?;
    let result = write_entries(runner, &d, out, budget, pause);
    // The plaintext copy goes as soon as it is in the archive (or the backup failed).
    if let Err(e) = d.remove_all(BACKUP_STAGING) {
        tracing::warn!(error = %e, "cannot remove the backup staging directory; the next backup will");
    }
    result
}

fn write_entries<W: Write>(runner: &dyn InTenant, d: &Dir, out: W, budget: &Budget, pause: Option<Duration>) -> Result<(W, Stats), SnapshotError> {
    if d.kind(DATABASE).context("cannot look at the database")? != Some(Kind::File) {
        return Err(SnapshotError::NoDatabase);
    }
    let copy_started = std::time::Instant::now();
    let staged = format!("{BACKUP_STAGING}/{DATABASE}");
    runner.python(SNAPSHOT_PY, &[DATABASE, &staged]).map_err(SnapshotError::DatabaseCopy)?;
    let staging = d.open_dir(BACKUP_STAGING).context("the backup staging directory vanished")?;
    let mut w = EntryWriter::new(out);
    let mut stats = Stats { copy_seconds: copy_started.elapsed().as_secs_f64(), ..Stats::default() };
    add_file(&mut w, &staging, DATABASE, DATABASE, &mut stats, budget)?;
    if let Some(pause) = pause {
        tracing::warn!(seconds = pause.as_secs(), "test hook: pausing the backup");
        let until = std::time::Instant::now() + pause;
        while std::time::Instant::now() < until {
            check_cancel(budget)?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for item in ITEMS {
        match d.kind(item).context("cannot look at the data directory")? {
            Some(Kind::File) => add_file(&mut w, d, item, item, &mut stats, budget)?,
            Some(Kind::Dir) => add_tree(&mut w, &d.open_dir(item).context("cannot open a directory")?, item, &mut stats, budget)?,
            Some(Kind::Other) => tracing::warn!(item, "skipping: not a regular file or directory"),
            None => {}
        }
    }
    Ok((w.end().context("cannot finish the archive")?, stats))
}

fn check_cancel(budget: &Budget) -> Result<(), SnapshotError> {
    if budget.cancel.load(Ordering::Relaxed) {
        return Err(SnapshotError::Cancelled);
    }
    Ok(())
}

/// Reads through, failing as soon as the work is cancelled.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            // Not `Interrupted`: readers retry that one.
            return Err(io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

fn add_file<W: Write>(w: &mut EntryWriter<W>, dir: &Dir, name: &str, path: &str, stats: &mut Stats, budget: &Budget) -> Result<(), SnapshotError> {
    check_cancel(budget)?;
    let f = match dir.open_file(name) {
        Ok(f) => f,
        // Swapped for a FIFO, a device or a link between listing and opening: skipped.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            tracing::warn!(path, "skipping: not a regular file");
            return Ok(());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {path}")).into()),
    };
    let meta = f.metadata().context("cannot stat a file")?;
    if stats.bytes + meta.len() > budget.max_bytes {
        return Err(SnapshotError::TooLarge { max_bytes: budget.max_bytes });
    }
    let mut reader = Cancellable { inner: f, cancel: budget.cancel };
    match w.file(path, meta.permissions().mode(), meta.len(), &mut reader) {
        Ok(()) => {}
        Err(_) if budget.cancel.load(Ordering::Relaxed) => return Err(SnapshotError::Cancelled),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot archive {path}")).into()),
    }
    stats.files += 1;
    stats.bytes += meta.len();
    Ok(())
}

/// A directory and everything below it, directories before their contents.
fn add_tree<W: Write>(w: &mut EntryWriter<W>, dir: &Dir, path: &str, stats: &mut Stats, budget: &Budget) -> Result<(), SnapshotError> {
    check_cancel(budget)?;
    w.dir(path, dir.mode().context("cannot stat a directory")?).context("cannot archive a directory")?;
    for (name, kind) in dir.entries().context("cannot list a directory")? {
        let child = format!("{path}/{name}");
        match kind {
            Kind::File => add_file(w, dir, &name, &child, stats, budget)?,
            Kind::Dir => match dir.open_dir(&name) {
                Ok(sub) => add_tree(w, &sub, &child, stats, budget)?,
                Err(_) => tracing::warn!(path = %child, "skipping: no longer a directory"),
            },
            // A symlink could point anywhere: never followed, never archived.
            Kind::Other => tracing::warn!(path = %child, "skipping: not a regular file or directory"),
        }
    }
    Ok(())
}

/// Unpacks an archive's entries into a staging directory on the volume, owned by the tenant.
/// Nothing live is touched: if the archive fails authentication at any point, the staging
/// directory is removed and the error returned. The archive is read to its authenticated end
/// before this returns.
pub fn unpack<R: Read>(t: &Tenant, input: R, backup_id: &str, cancel: &AtomicBool, end_check: impl FnOnce(R) -> io::Result<()>) -> Result<Stats, SnapshotError> {
    let d = open_data(t)?;
    d.remove_all(RESTORE_STAGING).context("cannot clear the restore staging directory")?;
    // Root-owned and 0700 while it fills: the tenant cannot tamper with what is staged.
    d.mkdir(RESTORE_STAGING, 0o700).context("cannot create the restore staging directory")?;
    let result = (|| -> Result<Stats, SnapshotError> {
        let staging = d.open_dir(RESTORE_STAGING).context("the restore staging directory vanished")?;
        let mut reader = EntryReader::new(input, backup_id);
        let stats = unpack_entries(t, &staging, &mut reader, backup_id, cancel)?;
        end_check(reader.into_inner()).map_err(|e| clarify(e.into()))?;
        if staging.kind(DATABASE).context("cannot look at the staged database")? != Some(Kind::File) {
            return Err(SnapshotError::Corrupt(format!("backup {backup_id} holds no database")));
        }
        staging.sync_fs().context("cannot sync the staged data")?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = d.remove_all(RESTORE_STAGING);
    }
    result
}

/// An authentication failure deep inside the copy reads best as the archive's own message.
fn clarify(e: anyhow::Error) -> SnapshotError {
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            if let Some(a) = archive_error(io) {
                return SnapshotError::Corrupt(a.to_string());
            }
        }
    }
    SnapshotError::Other(e)
}

fn unpack_entries<R: Read>(t: &Tenant, staging: &Dir, reader: &mut EntryReader<R>, backup_id: &str, cancel: &AtomicBool) -> Result<Stats, SnapshotError> {
    let mut stats = Stats::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(SnapshotError::Cancelled);
        }
        let entry = reader.next_entry().map_err(|e| clarify(e.into()))?;
        let (path, mode) = match &entry {
            Entry::End => return Ok(stats),
            Entry::Dir { path, mode } | Entry::File { path, mode, .. } => (path.clone(), *mode),
        };
        let top = path.split('/').next().unwrap_or_default();
        if top != DATABASE && !ITEMS.contains(&top) {
            return Err(SnapshotError::Corrupt(format!("backup {backup_id} holds an unexpected entry")));
        }
        let (parent_path, name) = match path.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, path.as_str()),
        };
        let parent = match parent_path {
            None => None,
            Some(p) => Some(walk(staging, p).map_err(|_| SnapshotError::Corrupt(format!("backup {backup_id} lists a file before its directory")))?),
        };
        let parent = parent.as_ref().unwrap_or(staging);
        match entry {
            Entry::Dir { .. } => {
                parent.mkdir(name, 0o700).context("cannot create a staged directory")?;
                parent.open_dir(name).and_then(|d| d.set_owner_mode(t.uid, t.gid, mode)).context("cannot hand a staged directory to the tenant")?;
            }
            Entry::File { size, .. } => {
                let mut f = parent.create_file(name, 0o600).context("cannot create a staged file")?;
                let mut content = reader.content(size);
                let mut left = size;
                while left > 0 {
                    let n = content.read(&mut buf).map_err(|e| clarify(e.into()))?;
                    if n == 0 {
                        return Err(SnapshotError::Corrupt(format!("backup {backup_id} is cut short")));
                    }
                    f.write_all(&buf[..n]).context("cannot write a staged file")?;
                    left -= n as u64;
                }
                crate::fsat::set_owner_mode(&f, t.uid, t.gid, mode).context("cannot hand a staged file to the tenant")?;
                stats.files += 1;
                stats.bytes += size;
            }
            Entry::End => unreachable!("handled above"),
        }
    }
}

/// The directory at `path` (components separated by `/`) below `root`, without following links.
fn walk(root: &Dir, path: &str) -> io::Result<Dir> {
    let mut parts = path.split('/');
    let mut dir = root.open_dir(parts.next().unwrap_or_default())?;
    for part in parts {
        dir = dir.open_dir(part)?;
    }
    Ok(dir)
}

/// Replaces the live data with the staged restore. Synapse must be stopped. Each staged item
/// is exchanged atomically with the live one (there is never a moment without a database); the
/// live database's WAL and shared-memory files go first, with the database they belong to. On
/// an error every step already taken is undone. The previous data is then deleted.
pub fn swap_in(t: &Tenant) -> anyhow::Result<()> {
    let d = open_data(t)?;
    let staging = d.open_dir(RESTORE_STAGING).context("nothing is staged")?;
    let staged: Vec<String> = staging.entries()?.into_iter().map(|(n, _)| n).collect();
    staging.mkdir(PREVIOUS, 0o700)?;
    let previous = staging.open_dir(PREVIOUS)?;
    enum Step {
        CompanionOut(&'static str),
        Exchanged(String),
        MovedIn(String),
    }
    let mut done: Vec<Step> = Vec::new();
    let mut order: Vec<&str> = vec![DATABASE];
    order.extend(staged.iter().map(String::as_str).filter(|n| *n != DATABASE));
    let result = (|| -> io::Result<()> {
        for c in DB_COMPANIONS {
            if d.kind(c)?.is_some() {
                d.rename_to(c, &previous, c)?;
                done.push(Step::CompanionOut(c));
            }
        }
        for name in &order {
            if d.kind(name)?.is_some() {
                staging.exchange(name, &d, name)?;
                done.push(Step::Exchanged((*name).to_owned()));
            } else {
                staging.rename_to(name, &d, name)?;
                done.push(Step::MovedIn((*name).to_owned()));
            }
        }
        d.sync()
    })();
    if let Err(e) = result {
        for step in done.into_iter().rev() {
            let undo = match &step {
                Step::CompanionOut(c) => previous.rename_to(c, &d, c),
                Step::Exchanged(n) => staging.exchange(n, &d, n),
                Step::MovedIn(n) => d.rename_to(n, &staging, n),
            };
            if let Err(u) = undo {
                tracing::error!(error = %u, "cannot undo a step of the restore swap");
            }
        }
        let _ = d.remove_all(RESTORE_STAGING);
        return Err(anyhow::Error::new(e).context("swapping the restored data in failed; the previous data was put back"));
    }
    // The staging directory now holds the data that was replaced.
    if let Err(e) = d.remove_all(RESTORE_STAGING) {
        tracing::warn!(error = %e, "cannot remove the replaced data; the next backup or restore will");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{DecryptingReader, EncryptingWriter};

    fn python() -> Option<PathBuf> {
        let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/synapse-venv/bin/python"));
        (p.exists() && rustix::process::geteuid().is_root()).then_some(p)
    }

    /// Python as the tenant's uid on host paths (the real agent adds the sandbox).
    struct AsUser<'a>(&'a Tenant, PathBuf);

    impl InTenant for AsUser<'_> {
        fn python(&self, script: &str, args: &[&str]) -> anyhow::Result<String> {
            let out = std::process::Command::new("setpriv")
                .args([format!("--reuid={}", self.0.uid), format!("--regid={}", self.0.gid), "--clear-groups".into(), "--".into()])
                .arg(&self.1)
                .arg("-c")
                .arg(script)
                .args(args.iter().map(|a| self.0.data_dir.join(a)))
                .output()?;
            anyhow::ensure!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }

    fn budget(cancel: &AtomicBool) -> Budget<'_> {
        Budget { max_bytes: 1 << 30, cancel }
    }

    /// A control plane that hangs up mid-file ends the archive at once (a reader that reported
    /// `Interrupted` was retried forever, holding the homeserver's lock).
    #[test]
    fn a_cancelled_read_ends_the_archive_instead_of_being_retried() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cancel = AtomicBool::new(true);
            let mut reader = Cancellable { inner: &b"media"[..], cancel: &cancel };
            let mut w = EntryWriter::new(Vec::new());
            let _ = done.send(w.file("media_store/x", 0o600, 5, &mut reader).map_err(|e| e.to_string()));
        });
        let result = finished.recv_timeout(std::time::Duration::from_secs(5)).expect("the cancelled write did not end");
        assert_eq!(result, Err("cancelled".to_owned()));
    }

    fn run_sql(python: &std::path::Path, db: &std::path::Path, sql: &str) -> String {
        let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nfor r in c.execute(sys.argv[2]): print(*r)\nc.commit()";
        let out = std::process::Command::new(python).arg("-c").arg(script).arg(db).arg(sql).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    // R4
    #[test]
    fn r4_take_then_unpack_and_swap_restores_the_data_and_skips_symlinks() {
        let Some(python) = python() else {
            eprintln!("SKIPPED: needs root and the Synapse venv");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // Running as nobody, like a tenant.
        let t = Tenant { data_dir: data.clone(), uid: 65534, gid: 65534 };
        let runner = AsUser(&t, python.clone());
        let cancel = AtomicBool::new(false);
        run_sql(&python, &data.join(DATABASE), "CREATE TABLE m (v TEXT)");
        run_sql(&python, &data.join(DATABASE), "INSERT INTO m VALUES ('before')");
        std::fs::create_dir_all(data.join("media_store/local_content/ab")).unwrap();
        std::fs::write(data.join("media_store/local_content/ab/cdef"), b"media bytes").unwrap();
        std::fs::write(data.join("signing.key"), b"ed25519 a_key xyz").unwrap();
        std::fs::write(tmp.path().join("outside-secret"), b"not the tenant's").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside-secret"), data.join("media_store/evil")).unwrap();
        std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(&data).status().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let sealer = matrixhost_seal::Sealer::load_or_create(&dir.path().join("k")).unwrap();
        let enc = EncryptingWriter::new(Vec::new(), &sealer, "hs_t", "bk_t", 0).unwrap();
        let (enc, stats) = take(&t, &runner, enc, &budget(&cancel), None).unwrap();
        let archive = enc.finish().unwrap();
        assert_eq!(stats.files, 3, "database, media and key; the symlink is skipped");
        assert!(!data.join(BACKUP_STAGING).exists(), "staging removed");

        // Lose data, then restore.
        run_sql(&python, &data.join(DATABASE), "DELETE FROM m");
        std::fs::remove_file(data.join("media_store/local_content/ab/cdef")).unwrap();
        std::fs::write(data.join("homeserver.db-wal"), b"stale wal of the old database").unwrap();
        let reader = DecryptingReader::open(archive.as_slice(), &sealer, "hs_t", "bk_t").unwrap();
        unpack(&t, reader, "bk_t", &cancel, |mut r| {
            let mut rest = Vec::new();
            r.read_to_end(&mut rest)?;
            assert!(rest.is_empty() && r.is_finished());
            Ok(())
        })
        .unwrap();
        swap_in(&t).unwrap();
        assert_eq!(run_sql(&python, &data.join(DATABASE), "SELECT v FROM m"), "before");
        assert_eq!(std::fs::read(data.join("media_store/local_content/ab/cdef")).unwrap(), b"media bytes");
        assert!(!data.join("homeserver.db-wal").exists(), "the old WAL went with the old database");
        assert!(!data.join(RESTORE_STAGING).exists());
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data.join("media_store/local_content/ab/cdef")).unwrap());
        assert_eq!(owner, 65534);

        // A tampered archive leaves the live data as it is.
        run_sql(&python, &data.join(DATABASE), "INSERT INTO m VALUES ('after')");
        let mut bad = archive.clone();
        let n = bad.len();
        bad[n - 30] ^= 1;
        let reader = DecryptingReader::open(bad.as_slice(), &sealer, "hs_t", "bk_t").unwrap();
        let err = unpack(&t, reader, "bk_t", &cancel, |_| Ok(())).unwrap_err();
        assert!(matches!(&err, SnapshotError::Corrupt(m) if m.contains("backup bk_t is corrupt: authentication failed at chunk 0")), "{err:#}");
        assert_eq!(run_sql(&python, &data.join(DATABASE), "SELECT count(*) FROM m"), "2");
        assert!(!data.join(RESTORE_STAGING).exists());

        // A sparse file larger than the budget is refused, not read.
        let huge = std::fs::File::create(data.join("media_store/huge")).unwrap();
        huge.set_len(8 << 30).unwrap();
        let small = Budget { max_bytes: 1 << 30, cancel: &cancel };
        let enc = EncryptingWriter::new(Vec::new(), &sealer, "hs_t", "bk_u", 0).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(take(&t, &runner, enc, &small, None), Err(SnapshotError::TooLarge { .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        std::fs::remove_file(data.join("media_store/huge")).unwrap();

        // A FIFO where a file is expected neither hangs nor fails the backup.
        rustix::fs::mknodat(rustix::fs::CWD, data.join("signing.key.fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
        std::fs::remove_file(data.join("signing.key")).unwrap();
        std::fs::rename(data.join("signing.key.fifo"), data.join("signing.key")).unwrap();
        let enc = EncryptingWriter::new(Vec::new(), &sealer, "hs_t", "bk_v", 0).unwrap();
        let (_enc, stats) = take(&t, &runner, enc, &budget(&cancel), None).unwrap();
        assert_eq!(stats.files, 2, "database and media; the FIFO is skipped");

        // Cancelled work stops and keeps nothing.
        cancel.store(true, Ordering::Relaxed);
        let enc = EncryptingWriter::new(Vec::new(), &sealer, "hs_t", "bk_w", 0).unwrap();
        assert!(matches!(take(&t, &runner, enc, &budget(&cancel), None), Err(SnapshotError::Cancelled)));
        assert!(!data.join(BACKUP_STAGING).exists());
    }
}
