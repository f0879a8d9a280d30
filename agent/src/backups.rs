//! The file work of backups and restores (R4): the control plane decides when; the agent reads
//! the tenant's data (as `snapshot.rs` describes), encrypts it under a fresh data key sealed by
//! the master key (`archive.rs`), and keeps it in the store (`store.rs`), which only it can read.

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use matrixhost_agent_api::{BackupId, BackupTaken, ErrorCode, HomeserverId, RestoreStaged};
use matrixhost_seal::Sealer;

use crate::archive::{self, DecryptingReader, EncryptingWriter};
use crate::failure::{Code, Failure, Outcome};
use crate::snapshot::{self, Budget, SnapshotError};
use crate::store::BackupStore;
use crate::supervisor::{Supervisor, Tenant};
use crate::tenant_db::TenantJobs;

/// The archive's name in the store.
pub fn object_name(homeserver: &HomeserverId, backup: &BackupId) -> String {
    format!("{homeserver}/{backup}")
}

fn snapshot_tenant(t: &Tenant) -> snapshot::Tenant {
    snapshot::Tenant { data_dir: t.data_dir.clone(), uid: t.uid, gid: t.gid }
}

fn from_snapshot(e: SnapshotError, otherwise: ErrorCode) -> Failure {
    let code = match &e {
        SnapshotError::NoDatabase | SnapshotError::DatabaseCopy(_) => ErrorCode::DatabaseCopyFailed,
        SnapshotError::TooLarge { .. } => ErrorCode::BackupTooLarge,
        SnapshotError::Cancelled => ErrorCode::Cancelled,
        SnapshotError::Corrupt(_) => ErrorCode::BackupCorrupt,
        SnapshotError::Other(_) => otherwise,
    };
    Failure::new(code, e)
}

pub struct Backups<'a> {
    pub supervisor: &'a Supervisor,
    pub sealer: &'a Sealer,
    pub store: &'a dyn BackupStore,
    /// Test hook: a pause inside every backup, once its database is in the archive.
    pub pause: Option<Duration>,
}

impl Backups<'_> {
    /// Writes the archive; it becomes visible in the store only once complete and durable.
    /// Blocking.
    pub fn take(&self, t: &Tenant, backup: &BackupId, created_at: i64, volume_bytes: u64, cancel: &AtomicBool) -> Outcome<BackupTaken> {
        let started = Instant::now();
        let object = self.store.put(&object_name(&t.id, backup)).code(ErrorCode::BackupFailed)?;
        let writer = EncryptingWriter::new(object, self.sealer, t.id.as_str(), backup.as_str(), created_at).code(ErrorCode::BackupFailed)?;
        let jobs = TenantJobs { supervisor: self.supervisor, tenant: t, timeout: Duration::from_secs(3600), max_output: 64 * 1024 };
        let budget = Budget { max_bytes: volume_bytes, cancel };
        let (writer, stats) = snapshot::take(&snapshot_tenant(t), &jobs, writer, &budget, self.pause).map_err(|e| from_snapshot(e, ErrorCode::BackupFailed))?;
        // Complete only once the final chunk is sealed and the archive is durable under its name;
        // anything earlier is dropped, which discards the partial archive.
        let size = writer.finish().code(ErrorCode::BackupFailed)?.commit().code(ErrorCode::BackupFailed)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            homeserver = %t.id, backup = %backup, size_bytes = size, files = stats.files, plaintext_bytes = stats.bytes,
            database_copy_seconds = format!("{:.2}", stats.copy_seconds), seconds = format!("{seconds:.2}"),
            "backup written"
        );
        Ok(BackupTaken { size_bytes: size, files: stats.files, plaintext_bytes: stats.bytes, seconds })
    }

    /// Decrypts and verifies the archive to its authenticated end, unpacking it into a staging
    /// directory on the volume; the live data is untouched. Blocking.
    pub fn stage(&self, t: &Tenant, backup: &BackupId, cancel: &AtomicBool) -> Outcome<RestoreStaged> {
        let st = snapshot_tenant(t);
        snapshot::clear_staging(&st).code(ErrorCode::RestoreFailed)?;
        let name = object_name(&t.id, backup);
        if self.store.size(&name).code(ErrorCode::RestoreFailed)?.is_none() {
            return Err(Failure::new(ErrorCode::BackupMissing, anyhow::anyhow!("no archive {name} in the store")));
        }
        let input = self.store.get(&name).code(ErrorCode::BackupMissing)?;
        let reader = DecryptingReader::open(input, self.sealer, t.id.as_str(), backup.as_str()).map_err(|e| match archive::archive_error(&e) {
            Some(_) => Failure::new(ErrorCode::BackupCorrupt, e),
            None => Failure::new(ErrorCode::RestoreFailed, e),
        })?;
        let id = backup.to_string();
        let stats = snapshot::unpack(&st, reader, backup.as_str(), cancel, |mut rest| {
            // Past the end entry there must be nothing but the authenticated end.
            let mut one = [0u8; 1];
            if rest.read(&mut one)? != 0 || !rest.is_finished() {
                return Err(std::io::Error::other(format!("backup {id} is corrupt: data after its end")));
            }
            Ok(())
        })
        .map_err(|e| from_snapshot(e, ErrorCode::RestoreFailed))?;
        Ok(RestoreStaged { files: stats.files, plaintext_bytes: stats.bytes })
    }

    /// Swaps the staged data in. The homeserver must be stopped. Blocking.
    pub fn swap_in(&self, t: &Tenant) -> Outcome<()> {
        snapshot::swap_in(&snapshot_tenant(t)).code(ErrorCode::RestoreFailed)
    }
}
