//! What each request does. Work on one homeserver is serialised (a lock per homeserver);
//! reads (status, usage, consents, lists) never wait behind long work such as a backup.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrixhost_agent_api::*;

use crate::backups::{object_name, Backups};
use crate::failure::{Code, Failure, Outcome};
use crate::keys::Keys;
use crate::store::{BackupStore, DirStore};
use crate::supervisor::{Supervisor, Tenant};
use crate::tenant_db::{self, TenantJobs};
use crate::volume::{self, VolumeManager, GIB};
use crate::{tenant, AgentSettings};

#[derive(Debug)]
pub struct Agent {
    pub layout: StateLayout,
    keys: Keys,
    volumes: Arc<VolumeManager>,
    pub supervisor: Arc<Supervisor>,
    store: DirStore,
    locks: Mutex<HashMap<HomeserverId, Arc<tokio::sync::Mutex<()>>>>,
    info: AgentInfo,
    backup_pause: Option<Duration>,
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Outcome<T> + Send + 'static) -> Outcome<T> {
    tokio::task::spawn_blocking(f).await.code(ErrorCode::Internal)?
}

impl Agent {
    pub fn new(settings: &AgentSettings, keys: Keys, volumes: VolumeManager, supervisor: Supervisor, store: DirStore) -> Agent {
        let info = AgentInfo {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            cgroups: supervisor.cgroups.version().as_str().into(),
            sandbox: supervisor.sandbox.kind.as_str().into(),
            pids_max: supervisor.pids_max,
        };
        Agent {
            layout: settings.layout.clone(),
            keys,
            volumes: Arc::new(volumes),
            supervisor: Arc::new(supervisor),
            store,
            locks: Mutex::default(),
            info,
            backup_pause: settings.backup_pause,
        }
    }

    fn lock_of(&self, id: &HomeserverId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.clone()).or_default().clone()
    }

    /// Answers one request. `cancel` is set when the caller went away.
    pub async fn handle(self: &Arc<Self>, request: Request, cancel: Arc<AtomicBool>) -> Reply {
        let op = request.op();
        let homeserver = request.homeserver().cloned();
        let exclusive = !matches!(request, Request::Hello | Request::Status { .. } | Request::List | Request::Usage { .. } | Request::Consents { .. });
        let lock = match (&homeserver, exclusive) {
            (Some(id), true) => Some(self.lock_of(id)),
            _ => None,
        };
        let _held = match &lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        self.dispatch(request, cancel).await.map_err(|f| f.report(op, homeserver.as_ref().map(|h| h as &dyn std::fmt::Display)))
    }

    async fn dispatch(self: &Arc<Self>, request: Request, cancel: Arc<AtomicBool>) -> Outcome<Response> {
        match request {
            Request::Hello => Ok(Response::Hello(self.info.clone())),
            Request::Ensure { homeserver, volume_size_gb } => self.ensure(homeserver, volume_size_gb).await.map(Response::Ensured),
            Request::Start { homeserver, spec, limits, attempt } => {
                let t = self.tenant(&homeserver).await?;
                self.supervisor.start(t, *spec, limits, attempt).await.map(Response::Started)
            }
            Request::Stop { homeserver, diagnose } => {
                let Some(user) = self.user(&homeserver).await? else {
                    return Ok(Response::Stopped);
                };
                self.supervisor.stop(&homeserver, user.uid, diagnose).await.map(|()| Response::Stopped)
            }
            Request::Status { homeserver } => self.status(homeserver).await.map(Response::Status),
            Request::Destroy { homeserver } => self.destroy(homeserver).await.map(|()| Response::Destroyed),
            Request::List => self.list().await.map(|homeservers| Response::List { homeservers }),
            Request::Usage { homeserver } => {
                let t = self.tenant(&homeserver).await?;
                let this = self.clone();
                blocking(move || {
                    let jobs = TenantJobs { supervisor: &this.supervisor, tenant: &t, timeout: Duration::from_secs(60), max_output: 64 };
                    tenant_db::monthly_active_users(&jobs).code(ErrorCode::DatabaseReadFailed)
                })
                .await
                .map(|monthly_active_users| Response::Usage(TenantUsage { monthly_active_users }))
            }
            Request::Consents { homeserver } => {
                let t = self.tenant(&homeserver).await?;
                let this = self.clone();
                blocking(move || {
                    let jobs = TenantJobs { supervisor: &this.supervisor, tenant: &t, timeout: Duration::from_secs(60), max_output: 2 << 20 };
                    tenant_db::consents(&jobs).code(ErrorCode::DatabaseReadFailed)
                })
                .await
                .map(|consents| Response::Consents { consents })
            }
            Request::TakeBackup { homeserver, backup, created_at } => {
                let t = self.tenant(&homeserver).await?;
                let this = self.clone();
                blocking(move || {
                    let volume_bytes = this.volumes.usage(&t.id).code(ErrorCode::VolumeOpenFailed)?.size_bytes;
                    this.backups().take(&t, &backup, created_at, volume_bytes, &cancel)
                })
                .await
                .map(Response::BackupTaken)
            }
            Request::StageRestore { homeserver, backup } => {
                let t = self.tenant(&homeserver).await?;
                let this = self.clone();
                blocking(move || this.backups().stage(&t, &backup, &cancel)).await.map(Response::RestoreStaged)
            }
            Request::SwapInRestore { homeserver } => {
                if self.supervisor.running(&homeserver).code(ErrorCode::Internal)? {
                    return Err(Failure::new(ErrorCode::NotStopped, anyhow::anyhow!("the homeserver runs")));
                }
                let t = self.tenant(&homeserver).await?;
                let this = self.clone();
                blocking(move || this.backups().swap_in(&t)).await.map(|()| Response::RestoreSwapped)
            }
            Request::DeleteBackup { homeserver, backup } => {
                let this = self.clone();
                blocking(move || this.store.delete(&object_name(&homeserver, &backup)).code(ErrorCode::BackupFailed))
                    .await
                    .map(|existed| Response::BackupDeleted { existed })
            }
            Request::RemoveIncompleteBackups => {
                let this = self.clone();
                let removed = blocking(move || this.store.remove_incomplete().code(ErrorCode::BackupFailed)).await?;
                for name in &removed {
                    tracing::warn!(object = %name, "removed an incomplete archive left by an interrupted backup");
                }
                Ok(Response::IncompleteBackupsRemoved { count: removed.len() as u32 })
            }
        }
    }

    fn backups(&self) -> Backups<'_> {
        Backups { supervisor: &self.supervisor, sealer: self.keys.sealer(), store: &self.store, pause: self.backup_pause }
    }

    async fn user(&self, id: &HomeserverId) -> Outcome<Option<tenant::TenantUser>> {
        let id = id.clone();
        blocking(move || tenant::lookup(&id).code(ErrorCode::TenantUserFailed)).await
    }

    /// The homeserver's tenant, with its volume open (after `Ensure` made them).
    async fn tenant(self: &Arc<Self>, id: &HomeserverId) -> Outcome<Tenant> {
        let this = self.clone();
        let id = id.clone();
        blocking(move || {
            let user =
                tenant::lookup(&id).code(ErrorCode::TenantUserFailed)?.ok_or_else(|| Failure::new(ErrorCode::NotFound, anyhow::anyhow!("no tenant user")))?;
            if !this.volumes.image_path(&id).exists() {
                return Err(Failure::new(ErrorCode::NotFound, anyhow::anyhow!("no volume")));
            }
            let data_dir = if this.volumes.is_unlocked(&id) {
                this.volumes.data_dir(&id)
            } else {
                let key = this.keys.volume_key(&id, false).code(ErrorCode::VolumeOpenFailed)?;
                open_volume(&this.volumes, &id, &key)?
            };
            Ok(Tenant { id, uid: user.uid, gid: user.gid, data_dir })
        })
        .await
    }

    /// R2/R3: the tenant user and its encrypted volume, unlocked, at least `size_gb`.
    async fn ensure(self: &Arc<Self>, id: HomeserverId, size_gb: u32) -> Outcome<Ensured> {
        let this = self.clone();
        let hs = id.clone();
        let (user, created, grow_offline) = blocking(move || {
            let user = tenant::ensure(&hs).code(ErrorCode::TenantUserFailed)?;
            let image = this.volumes.image_path(&hs);
            let created = !image.exists();
            if created {
                let key = this.keys.volume_key(&hs, true).code(ErrorCode::VolumeCreateFailed)?;
                this.volumes.create(&hs, size_gb, &key, user.uid, user.gid).code(ErrorCode::VolumeCreateFailed)?;
            }
            let current = std::fs::metadata(&image).code(ErrorCode::VolumeOpenFailed)?.len();
            let grow = u64::from(size_gb) * GIB > current;
            Ok((user, created, grow && !volume::can_grow_online()))
        })
        .await?;
        if grow_offline {
            // Without CAP_SYS_RESOURCE ext4 grows only unmounted: stop the homeserver first.
            self.supervisor.stop(&id, user.uid, None).await?;
        }
        let this = self.clone();
        blocking(move || {
            let key = this.keys.volume_key(&id, false).code(ErrorCode::VolumeOpenFailed)?;
            let image = this.volumes.image_path(&id);
            let grow = u64::from(size_gb) * GIB > std::fs::metadata(&image).code(ErrorCode::VolumeOpenFailed)?.len();
            if grow && !volume::can_grow_online() {
                this.volumes.close(&id).code(ErrorCode::VolumeGrowFailed)?;
                this.volumes.grow(&id, size_gb).code(ErrorCode::VolumeGrowFailed)?;
            }
            open_volume(&this.volumes, &id, &key)?;
            if grow && volume::can_grow_online() {
                this.volumes.grow(&id, size_gb).code(ErrorCode::VolumeGrowFailed)?;
            }
            if grow {
                tracing::info!(homeserver = %id, size_gb, "volume grown");
            }
            let usage = this.volumes.balance_reserve(&id).code(ErrorCode::VolumeOpenFailed)?;
            Ok(Ensured { tenant_uid: user.uid, created, grown: grow, volume: usage })
        })
        .await
    }

    async fn status(self: &Arc<Self>, id: HomeserverId) -> Outcome<HomeserverState> {
        let this = self.clone();
        blocking(move || {
            let p = this.supervisor.state(&id).code(ErrorCode::Internal)?;
            let volume = this.volumes.is_unlocked(&id).then(|| this.volumes.usage(&id).ok()).flatten();
            Ok(HomeserverState {
                running: p.running,
                fingerprint: p.fingerprint,
                oom_kills: p.oom_kills,
                last_exit: p.last_exit,
                volume,
            })
        })
        .await
    }

    /// Stops the homeserver, then removes its cgroup, files, volume, key and user. Idempotent.
    async fn destroy(self: &Arc<Self>, id: HomeserverId) -> Outcome<()> {
        if let Some(user) = self.user(&id).await? {
            self.supervisor.stop(&id, user.uid, None).await?;
        }
        let this = self.clone();
        blocking(move || {
            this.supervisor.forget(&id).code(ErrorCode::DestroyFailed)?;
            this.volumes.destroy(&id).code(ErrorCode::DestroyFailed)?;
            this.keys.forget_volume_key(&id).code(ErrorCode::DestroyFailed)?;
            tenant::remove(&id).code(ErrorCode::DestroyFailed)?;
            tracing::info!(homeserver = %id, "homeserver destroyed: process, cgroup, volume, key, files and user are gone");
            Ok(())
        })
        .await
    }

    async fn list(self: &Arc<Self>) -> Outcome<Vec<HomeserverId>> {
        let this = self.clone();
        blocking(move || {
            let mut ids = BTreeSet::new();
            ids.extend(this.volumes.list().code(ErrorCode::Internal)?);
            ids.extend(this.keys.list().code(ErrorCode::Internal)?);
            ids.extend(this.supervisor.known().code(ErrorCode::Internal)?);
            Ok(ids.into_iter().collect())
        })
        .await
    }
}

fn open_volume(volumes: &VolumeManager, id: &HomeserverId, key: &volume::VolumeKey) -> Outcome<std::path::PathBuf> {
    volumes.open(id, key).map_err(|e| {
        let code = if format!("{e:#}").contains("wrong key") { ErrorCode::VolumeKeyMismatch } else { ErrorCode::VolumeOpenFailed };
        Failure::new(code, e)
    })
}
