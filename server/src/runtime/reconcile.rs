//! One reconcile pass: for every homeserver, converge or delete; then clean up orphans.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use matrixhost_api::HomeserverStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::matrix_admin::MatrixAdmin;
use super::process::{self, Running};
use super::store::{self, RuntimeRow, Target};
use super::synapse::{self, SynapseSecrets, SynapseSpec};
use super::volume::{self, VolumeKey};
use super::{privacy_notice, tenant_user, Runtime};

/// The processor named in every privacy notice (R19).
const PROCESSOR: &str = "matrixhost";
/// The service account the control plane uses for Synapse's admin API.
const SERVICE_LOCALPART: &str = "matrixhost-service";
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Server-level usage of a homeserver (R23): counts and bytes, never contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    pub monthly_active_users: u64,
    pub registered_users: u64,
    pub volume_bytes_used: u64,
}

#[derive(Serialize, Deserialize)]
struct SealedSecrets {
    registration_shared_secret: String,
    macaroon_secret_key: String,
    form_secret: String,
}

fn volume_context(id: &str) -> String {
    format!("volume-key:{id}")
}
fn secrets_context(id: &str) -> String {
    format!("synapse-secrets:{id}")
}
fn admin_token_context(id: &str) -> String {
    format!("service-token:{id}")
}

/// Runs blocking volume and user work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("blocking task panicked")?
}

impl Runtime {
    pub(super) async fn pass(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for (id, org_id) in store::homeserver_ids(&self.app.db).await? {
            let this = self.clone();
            tasks.spawn(async move {
                // A backup or restore holds the homeserver: leave it to the next pass. The target
                // is read under the lock, so it reflects what a restore just changed.
                let lock = this.homeserver_lock(&id);
                let Ok(_guard) = lock.try_lock() else {
                    tracing::debug!(homeserver_id = %id, "busy with a backup or restore; next pass");
                    return Ok(());
                };
                let now = this.app.clock.now();
                let Some(target) = store::target(&this.app.db, &org_id, &id, now, &this.app.settings.catalog).await? else { return Ok(()) };
                this.reconcile_one(target).await;
                anyhow::Ok(())
            });
        }
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.collect_orphans().await
    }

    async fn reconcile_one(self: Arc<Self>, target: Target) {
        let id = target.homeserver.id.clone();
        let result = if target.homeserver.status == HomeserverStatus::Deleting {
            self.delete(&id).await
        } else {
            self.converge(&target).await
        };
        match result {
            Ok(()) if target.homeserver.status == HomeserverStatus::Deleting => {
                if let Err(e) = store::forget_homeserver(&self.app.db, &id).await {
                    tracing::error!(homeserver_id = %id, error = %format!("{e:#}"), "could not forget deleted homeserver");
                } else {
                    tracing::info!(homeserver_id = %id, "homeserver deleted: process, volume, key, user and port are gone");
                }
            }
            Ok(()) => {}
            Err(err) => {
                let reason = format!("{err:#}");
                tracing::error!(homeserver_id = %id, error = %reason, "homeserver failed");
                let _ = store::set_status(&self.app.db, &id, HomeserverStatus::Failed, Some(&reason), None, self.app.clock.now(), None).await;
            }
        }
    }

    /// Creates the runtime record: a port, a random volume key and Synapse secrets, sealed.
    async fn provision_record(&self, target: &Target) -> anyhow::Result<RuntimeRow> {
        let id = &target.homeserver.id;
        let key = VolumeKey::generate();
        let secrets = SynapseSecrets::generate();
        let sealed_secrets = SealedSecrets {
            registration_shared_secret: secrets.registration_shared_secret.clone(),
            macaroon_secret_key: secrets.macaroon_secret_key.clone(),
            form_secret: secrets.form_secret.clone(),
        };
        let mut row = RuntimeRow {
            port: 0,
            volume_key_sealed: self.app.sealer.seal(key.as_bytes(), &volume_context(id))?,
            secrets_sealed: self.app.sealer.seal(&serde_json::to_vec(&sealed_secrets)?, &secrets_context(id))?,
            admin_token_sealed: None,
            volume_size_gb: target.homeserver.volume.size_gb.get(),
            applied_config_hash: None,
        };
        row.port = store::insert_runtime_row(&self.app.db, id, self.settings.port_range, &row, self.app.clock.now()).await?;
        Ok(row)
    }

    fn secrets(&self, id: &str, row: &RuntimeRow) -> anyhow::Result<SynapseSecrets> {
        let plain = self.app.sealer.open(&row.secrets_sealed, &secrets_context(id))?;
        let s: SealedSecrets = serde_json::from_slice(&plain)?;
        Ok(SynapseSecrets {
            registration_shared_secret: s.registration_shared_secret,
            macaroon_secret_key: s.macaroon_secret_key,
            form_secret: s.form_secret,
        })
    }

    /// R2/R3: the tenant's user and its encrypted volume, unlocked with its key (checked on
    /// every pass: `open` is idempotent and refuses a wrong key), at the wanted size.
    async fn ensure_volume(&self, id: &str, row: &RuntimeRow, size_gb: u32) -> anyhow::Result<(PathBuf, tenant_user::TenantUser)> {
        let key = VolumeKey::from_bytes(&self.app.sealer.open(&row.volume_key_sealed, &volume_context(id))?)?;
        let user = { let id = id.to_owned(); blocking(move || tenant_user::ensure(&id)).await? };
        let grow = size_gb > row.volume_size_gb;
        if grow && !volume::can_grow_online() {
            // Without CAP_SYS_RESOURCE ext4 only grows unmounted: stop the homeserver first.
            self.stop_process(id).await;
        }
        let volumes = self.volumes.clone();
        let (id_owned, uid, gid, current) = (id.to_owned(), user.uid, user.gid, row.volume_size_gb);
        let data_dir = blocking(move || {
            if !volumes.image_path(&id_owned).exists() {
                volumes.create(&id_owned, current, &key, uid, gid)?;
            }
            if grow && !volume::can_grow_online() {
                volumes.close(&id_owned)?;
            }
            let dir = volumes.open(&id_owned, &key)?;
            if grow && volume::can_grow_online() {
                volumes.grow(&id_owned, size_gb)?;
            } else if grow {
                volumes.close(&id_owned)?;
                volumes.grow(&id_owned, size_gb)?;
                volumes.open(&id_owned, &key)?;
            }
            Ok(dir)
        })
        .await?;
        if grow {
            store::set_volume_size(&self.app.db, id, size_gb).await?;
            tracing::info!(homeserver_id = %id, size_gb, "volume grown");
        }
        Ok((data_dir, user))
    }

    /// Stops the homeserver's process, if one runs.
    pub(super) async fn stop_process(&self, id: &str) {
        let config_path = self.volumes.data_dir(id).join("homeserver.yaml");
        let known = self.processes.lock().await.0.remove(id);
        let pids = known.map(|r| vec![r.pid]).unwrap_or_else(|| process::find(&config_path));
        for pid in pids {
            process::stop(pid, &config_path, STOP_GRACE).await;
        }
    }

    fn spec(&self, target: &Target, port: u16, data_dir: PathBuf, notice_version: String) -> SynapseSpec {
        let hs = &target.homeserver;
        let mut reserved_emails: Vec<String> = target.reserved.iter().map(|r| r.email.clone()).collect();
        // The service account holds one extra reserved slot, so the customer's cap is unchanged.
        reserved_emails.push(service_email(hs.server_name.as_str()));
        SynapseSpec {
            server_name: hs.server_name.to_string(),
            port,
            data_dir,
            federation_enabled: hs.federation_enabled,
            registration: hs.registration,
            allowed_email_domains: hs.allowed_email_domains.iter().map(|d| d.to_string()).collect(),
            guest_access: hs.guest_access,
            encryption_by_default: hs.encryption_by_default,
            mau_cap: target.mau_cap + 1,
            mau_trial_days: self.settings.mau_trial_days,
            reserved_emails,
            blocked: target.blocked.clone(),
            privacy_notice_version: notice_version,
            public_base_url: format!("http://127.0.0.1:{port}/"),
            admin_contact: Some(format!("mailto:{}", hs.data_controller.admin_email)),
        }
    }

    async fn converge(self: &Arc<Self>, target: &Target) -> anyhow::Result<()> {
        let hs = &target.homeserver;
        let id = hs.id.as_str();
        let row = match store::runtime_row(&self.app.db, id).await? {
            Some(row) => row,
            None => self.provision_record(target).await?,
        };
        let (data_dir, user) = self.ensure_volume(id, &row, hs.volume.size_gb.get()).await?;
        let notice = privacy_notice::render(&privacy_notice::NoticeInput {
            entity_name: hs.data_controller.entity_name.as_str(),
            admin_email: hs.data_controller.admin_email.as_str(),
            server_name: hs.server_name.as_str(),
            processor_name: PROCESSOR,
        });
        let notice_version = privacy_notice::version_of(&notice);
        let spec = self.spec(target, row.port, data_dir.clone(), notice_version.clone());
        let secrets = self.secrets(id, &row)?;
        let config_text = synapse::render_config(&spec, &secrets);
        let hash = hex::encode(Sha256::digest(format!("{config_text}\n{notice}").as_bytes()));
        let config_path = data_dir.join("homeserver.yaml");

        let running = self.running(id, &config_path, &row).await;
        let restart_needed = running.as_ref().is_none_or(|r| r.config_hash != hash);
        if restart_needed {
            if let Some(r) = &running {
                store::set_status(&self.app.db, id, HomeserverStatus::Updating, Some("applying new settings"), None, self.app.clock.now(), None).await?;
                process::stop(r.pid, &r.config_path, STOP_GRACE).await;
            }
            self.start(id, &spec, &secrets, &notice, &user, &hash).await?;
        }
        let admin = MatrixAdmin::new(format!("http://127.0.0.1:{}", row.port), secrets.registration_shared_secret.clone());
        let token = self.service_token(id, hs.server_name.as_str(), &admin, &row).await?;
        let created = self.sync_accounts(target, &admin, &token).await?;
        if created {
            // Synapse reads reserved threepids at start-up: restart so new accounts hold their slot (R8).
            let r = self.running(id, &config_path, &row).await.context("synapse vanished after account sync")?;
            process::stop(r.pid, &r.config_path, STOP_GRACE).await;
            self.start(id, &spec, &secrets, &notice, &user, &hash).await?;
        }
        self.record_consents(id, &data_dir).await;
        let client_url = format!("http://127.0.0.1:{}", row.port);
        let notice_url = format!("{client_url}/_matrix/consent");
        let (status, reason) = match &target.blocked {
            Some(reason) => (HomeserverStatus::Blocked, Some(reason.as_str())),
            None => (HomeserverStatus::Running, None),
        };
        if hs.status != status || hs.client_url.as_deref() != Some(client_url.as_str()) || hs.status_reason.as_deref() != reason {
            store::set_status(&self.app.db, id, status, reason, Some((&client_url, &notice_url)), self.app.clock.now(), Some(hs.version)).await?;
            tracing::info!(homeserver_id = %id, status = status.as_str(), "homeserver converged");
        }
        Ok(())
    }

    /// The process we know, or one left running by an earlier `matrixhostd` (re-adopted).
    async fn running(&self, id: &str, config_path: &std::path::Path, row: &RuntimeRow) -> Option<Running> {
        let mut procs = self.processes.lock().await;
        if let Some(r) = procs.0.get(id) {
            if process::is_synapse(r.pid, &r.config_path) {
                return Some(r.clone());
            }
            procs.0.remove(id);
        }
        let mut found = process::find(config_path);
        let pid = *found.first()?;
        for duplicate in found.drain(1..) {
            tracing::warn!(homeserver_id = %id, pid = duplicate, "stopping a duplicate synapse");
            process::stop(duplicate, config_path, STOP_GRACE).await;
        }
        let adopted = Running { pid, config_hash: row.applied_config_hash.clone().unwrap_or_default(), config_path: config_path.to_owned() };
        tracing::info!(homeserver_id = %id, pid, "re-adopted a running homeserver");
        procs.0.insert(id.to_owned(), adopted.clone());
        Some(adopted)
    }

    async fn start(
        &self,
        id: &str,
        spec: &SynapseSpec,
        secrets: &SynapseSecrets,
        notice: &str,
        user: &tenant_user::TenantUser,
        hash: &str,
    ) -> anyhow::Result<()> {
        let python = self.settings.synapse_python.clone();
        let config_path = {
            let (spec, secrets, notice) = (spec.clone(), secrets.clone(), notice.to_owned());
            let (uid, gid) = (user.uid, user.gid);
            blocking(move || {
                let path = synapse::write_files(&spec, &secrets, &notice, &python)?;
                chown_tree(&spec.data_dir, uid, gid)?;
                Ok(path)
            })
            .await?
        };
        let child = synapse::spawn(&self.settings.synapse_python, &config_path, &spec.data_dir, Some((user.uid, user.gid)))?;
        let pid = child.id().context("synapse exited at once")? as i32;
        process::reap(child, id.to_owned());
        synapse::wait_ready(spec.port, self.settings.start_timeout, &spec.data_dir).await?;
        self.processes.lock().await.0.insert(id.to_owned(), Running { pid, config_hash: hash.to_owned(), config_path });
        store::set_runtime_field(&self.app.db, id, "applied_config_hash", Some(hash.to_owned()), self.app.clock.now()).await?;
        tracing::info!(homeserver_id = %id, pid, port = spec.port, "synapse is answering");
        Ok(())
    }

    /// The control plane's admin account on the homeserver, registered once with the shared secret.
    async fn service_token(&self, id: &str, server_name: &str, admin: &MatrixAdmin, row: &RuntimeRow) -> anyhow::Result<String> {
        if let Some(sealed) = store::runtime_row(&self.app.db, id).await?.and_then(|r| r.admin_token_sealed).or(row.admin_token_sealed.clone()) {
            return Ok(String::from_utf8(self.app.sealer.open(&sealed, &admin_token_context(id))?)?);
        }
        let password = hex::encode(rand::random::<[u8; 32]>());
        let token = admin.register(SERVICE_LOCALPART, &password, true, Some("matrixhost service")).await?;
        let user_id = format!("@{SERVICE_LOCALPART}:{server_name}");
        admin.upsert_user(&token, &user_id, &service_email(server_name), Some("matrixhost service"), true, None).await?;
        let sealed = self.app.sealer.seal(token.as_bytes(), &admin_token_context(id))?;
        store::set_runtime_field(&self.app.db, id, "admin_token_sealed", Some(sealed), self.app.clock.now()).await?;
        Ok(token)
    }

    /// Reserved users with a localpart get a real account with their email bound. Returns
    /// whether an account was created (reserved slots then need a restart).
    async fn sync_accounts(&self, target: &Target, admin: &MatrixAdmin, token: &str) -> anyhow::Result<bool> {
        let mut created = false;
        for r in &target.reserved {
            let Some(localpart) = &r.localpart else { continue };
            if r.synced_version == Some(r.version) {
                continue;
            }
            let user_id = format!("@{localpart}:{}", target.homeserver.server_name);
            let password = match &r.password_sealed {
                Some(sealed) => Some(String::from_utf8(self.app.sealer.open(sealed, &r.id)?)?),
                None if r.synced_version.is_none() => Some(hex::encode(rand::random::<[u8; 24]>())),
                None => None,
            };
            let result = admin.upsert_user(token, &user_id, &r.email, r.display_name.as_deref(), r.admin, password.as_deref()).await;
            match result {
                Ok(()) => {
                    created |= r.synced_version.is_none();
                    store::mark_account_synced(&self.app.db, &r.id, r.version, None).await?;
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::warn!(reserved_user_id = %r.id, error = %message, "could not sync the account");
                    store::mark_account_synced(&self.app.db, &r.id, r.version, Some(&message)).await?;
                }
            }
        }
        Ok(created)
    }

    /// R19: copies new acceptances from Synapse into the control plane's history.
    async fn record_consents(&self, id: &str, data_dir: &std::path::Path) {
        let db_path = data_dir.join("homeserver.db");
        let python = self.settings.synapse_python.clone();
        let read = blocking(move || super::synapse_db::consents(&python, &db_path)).await;
        match read {
            Ok(consents) => {
                if let Err(e) = store::record_consents(&self.app.db, id, &consents).await {
                    tracing::warn!(error = %e, "could not record consents");
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read consents"),
        }
    }

    /// Stops the process, destroys the volume and its key, removes the tenant user. The port
    /// is freed with the runtime row.
    async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.stop_process(id).await;
        let volumes = self.volumes.clone();
        let owned = id.to_owned();
        blocking(move || {
            volumes.destroy(&owned)?;
            tenant_user::remove(&owned)
        })
        .await
    }

    /// Volumes, processes and runtime rows whose homeserver is gone (a crash mid-delete).
    async fn collect_orphans(&self) -> anyhow::Result<()> {
        let live: Vec<String> = store::homeserver_ids(&self.app.db).await?.into_iter().map(|(id, _)| id).collect();
        let volumes = self.volumes.clone();
        let on_disk = blocking(move || volumes.list()).await?;
        for id in on_disk.into_iter().filter(|id| !live.contains(id)) {
            tracing::warn!(homeserver_id = %id, "removing an orphaned volume");
            self.delete(&id).await?;
        }
        for id in store::orphan_runtime_ids(&self.app.db).await? {
            store::forget_homeserver(&self.app.db, &id).await?;
        }
        Ok(())
    }

    /// R23: server-level usage, never contents.
    pub async fn usage(&self, id: &str) -> anyhow::Result<Usage> {
        let row = store::runtime_row(&self.app.db, id).await?.context("the homeserver has not been provisioned yet")?;
        let secrets = self.secrets(id, &row)?;
        let admin = MatrixAdmin::new(format!("http://127.0.0.1:{}", row.port), secrets.registration_shared_secret);
        let sealed = row.admin_token_sealed.context("the homeserver has not been provisioned yet")?;
        let token = String::from_utf8(self.app.sealer.open(&sealed, &admin_token_context(id))?)?;
        let registered = admin.registered_users(&token).await?;
        let volumes = self.volumes.clone();
        let (owned, python) = (id.to_owned(), self.settings.synapse_python.clone());
        let (used, mau) = blocking(move || {
            let used = volumes.used_bytes(&owned)?;
            let mau = super::synapse_db::mau(&python, &volumes.data_dir(&owned).join("homeserver.db"))?;
            Ok((used, mau))
        })
        .await?;
        // The service account is not the customer's user.
        Ok(Usage { monthly_active_users: mau.saturating_sub(1), registered_users: registered.saturating_sub(1), volume_bytes_used: used })
    }
}

fn service_email(server_name: &str) -> String {
    format!("{SERVICE_LOCALPART}@{server_name}")
}

/// Gives the tenant's user everything in its data directory (files written by root included).
fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).with_context(|| format!("chown {}", dir.display()))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
