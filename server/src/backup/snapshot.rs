//! A homeserver's data as a backup sees it (R4): a consistent copy of the live database made
//! with SQLite's online backup API, plus the signing key, the config, the privacy-notice
//! templates and the media store. Restoring unpacks an archive beside the live data, then swaps
//! it in while Synapse is stopped.
//!
//! Plaintext never leaves the encrypted volume (R2): the database copy is staged in the data
//! directory itself and streamed from there into the encrypting writer; a restore is unpacked
//! into a staging directory on the volume too. Everything here runs as root inside a directory
//! the tenant owns, so all file access goes through [`fsat`](super::fsat) (no symlink is ever
//! followed), and the database copy is made by Python running as the tenant user, never as root.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

use super::archive::{archive_error, Entry, EntryReader, EntryWriter};
use super::fsat::{Dir, Kind};

/// The database file, copied with SQLite's backup API rather than read as it is.
pub const DATABASE: &str = "homeserver.db";
/// Everything else a backup holds, relative to the data directory. Logs are left out: they
/// hold client IP addresses, which are kept 30 days only (R17).
pub const ITEMS: &[&str] = &["signing.key", "homeserver.yaml", "log.config", "consent_templates", "media_store"];
/// The live database's companions belong to the database they sit next to.
const DB_COMPANIONS: &[&str] = &["homeserver.db-wal", "homeserver.db-shm", "homeserver.db-journal"];
const BACKUP_STAGING: &str = ".mh-backup-staging";
const RESTORE_STAGING: &str = ".mh-restore-staging";
/// Inside the restore staging directory: what the swap moved out of the way.
const PREVIOUS: &str = ".previous";

/// A homeserver's data directory and the user that owns it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub data_dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The Synapse venv's python (it has `sqlite3`).
    pub python: PathBuf,
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

/// Copies the live database into `dest` with SQLite's online backup API, run as the tenant.
/// One `backup()` step copies every page inside one read transaction: the copy is a single
/// consistent state, and in WAL mode Synapse keeps writing meanwhile. The copy is switched to a
/// rollback journal (so it is one self-contained file) and checked before it is archived. It is
/// read back at once and then deleted, so it is not fsynced (`synchronous=OFF`): forcing it to
/// the volume first made backups I/O-bound at half the speed.
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

fn python_as(t: &Tenant) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&t.python);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .env("HOME", &t.data_dir)
        .current_dir(&t.data_dir)
        .stdin(Stdio::null())
        .uid(t.uid)
        .gid(t.gid);
    let (uid, gid) = (t.uid, t.gid);
    // As for Synapse (runtime/synapse.rs): no supplementary groups, and the identity checked
    // before exec, so the copy runs with the tenant's rights and nothing more (R3).
    unsafe {
        cmd.pre_exec(move || {
            if libc::geteuid() == 0 && libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getuid() != uid || libc::geteuid() != uid || libc::getgid() != gid || libc::getegid() != gid {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        });
    }
    cmd
}

/// Removes what an interrupted backup or restore left on the volume. Callers hold the
/// homeserver's lock, so no other backup or restore is using them.
pub fn clear_staging(t: &Tenant) -> anyhow::Result<()> {
    let d = Dir::open(&t.data_dir).with_context(|| format!("cannot open {}", t.data_dir.display()))?;
    d.remove_all(BACKUP_STAGING)?;
    d.remove_all(RESTORE_STAGING)?;
    Ok(())
}

/// Writes the homeserver's data as archive entries (ending with the end entry) and returns
/// the inner writer. `pause` is a test hook: a sleep once the database is in the archive.
pub fn take<W: Write>(t: &Tenant, out: W, pause: Option<Duration>) -> anyhow::Result<(W, Stats)> {
    let d = Dir::open(&t.data_dir).with_context(|| format!("cannot open the data directory {}", t.data_dir.display()))?;
    d.remove_all(BACKUP_STAGING)?;
    d.mkdir(BACKUP_STAGING, 0o700)?;
    // The tenant's python writes the copy here; root reads it back without following links.
    d.chown(BACKUP_STAGING, t.uid, t.gid)?;
    let result = write_entries(t, &d, out, pause);
    // The plaintext copy goes as soon as it is in the archive (or the backup failed).
    if let Err(e) = d.remove_all(BACKUP_STAGING) {
        tracing::warn!(error = %e, "cannot remove the backup staging directory; the next backup will");
    }
    result
}

fn write_entries<W: Write>(t: &Tenant, d: &Dir, out: W, pause: Option<Duration>) -> anyhow::Result<(W, Stats)> {
    anyhow::ensure!(d.kind(DATABASE)? == Some(Kind::File), "the homeserver has no database yet");
    let copy_started = std::time::Instant::now();
    let copy = python_as(t)
        .arg("-c")
        .arg(SNAPSHOT_PY)
        .arg(t.data_dir.join(DATABASE))
        .arg(t.data_dir.join(BACKUP_STAGING).join(DATABASE))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", t.python.display()))?;
    if !copy.status.success() {
        let err = String::from_utf8_lossy(&copy.stderr);
        anyhow::bail!("the online copy of the database failed: {}", err.trim().lines().last().unwrap_or("no output"));
    }
    let staging = d.open_dir(BACKUP_STAGING)?;
    let mut w = EntryWriter::new(out);
    let mut stats = Stats { copy_seconds: copy_started.elapsed().as_secs_f64(), ..Stats::default() };
    add_file(&mut w, &staging, DATABASE, DATABASE, &mut stats)?;
    if let Some(pause) = pause {
        tracing::warn!(seconds = pause.as_secs(), "test hook: pausing the backup");
        std::thread::sleep(pause);
    }
    for item in ITEMS {
        match d.kind(item)? {
            Some(Kind::File) => add_file(&mut w, d, item, item, &mut stats)?,
            Some(Kind::Dir) => add_tree(&mut w, &d.open_dir(item)?, item, &mut stats)?,
            Some(Kind::Other) => tracing::warn!(item, "skipping: not a regular file or directory"),
            None => {}
        }
    }
    Ok((w.end()?, stats))
}

fn add_file<W: Write>(w: &mut EntryWriter<W>, dir: &Dir, name: &str, path: &str, stats: &mut Stats) -> anyhow::Result<()> {
    let mut f = dir.open_file(name).with_context(|| format!("cannot read {path}"))?;
    let meta = f.metadata()?;
    w.file(path, meta.permissions().mode(), meta.len(), &mut f).with_context(|| format!("cannot archive {path}"))?;
    stats.files += 1;
    stats.bytes += meta.len();
    Ok(())
}

/// A directory and everything below it, directories before their contents.
fn add_tree<W: Write>(w: &mut EntryWriter<W>, dir: &Dir, path: &str, stats: &mut Stats) -> anyhow::Result<()> {
    w.dir(path, dir.mode()?)?;
    for (name, kind) in dir.entries()? {
        let child = format!("{path}/{name}");
        match kind {
            Kind::File => add_file(w, dir, &name, &child, stats)?,
            Kind::Dir => add_tree(w, &dir.open_dir(&name)?, &child, stats)?,
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
pub fn unpack<R: Read>(t: &Tenant, input: R, backup_id: &str, end_check: impl FnOnce(R) -> io::Result<()>) -> anyhow::Result<Stats> {
    let d = Dir::open(&t.data_dir).with_context(|| format!("cannot open the data directory {}", t.data_dir.display()))?;
    d.remove_all(RESTORE_STAGING)?;
    // Root-owned and 0700 while it fills: the tenant cannot tamper with what is staged.
    d.mkdir(RESTORE_STAGING, 0o700)?;
    let result = (|| {
        let staging = d.open_dir(RESTORE_STAGING)?;
        let mut reader = EntryReader::new(input, backup_id);
        let stats = unpack_entries(t, &staging, &mut reader, backup_id)?;
        end_check(reader.into_inner())?;
        anyhow::ensure!(staging.kind(DATABASE)? == Some(Kind::File), "backup {backup_id} holds no database");
        staging.sync_fs()?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = d.remove_all(RESTORE_STAGING);
    }
    result.map_err(|e: anyhow::Error| clarify(e))
}

/// An authentication failure deep inside the copy reads best as the archive's own message.
fn clarify(e: anyhow::Error) -> anyhow::Error {
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            if let Some(a) = archive_error(io) {
                return anyhow::anyhow!("{a}");
            }
        }
    }
    e
}

fn unpack_entries<R: Read>(t: &Tenant, staging: &Dir, reader: &mut EntryReader<R>, backup_id: &str) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let entry = reader.next_entry()?;
        let (path, mode) = match &entry {
            Entry::End => return Ok(stats),
            Entry::Dir { path, mode } | Entry::File { path, mode, .. } => (path.clone(), *mode),
        };
        let top = path.split('/').next().unwrap_or_default();
        anyhow::ensure!(top == DATABASE || ITEMS.contains(&top), "backup {backup_id} is corrupt: unexpected entry {path:?}");
        let (parent_path, name) = match path.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, path.as_str()),
        };
        let parent = match parent_path {
            None => None,
            Some(p) => Some(walk(staging, p).with_context(|| format!("backup {backup_id} is corrupt: {path:?} comes before its directory"))?),
        };
        let parent = parent.as_ref().unwrap_or(staging);
        match entry {
            Entry::Dir { .. } => {
                parent.mkdir(name, 0o700)?;
                parent.open_dir(name)?.set_owner_mode(t.uid, t.gid, mode)?;
            }
            Entry::File { size, .. } => {
                let mut f = parent.create_file(name, 0o600)?;
                let mut content = reader.content(size);
                let mut left = size;
                while left > 0 {
                    let n = content.read(&mut buf)?;
                    anyhow::ensure!(n > 0, "backup {backup_id} is corrupt: {path:?} is cut short");
                    f.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                set_owner_mode(&f, t, mode)?;
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

fn set_owner_mode(f: &std::fs::File, t: &Tenant, mode: u32) -> io::Result<()> {
    std::os::unix::fs::fchown(f, Some(t.uid), Some(t.gid))?;
    // The archived mode without set-id bits; umask does not apply to fchmod.
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
}

/// Replaces the live data with the staged restore. Synapse must be stopped. Each staged item
/// is exchanged atomically with the live one (there is never a moment without a database); the
/// live database's WAL and shared-memory files go first, with the database they belong to. On
/// an error every step already taken is undone. The previous data is then deleted.
pub fn swap_in(t: &Tenant) -> anyhow::Result<()> {
    let d = Dir::open(&t.data_dir).with_context(|| format!("cannot open the data directory {}", t.data_dir.display()))?;
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
    use crate::backup::archive::{DecryptingReader, EncryptingWriter};

    fn python() -> Option<PathBuf> {
        let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/synapse-venv/bin/python"));
        (p.exists() && unsafe { libc::geteuid() } == 0).then_some(p)
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
        let t = Tenant { data_dir: data.clone(), uid: 65534, gid: 65534, python: python.clone() };
        run_sql(&python, &data.join(DATABASE), "CREATE TABLE m (v TEXT)");
        run_sql(&python, &data.join(DATABASE), "INSERT INTO m VALUES ('before')");
        std::fs::create_dir_all(data.join("media_store/local_content/ab")).unwrap();
        std::fs::write(data.join("media_store/local_content/ab/cdef"), b"media bytes").unwrap();
        std::fs::write(data.join("signing.key"), b"ed25519 a_key xyz").unwrap();
        std::fs::write(tmp.path().join("outside-secret"), b"not the tenant's").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside-secret"), data.join("media_store/evil")).unwrap();
        std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(&data).status().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let sealer = crate::crypto::Sealer::load_or_create(&dir.path().join("k")).unwrap();
        let enc = EncryptingWriter::new(Vec::new(), &sealer, "hs_t", "bk_t", 0).unwrap();
        let (enc, stats) = take(&t, enc, None).unwrap();
        let archive = enc.finish().unwrap();
        assert_eq!(stats.files, 3, "database, media and key; the symlink is skipped");
        assert!(!data.join(BACKUP_STAGING).exists(), "staging removed");

        // Lose data, then restore.
        run_sql(&python, &data.join(DATABASE), "DELETE FROM m");
        std::fs::remove_file(data.join("media_store/local_content/ab/cdef")).unwrap();
        std::fs::write(data.join("homeserver.db-wal"), b"stale wal of the old database").unwrap();
        let reader = DecryptingReader::open(archive.as_slice(), &sealer, "hs_t", "bk_t").unwrap();
        unpack(&t, reader, "bk_t", |mut r| {
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
        let err = unpack(&t, reader, "bk_t", |_| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains("backup bk_t is corrupt: authentication failed at chunk 0"), "{err:#}");
        assert_eq!(run_sql(&python, &data.join(DATABASE), "SELECT count(*) FROM m"), "2");
        assert!(!data.join(RESTORE_STAGING).exists());
    }
}
