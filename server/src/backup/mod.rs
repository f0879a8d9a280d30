//! Encrypted, scheduled, restorable backups of the homeservers the runtime hosts (R4).
//!
//! * [`archive`]: the streaming encrypted format (XChaCha20-Poly1305 STREAM, a data key per
//!   backup wrapped by the master key).
//! * [`store`]: where archives are kept ([`store::BackupStore`]; a directory today).
//! * [`snapshot`]: taking a homeserver's data (SQLite online backup, media, signing key,
//!   config) and putting it back.
//! * [`scheduler`]: when backups are due.
//! * [`records`]: the `backups` and `restores` rows.
//!
//! [`Backups`] is the worker: it runs next to the runtime's reconciler, takes scheduled and
//! on-demand backups, carries out restores and deletes expired backups. It and the reconciler
//! share one lock per homeserver, so a backup, a restore and a reconcile never act on the same
//! homeserver at once.

pub mod archive;
mod fsat;
pub mod records;
pub mod scheduler;
pub mod snapshot;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use matrixhost_api::{Backup, BackupStatus, HomeserverStatus, Restore};
use tokio::sync::{Notify, Semaphore};

use crate::db::{ts, Tx};
use crate::error::{AppError, AppResult};
use crate::runtime::{tenant_user, Runtime};
use crate::App;

/// Backups written at once across all homeservers (each is I/O-bound).
const CONCURRENT_BACKUPS: usize = 2;
/// How long a restore waits for its homeserver to answer again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs blocking file and crypto work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("blocking task panicked")?
}

enum Job {
    Scheduled(records::PolicyRow),
    OnDemand(String),
}

/// The backup worker.
#[derive(Debug)]
pub struct Backups {
    app: Arc<App>,
    /// `None` with `--no-runtime`: nothing to back up, but retention still applies.
    runtime: Option<Arc<Runtime>>,
    wake: Notify,
    /// Homeservers with a backup or restore job, so one never gets two at once.
    busy: Mutex<HashSet<String>>,
    slots: Semaphore,
    interval: Duration,
}

/// Marks a homeserver busy until dropped.
struct Busy(Arc<Backups>, String);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
        self.0.wake.notify_one();
    }
}

impl Backups {
    pub fn new(app: Arc<App>, runtime: Option<Arc<Runtime>>) -> Arc<Backups> {
        // The test clock jumps days at a time; look often so tests do not wait.
        let interval = if app.clock.is_adjustable() { Duration::from_millis(200) } else { Duration::from_secs(10) };
        Arc::new(Backups { app, runtime, wake: Notify::new(), busy: Mutex::default(), slots: Semaphore::new(CONCURRENT_BACKUPS), interval })
    }

    /// Asks the worker to look now (after an API request).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether backups and restores are carried out (not with `--no-runtime`).
    pub fn hosts_backups(&self) -> bool {
        self.runtime.is_some()
    }

    /// Cleans up after a crash, then works until the process ends.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.recover().await {
            tracing::error!(error = %format!("{e:#}"), "backup recovery failed");
        }
        loop {
            if let Err(e) = self.tick().await {
                tracing::error!(error = %format!("{e:#}"), "backup pass failed");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Nothing runs yet: a `running` row is from a process that died, and so is a partial
    /// archive. Neither is ever counted as a backup.
    async fn recover(&self) -> anyhow::Result<()> {
        let (backups, restores) = records::fail_interrupted(&self.app.db, self.app.clock.now()).await?;
        if backups + restores > 0 {
            tracing::warn!(backups, restores, "marked work interrupted by a previous stop as failed");
        }
        let store = self.app.backup_store.clone();
        let removed = blocking(move || store.remove_incomplete()).await?;
        for name in removed {
            tracing::warn!(object = %name, "removed an incomplete archive left by a previous stop");
        }
        Ok(())
    }

    fn claim(self: &Arc<Self>, homeserver_id: &str) -> Option<Busy> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(homeserver_id.to_owned()).then(|| Busy(self.clone(), homeserver_id.to_owned()))
    }

    async fn tick(self: &Arc<Self>) -> anyhow::Result<()> {
        let now = self.app.clock.now();
        if self.runtime.is_some() {
            // Restores first: someone is waiting for them.
            for (id, hs) in records::pending_restores(&self.app.db).await? {
                if let Some(busy) = self.claim(&hs) {
                    tokio::spawn(self.clone().restore_job(id, hs, busy));
                }
            }
            for (id, hs) in records::pending_backups(&self.app.db).await? {
                if let Some(busy) = self.claim(&hs) {
                    tokio::spawn(self.clone().backup_job(hs, Job::OnDemand(id), busy));
                }
            }
            let mut attempts: HashMap<String, Vec<scheduler::Attempt>> = HashMap::new();
            for (hs, a) in records::recent_attempts(&self.app.db, None, now - scheduler::LOOKBACK).await? {
                attempts.entry(hs).or_default().push(a);
            }
            for p in records::policies(&self.app.db).await? {
                // Only a homeserver whose volume exists has anything to back up.
                if !matches!(p.homeserver_status.as_str(), "running" | "blocked" | "updating" | "failed") {
                    continue;
                }
                let history = attempts.get(&p.homeserver_id).map(Vec::as_slice).unwrap_or_default();
                if scheduler::plan(&p.window_start, p.created_at, history, now).due {
                    if let Some(busy) = self.claim(&p.homeserver_id) {
                        let hs = p.homeserver_id.clone();
                        tokio::spawn(self.clone().backup_job(hs, Job::Scheduled(p), busy));
                    }
                }
            }
        }
        self.expire(now).await
    }

    /// R4: deletes every backup past its `expires_at` (never a running one).
    async fn expire(&self, now: DateTime<Utc>) -> anyhow::Result<()> {
        for b in records::expired(&self.app.db, now).await? {
            delete_backup(&self.app, &b).await?;
            tracing::info!(backup_id = %b.id, homeserver_id = %b.homeserver_id, "backup expired and was deleted (R4)");
        }
        Ok(())
    }

    fn tenant(runtime: &Runtime, homeserver_id: &str) -> anyhow::Result<snapshot::Tenant> {
        let user = tenant_user::lookup(homeserver_id)?.context("the homeserver has no tenant user yet")?;
        anyhow::ensure!(runtime.volumes().is_unlocked(homeserver_id), "the homeserver's encrypted volume is not open");
        Ok(snapshot::Tenant {
            data_dir: runtime.volumes().data_dir(homeserver_id),
            uid: user.uid,
            gid: user.gid,
            python: runtime.synapse_python().to_owned(),
        })
    }

    async fn backup_job(self: Arc<Self>, homeserver_id: String, job: Job, _busy: Busy) {
        let Ok(_slot) = self.slots.acquire().await else { return };
        let runtime = self.runtime.clone().expect("backup jobs run only with the runtime");
        let lock = runtime.homeserver_lock(&homeserver_id);
        let _held = lock.lock().await;
        let db = &self.app.db;
        let now = self.app.clock.now();
        let id = match job {
            Job::Scheduled(policy) => {
                // Checked again under the lock: the homeserver may be going away.
                match records::homeserver_status(db, &homeserver_id).await {
                    Ok(Some((status, _))) if status != "deleting" && status != "provisioning" => {}
                    _ => return,
                }
                match records::insert_running_backup(db, &policy, now).await {
                    Ok(id) => id,
                    Err(e) => return tracing::error!(homeserver_id, error = %format!("{e:#}"), "cannot record a backup"),
                }
            }
            Job::OnDemand(id) => match records::claim_pending_backup(db, &id, &homeserver_id, now).await {
                Ok(true) => id,
                Ok(false) => return,
                Err(e) => return tracing::error!(backup_id = %id, error = %format!("{e:#}"), "cannot start a backup"),
            },
        };
        tracing::info!(homeserver_id, backup_id = %id, "backup started");
        let started = Instant::now();
        let app = self.app.clone();
        let (hs, bk) = (homeserver_id.clone(), id.clone());
        let written = blocking(move || {
            let tenant = Backups::tenant(&runtime, &hs)?;
            let object = app.backup_store.put(&records::object_key(&hs, &bk))?;
            let writer = archive::EncryptingWriter::new(object, &app.sealer, &hs, &bk, now.timestamp())?;
            let (writer, stats) = snapshot::take(&tenant, writer, app.settings.test_backup_delay)?;
            // Complete only once the final chunk is sealed and the archive is durable under its
            // name; anything earlier is dropped, which discards the partial archive.
            let size = writer.finish()?.commit()?;
            Ok((size, stats))
        })
        .await;
        let finished = self.app.clock.now();
        let result = match written {
            Ok((size, stats)) => {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    homeserver_id, backup_id = %id, size_bytes = size, files = stats.files, plaintext_bytes = stats.bytes,
                    database_copy_seconds = format!("{:.2}", stats.copy_seconds), seconds = format!("{secs:.2}"), mb_per_s = format!("{:.1}", stats.bytes as f64 / 1e6 / secs.max(1e-6)),
                    "backup completed"
                );
                records::complete_backup(db, &id, size, finished).await
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(homeserver_id, backup_id = %id, error = %reason, "backup failed");
                records::fail_backup(db, &id, &reason, finished).await
            }
        };
        if let Err(e) = result {
            tracing::error!(backup_id = %id, error = %format!("{e:#}"), "cannot record the backup's outcome");
        }
    }

    async fn restore_job(self: Arc<Self>, restore_id: String, homeserver_id: String, _busy: Busy) {
        let runtime = self.runtime.clone().expect("restore jobs run only with the runtime");
        let outcome = self.restore(&runtime, &restore_id, &homeserver_id).await;
        let now = self.app.clock.now();
        let recorded = match outcome {
            Ok(false) => return,
            Ok(true) => {
                tracing::info!(homeserver_id, restore_id, "restore completed");
                records::finish_restore(&self.app.db, &restore_id, None, now).await
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(homeserver_id, restore_id, error = %reason, "restore failed");
                records::finish_restore(&self.app.db, &restore_id, Some(&reason), now).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(restore_id, error = %format!("{e:#}"), "cannot record the restore's outcome");
        }
    }

    /// Restores a backup into its homeserver. Returns false if the request was no longer
    /// pending. The archive is decrypted and verified to its last chunk into a staging
    /// directory on the volume while the homeserver keeps running; only then is Synapse stopped
    /// and the data swapped in. A bad archive therefore changes nothing.
    async fn restore(&self, runtime: &Arc<Runtime>, restore_id: &str, homeserver_id: &str) -> anyhow::Result<bool> {
        let db = &self.app.db;
        let lock = runtime.homeserver_lock(homeserver_id);
        let held = lock.lock().await;
        if !records::claim_restore(db, restore_id, self.app.clock.now()).await? {
            return Ok(false);
        }
        let mut tx = db.begin().await?;
        let restore = records::load_restore(&mut tx, restore_id).await?.context("the restore vanished")?;
        drop(tx);
        let backup_id = restore.backup_id.clone();
        tracing::info!(homeserver_id, restore_id, backup_id = %backup_id, "restore started");
        let swapped = async {
            let backup = records::backup_ref(db, &backup_id).await?.with_context(|| format!("backup {backup_id} no longer exists"))?;
            anyhow::ensure!(backup.status == records::COMPLETED, "backup {backup_id} is {}; only a completed backup can be restored", backup.status);
            anyhow::ensure!(backup.homeserver_id == homeserver_id, "backup {backup_id} belongs to another homeserver");
            let key = backup.object_key.clone().with_context(|| format!("backup {backup_id} has no archive"))?;
            let (status, _) = records::homeserver_status(db, homeserver_id).await?.context("the homeserver no longer exists")?;
            anyhow::ensure!(status != "deleting" && status != "provisioning", "the homeserver is {status}");

            // 1. Verify and unpack beside the live data, which stays in service.
            let started = Instant::now();
            let (app, rt, hs, bk) = (self.app.clone(), runtime.clone(), homeserver_id.to_owned(), backup_id.clone());
            let (tenant, stats) = blocking(move || {
                let tenant = Backups::tenant(&rt, &hs)?;
                snapshot::clear_staging(&tenant)?;
                let input = app.backup_store.get(&key)?;
                let reader = archive::DecryptingReader::open(input, &app.sealer, &hs, &bk).map_err(|e| match archive::archive_error(&e) {
                    Some(a) => anyhow::anyhow!("{a}"),
                    None => anyhow::Error::new(e).context("cannot read the archive"),
                })?;
                let stats = snapshot::unpack(&tenant, reader, &bk, |mut rest| {
                    // Past the end entry there must be nothing but the authenticated end.
                    let mut one = [0u8; 1];
                    if rest.read(&mut one)? != 0 || !rest.is_finished() {
                        return Err(std::io::Error::other(format!("backup {bk} is corrupt: data after its end")));
                    }
                    Ok(())
                })?;
                Ok((tenant, stats))
            })
            .await?;
            tracing::info!(
                restore_id, files = stats.files, plaintext_bytes = stats.bytes, seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                "archive verified and unpacked; taking the homeserver offline to swap it in"
            );

            // 2. Offline: stop Synapse, swap the data in.
            let reason = format!("restoring backup {backup_id}");
            records::set_homeserver_status(db, homeserver_id, HomeserverStatus::Updating, Some(&reason), self.app.clock.now()).await?;
            runtime.stop_homeserver(homeserver_id).await;
            blocking(move || snapshot::swap_in(&tenant)).await?;
            // Reserved accounts changed since the backup may be missing from the restored
            // database: the reconciler checks them again (R8).
            records::resync_reserved_accounts(db, homeserver_id, &backup_id).await?;
            anyhow::Ok(())
        }
        .await;
        drop(held);
        runtime.wake();
        swapped?;
        // 3. The reconciler starts Synapse on the restored data; the restore is done when the
        // homeserver answers again.
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            match records::homeserver_status(db, homeserver_id).await? {
                Some((s, _)) if s == "running" || s == "blocked" => return Ok(true),
                Some((s, reason)) if s == "failed" => anyhow::bail!(
                    "the data of backup {backup_id} is in place, but the homeserver did not start: {}",
                    reason.unwrap_or_default()
                ),
                None => anyhow::bail!("the homeserver was deleted during the restore"),
                _ => {}
            }
            anyhow::ensure!(Instant::now() < deadline, "the data of backup {backup_id} is in place, but the homeserver did not answer within {RESTART_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Deletes a backup: its archive, then its row. Idempotent, so a crash in between is repaired
/// by the next call.
pub async fn delete_backup(app: &Arc<App>, b: &records::BackupRef) -> anyhow::Result<()> {
    if let Some(key) = b.object_key.clone() {
        let store = app.backup_store.clone();
        blocking(move || store.delete(&key)).await?;
    }
    records::delete_backup_row(&app.db, &b.id).await?;
    Ok(())
}

/// R4: records an on-demand backup of a homeserver of the organization `org_id`.
pub async fn request_backup(tx: &mut Tx<'_>, app: &App, org_id: &str, homeserver_id: &str) -> AppResult<Backup> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM homeservers WHERE id = $1 AND org_id = $2")
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?;
    let status = status.ok_or_else(|| AppError::not_found("homeserver"))?;
    if !matches!(status.as_str(), "running" | "blocked" | "updating" | "failed") {
        return Err(AppError::conflict("not_running", format!("homeserver {homeserver_id} is {status}; it can be backed up once it runs")));
    }
    if records::backup_in_progress(tx, homeserver_id).await? {
        return Err(AppError::conflict("backup_running", "a backup of this homeserver is already running; wait for it to finish"));
    }
    Ok(records::insert_pending_backup(tx, org_id, homeserver_id, app.clock.now()).await?)
}

/// R4: records a restore of `backup_id` into `homeserver_id`, after checking that it can run.
pub async fn request_restore(tx: &mut Tx<'_>, app: &App, org_id: &str, homeserver_id: &str, backup_id: &str, requested_by: &str) -> AppResult<Restore> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM homeservers WHERE id = $1 AND org_id = $2")
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?;
    let status = status.ok_or_else(|| AppError::not_found("homeserver"))?;
    let backup = sqlx::query_scalar::<_, String>("SELECT id FROM backups WHERE id = $1 AND homeserver_id = $2 AND org_id = $3")
        .bind(backup_id)
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?;
    if backup.is_none() {
        return Err(AppError::new(StatusCode::NOT_FOUND, "not_found", format!("backup_id: no backup {backup_id} of this homeserver")).with_field("backup_id"));
    }
    let backup = records::load_backup(tx, backup_id).await?.ok_or_else(|| AppError::not_found("backup"))?;
    if backup.status != BackupStatus::Completed {
        let what = match backup.status {
            BackupStatus::Running => "still being written",
            _ => "failed",
        };
        return Err(AppError::conflict("backup_not_restorable", format!("R4: backup {backup_id} is {what}; only a completed backup can be restored"))
            .with_field("backup_id"));
    }
    if matches!(status.as_str(), "provisioning" | "deleting") {
        return Err(AppError::conflict("not_running", format!("homeserver {homeserver_id} is {status}; it cannot take a restore")));
    }
    if records::restore_in_progress(tx, homeserver_id).await? {
        return Err(AppError::conflict("restore_running", "a restore of this homeserver is already pending or running"));
    }
    Ok(records::insert_restore(tx, org_id, homeserver_id, backup_id, requested_by, app.clock.now()).await?)
}

/// The API's answer when this process hosts no homeservers (the operator CLI records requests
/// for the serving process instead).
pub fn refuse_without_runtime(app: &App) -> AppResult<()> {
    if !app.hosts_homeservers() {
        return Err(AppError::conflict("not_running", "this matrixhostd runs no homeservers (--no-runtime), so it takes no backups"));
    }
    Ok(())
}

// ------------------------------------------------------------------ operator CLI ----------

/// `matrixhostd backup list`: a homeserver's backups, oldest first.
pub async fn operator_list(app: &App, homeserver_id: &str) -> anyhow::Result<Vec<Backup>> {
    let rows = sqlx::query(&format!("SELECT {} FROM backups WHERE homeserver_id = $1 ORDER BY started_at, id", records::BACKUP_COLUMNS))
        .bind(homeserver_id)
        .fetch_all(&app.db)
        .await?;
    rows.iter().map(records::backup_from_row).collect()
}

async fn org_of_homeserver(app: &App, homeserver_id: &str) -> anyhow::Result<String> {
    let org: Option<String> = sqlx::query_scalar("SELECT org_id FROM homeservers WHERE id = $1").bind(homeserver_id).fetch_optional(&app.db).await?;
    org.with_context(|| format!("no homeserver {homeserver_id}"))
}

/// `matrixhostd backup take`: queues an on-demand backup for the serving matrixhostd.
pub async fn operator_take(app: &App, homeserver_id: &str) -> anyhow::Result<Backup> {
    let org = org_of_homeserver(app, homeserver_id).await?;
    let mut tx = app.db.begin().await?;
    let backup = request_backup(&mut tx, app, &org, homeserver_id).await.map_err(|e| anyhow::anyhow!(e.message))?;
    tx.commit().await?;
    Ok(backup)
}

/// `matrixhostd backup restore`: queues a restore for the serving matrixhostd.
pub async fn operator_restore(app: &App, backup_id: &str) -> anyhow::Result<Restore> {
    let homeserver_id: Option<String> = sqlx::query_scalar("SELECT homeserver_id FROM backups WHERE id = $1").bind(backup_id).fetch_optional(&app.db).await?;
    let homeserver_id = homeserver_id.with_context(|| format!("no backup {backup_id}"))?;
    let org = org_of_homeserver(app, &homeserver_id).await.with_context(|| format!("backup {backup_id} belongs to a deleted homeserver"))?;
    let mut tx = app.db.begin().await?;
    let restore = request_restore(&mut tx, app, &org, &homeserver_id, backup_id, "operator").await.map_err(|e| anyhow::anyhow!(e.message))?;
    tx.commit().await?;
    Ok(restore)
}

pub async fn load_backup(app: &App, id: &str) -> anyhow::Result<Option<Backup>> {
    let mut tx = app.db.begin().await?;
    records::load_backup(&mut tx, id).await
}

pub async fn load_restore(app: &App, id: &str) -> anyhow::Result<Option<Restore>> {
    let mut tx = app.db.begin().await?;
    records::load_restore(&mut tx, id).await
}

/// Timestamps in CLI output.
pub fn show_time(t: Option<DateTime<Utc>>) -> String {
    t.map(ts).unwrap_or_else(|| "-".into())
}
