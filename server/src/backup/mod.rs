//! The backup worker (R4): it decides when backups run, which restores to carry out and which
//! backups have expired; the node agent does the file work (reading the tenant's data,
//! encrypting it under a key sealed by its master key, keeping the archive, verifying and
//! swapping a restore). The control plane never sees a backup's plaintext or its keys.
//!
//! The worker and the reconciler share one lock per homeserver, so a backup, a restore and a
//! reconcile never act on the same homeserver at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use matrixhost_agent_api::{AgentClient, BackupId, HomeserverId};
use matrixhost_api::HomeserverStatus;
use tokio::sync::Semaphore;

use crate::domain::backup_schedule as scheduler;
use crate::domain::backups::{self as records, BackupRef};
use crate::domain::DomainError;
use crate::platform::Platform;
use crate::runtime::Runtime;

/// Backups written at once across all homeservers (each is I/O-bound).
const CONCURRENT_BACKUPS: usize = 2;
/// How long a restore waits for its homeserver to answer again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

enum Job {
    Scheduled(records::PolicyRow),
    OnDemand(String),
}

/// The backup worker.
#[derive(Debug)]
pub struct Backups {
    platform: Arc<Platform>,
    /// `None` with `--no-runtime`: nothing to back up, but retention still applies.
    runtime: Option<Arc<Runtime>>,
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
        self.0.platform.backups_changed();
    }
}

fn ids(homeserver: &str, backup: &str) -> anyhow::Result<(HomeserverId, BackupId)> {
    Ok((HomeserverId::parse(homeserver)?, BackupId::parse(backup)?))
}

impl Backups {
    pub fn new(platform: Arc<Platform>, runtime: Option<Arc<Runtime>>) -> Arc<Backups> {
        // The test clock jumps days at a time; look often so tests do not wait.
        let interval = if platform.clock.is_adjustable() { Duration::from_millis(200) } else { Duration::from_secs(10) };
        Arc::new(Backups { platform, runtime, busy: Mutex::default(), slots: Semaphore::new(CONCURRENT_BACKUPS), interval })
    }

    fn agent(&self) -> Option<&AgentClient> {
        self.platform.agent.as_ref()
    }

    /// Cleans up after a crash, then works until the process ends.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "backup recovery failed");
        }
        loop {
            if let Err(e) = self.tick().await {
                tracing::error!(error = %e, "backup pass failed");
            }
            tokio::select! {
                _ = self.platform.backups_woken() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Nothing runs yet: a `running` row is from a process that died, and so is a partial
    /// archive. Neither is ever counted as a backup.
    async fn recover(&self) -> Result<(), DomainError> {
        let (backups, restores) = records::fail_interrupted(&self.platform.db, self.platform.clock.now()).await?;
        if backups + restores > 0 {
            tracing::warn!(backups, restores, "marked work interrupted by a previous stop as failed");
        }
        if let Some(agent) = self.agent() {
            match agent.remove_incomplete_backups().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(archives = n, "the agent removed incomplete archives left by a previous stop"),
                Err(e) => tracing::warn!(error = %e, "cannot remove incomplete archives"),
            }
        }
        Ok(())
    }

    fn claim(self: &Arc<Self>, homeserver_id: &str) -> Option<Busy> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(homeserver_id.to_owned()).then(|| Busy(self.clone(), homeserver_id.to_owned()))
    }

    async fn tick(self: &Arc<Self>) -> Result<(), DomainError> {
        let now = self.platform.clock.now();
        let db = &self.platform.db;
        if self.runtime.is_some() {
            // Restores first: someone is waiting for them.
            for (id, hs) in records::pending_restores(db).await? {
                if let Some(busy) = self.claim(&hs) {
                    tokio::spawn(self.clone().restore_job(id, hs, busy));
                }
            }
            for (id, hs) in records::pending_backups(db).await? {
                if let Some(busy) = self.claim(&hs) {
                    tokio::spawn(self.clone().backup_job(hs, Job::OnDemand(id), busy));
                }
            }
            let mut attempts: HashMap<String, Vec<scheduler::Attempt>> = HashMap::new();
            for (hs, a) in records::recent_attempts(db, None, now - scheduler::LOOKBACK).await? {
                attempts.entry(hs).or_default().push(a);
            }
            for p in records::policies(db).await? {
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
    async fn expire(&self, now: DateTime<Utc>) -> Result<(), DomainError> {
        for b in records::expired(&self.platform.db, now).await? {
            match delete_backup(&self.platform, &b).await {
                Ok(()) => {
                    tracing::info!(backup_id = %b.id, homeserver_id = %b.homeserver_id, "backup expired and was deleted (R4)")
                }
                Err(e) => {
                    tracing::warn!(backup_id = %b.id, error = %e, "cannot delete an expired backup yet")
                }
            }
        }
        Ok(())
    }

    async fn backup_job(self: Arc<Self>, homeserver_id: String, job: Job, _busy: Busy) {
        let Ok(_slot) = self.slots.acquire().await else {
            return;
        };
        let (Some(runtime), Some(agent)) = (self.runtime.clone(), self.agent().cloned()) else {
            return;
        };
        let lock = runtime.homeserver_lock(&homeserver_id);
        let _held = lock.lock().await;
        let db = &self.platform.db;
        let now = self.platform.clock.now();
        let id = match job {
            Job::Scheduled(policy) => {
                // Checked again under the lock: the homeserver may be going away.
                match records::homeserver_status(db, &homeserver_id).await {
                    Ok(Some((status, _))) if status != "deleting" && status != "provisioning" => {}
                    _ => return,
                }
                match records::insert_running_backup(db, &policy, now).await {
                    Ok(id) => id,
                    Err(e) => return tracing::error!(homeserver_id, error = %e, "cannot record a backup"),
                }
            }
            Job::OnDemand(id) => match records::claim_pending_backup(db, &id, &homeserver_id, now).await {
                Ok(true) => id,
                Ok(false) => return,
                Err(e) => return tracing::error!(backup_id = %id, error = %e, "cannot start a backup"),
            },
        };
        tracing::info!(homeserver_id, backup_id = %id, "backup started");
        let result = match ids(&homeserver_id, &id) {
            Ok((hs, bk)) => agent.take_backup(&hs, &bk, now.timestamp()).await.map_err(|e| e.to_string()),
            Err(e) => Err(crate::runtime::RuntimeError::internal(e).to_string()),
        };
        let finished = self.platform.clock.now();
        let recorded = match result {
            Ok(taken) => {
                tracing::info!(homeserver_id, backup_id = %id, size_bytes = taken.size_bytes, files = taken.files, seconds = format!("{:.2}", taken.seconds), "backup completed");
                records::complete_backup(db, &id, taken.size_bytes, finished).await
            }
            Err(reason) => {
                tracing::warn!(homeserver_id, backup_id = %id, reason = %reason, "backup failed");
                records::fail_backup(db, &id, &reason, finished).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(backup_id = %id, error = %e, "cannot record the backup's outcome");
        }
    }

    async fn restore_job(self: Arc<Self>, restore_id: String, homeserver_id: String, _busy: Busy) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let outcome = self.restore(&runtime, &restore_id, &homeserver_id).await;
        let now = self.platform.clock.now();
        let recorded = match outcome {
            Ok(false) => return,
            Ok(true) => {
                tracing::info!(homeserver_id, restore_id, "restore completed");
                records::finish_restore(&self.platform.db, &restore_id, None, now).await
            }
            Err(reason) => {
                tracing::warn!(homeserver_id, restore_id, reason = %reason, "restore failed");
                records::finish_restore(&self.platform.db, &restore_id, Some(&reason), now).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(restore_id, error = %e, "cannot record the restore's outcome");
        }
    }

    /// Restores a backup into its homeserver. Returns false if the request was no longer
    /// pending. The agent decrypts and verifies the archive to its last chunk into a staging
    /// directory on the volume while the homeserver keeps running; only then is Synapse stopped
    /// and the data swapped in. A bad archive therefore changes nothing. The error is the
    /// platform's own words (it becomes the restore's `error`).
    async fn restore(&self, runtime: &Arc<Runtime>, restore_id: &str, homeserver_id: &str) -> Result<bool, String> {
        let db = &self.platform.db;
        let agent = self.agent().ok_or("this matrixhostd runs no homeservers")?.clone();
        let internal = |e: DomainError| crate::runtime::RuntimeError::internal(e).to_string();
        let lock = runtime.homeserver_lock(homeserver_id);
        let held = lock.lock().await;
        if !records::claim_restore(db, restore_id, self.platform.clock.now()).await.map_err(internal)? {
            return Ok(false);
        }
        let mut tx = db.begin().await.map_err(|e| internal(e.into()))?;
        let restore = records::load_restore(&mut tx, restore_id).await.map_err(internal)?.ok_or("the restore vanished")?;
        drop(tx);
        let backup_id = restore.backup_id.clone();
        tracing::info!(homeserver_id, restore_id, backup_id = %backup_id, "restore started");
        let swapped = async {
            let backup = records::backup_ref(db, &backup_id).await.map_err(internal)?.ok_or(format!("backup {backup_id} no longer exists"))?;
            if backup.status != records::COMPLETED {
                return Err(format!("backup {backup_id} is {}; only a completed backup can be restored", backup.status));
            }
            if backup.homeserver_id != homeserver_id {
                return Err(format!("backup {backup_id} belongs to another homeserver"));
            }
            let (status, _) = records::homeserver_status(db, homeserver_id).await.map_err(internal)?.ok_or("the homeserver no longer exists")?;
            if status == "deleting" || status == "provisioning" {
                return Err(format!("the homeserver is {status}"));
            }
            let (hs, bk) = ids(homeserver_id, &backup_id).map_err(|e| crate::runtime::RuntimeError::internal(e).to_string())?;

            // 1. Verify and unpack beside the live data, which stays in service.
            let started = Instant::now();
            let staged = agent.stage_restore(&hs, &bk).await.map_err(|e| e.to_string())?;
            tracing::info!(
                restore_id,
                files = staged.files,
                plaintext_bytes = staged.plaintext_bytes,
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                "archive verified and unpacked; taking the homeserver offline to swap it in"
            );

            // 2. Offline: stop Synapse, swap the data in.
            let reason = format!("restoring backup {backup_id}");
            records::set_homeserver_status(db, homeserver_id, HomeserverStatus::Updating, Some(&reason), self.platform.clock.now()).await.map_err(internal)?;
            // The homeserver's lock is held: the reconciler starts it again only once it is released.
            agent.stop(&hs, None).await.map_err(|e| e.to_string())?;
            agent.swap_in_restore(&hs).await.map_err(|e| e.to_string())?;
            // Reserved accounts changed since the backup may be missing from the restored
            // database: the reconciler checks them again (R8).
            records::resync_reserved_accounts(db, homeserver_id, &backup_id).await.map_err(internal)?;
            Ok(())
        }
        .await;
        drop(held);
        self.platform.changed();
        swapped?;
        // 3. The reconciler starts Synapse on the restored data; the restore is done when the
        // homeserver answers again.
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            match records::homeserver_status(db, homeserver_id).await.map_err(internal)? {
                Some((s, _)) if s == "running" || s == "blocked" => return Ok(true),
                Some((s, reason)) if s == "failed" => {
                    return Err(format!("the data of backup {backup_id} is in place, but the homeserver did not start: {}", reason.unwrap_or_default()))
                }
                None => return Err("the homeserver was deleted during the restore".into()),
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(format!("the data of backup {backup_id} is in place, but the homeserver did not answer within {RESTART_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Deletes a backup: its archive (by the agent), then its row. Idempotent, so a crash in
/// between is repaired by the next call. Without a runtime there are no archives.
pub async fn delete_backup(platform: &Platform, b: &BackupRef) -> anyhow::Result<()> {
    if let (Some(agent), Some(_)) = (&platform.agent, &b.object_key) {
        let (hs, bk) = ids(&b.homeserver_id, &b.id)?;
        agent.delete_backup(&hs, &bk).await?;
    }
    records::delete_backup_row(&platform.db, &b.id).await?;
    Ok(())
}
