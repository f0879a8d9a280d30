//! One reconcile pass: for every homeserver, converge or delete; then clean up orphans.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use matrixhost_agent_api::{correlation_id, ErrorCode, HomeserverId, HomeserverState, Limits, SynapseSpec};
use matrixhost_api::{HomeserverEventKind, HomeserverStatus, StorageBlock};

use super::matrix_admin::{MatrixAdmin, MatrixError};
use super::spec::{self, SERVICE_LOCALPART};
use super::{privacy_notice, probe, Runtime, RuntimeError};
use crate::domain::runtime::{self as store, Field, RuntimeRow, Target};
use crate::domain::{events, DomainError};

/// Server-level usage of a homeserver (R23): counts and bytes, never contents.
#[derive(Debug, Clone)]
pub struct Usage {
    pub monthly_active_users: u64,
    pub registered_users: u64,
    pub volume_bytes_used: u64,
    pub volume_size_bytes: u64,
}

fn parse_id(id: &str) -> Result<HomeserverId, RuntimeError> {
    HomeserverId::parse(id).map_err(RuntimeError::internal)
}

impl Runtime {
    pub(super) async fn pass(self: &Arc<Self>) -> Result<(), RuntimeError> {
        let mut tasks = tokio::task::JoinSet::new();
        for (id, org_id) in store::homeserver_ids(&self.platform.db).await? {
            let this = self.clone();
            tasks.spawn(async move {
                // A backup or restore holds the homeserver: leave it to the next pass. The target
                // is read under the lock, so it reflects what a restore just changed.
                let lock = this.homeserver_lock(&id);
                let Ok(_guard) = lock.try_lock() else {
                    tracing::debug!(homeserver_id = %id, "busy with a backup or restore; next pass");
                    return Ok(());
                };
                let now = this.platform.clock.now();
                let Some(target) = store::target(&this.platform.db, &org_id, &id, now, &this.platform.settings.catalog).await? else { return Ok(()) };
                this.reconcile_one(target).await;
                Ok::<(), DomainError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "reconcile of a homeserver failed");
            }
        }
        self.collect_orphans().await
    }

    async fn reconcile_one(self: Arc<Self>, target: Target) {
        let id = target.homeserver.id.clone();
        let deleting = target.homeserver.status == HomeserverStatus::Deleting;
        let result = if deleting { self.delete(&id).await } else { self.converge(&target).await };
        let now = self.platform.clock.now();
        match result {
            Ok(()) if deleting => match store::forget_homeserver(&self.platform.db, &id).await {
                Ok(()) => {
                    tracing::info!(homeserver_id = %id, "homeserver deleted: process, volume, key, user and port are gone")
                }
                Err(e) => {
                    tracing::error!(homeserver_id = %id, error = %e, "could not forget a deleted homeserver")
                }
            },
            Ok(()) => {}
            Err(err) => {
                // The reason is the platform's own words plus a reference; the details are in
                // the logs (this one's and the agent's).
                let reason = err.to_string();
                tracing::warn!(homeserver_id = %id, reason = %reason, "homeserver failed");
                let _ = store::set_status(&self.platform.db, &id, HomeserverStatus::Failed, Some(&reason), None, now, None).await;
            }
        }
    }

    fn client_url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    /// Creates the runtime record: an ingress port and Synapse secrets, sealed.
    async fn provision_record(&self, id: &str) -> Result<RuntimeRow, RuntimeError> {
        let sealed = spec::seal_new_secrets(&self.platform.sealer, id).map_err(RuntimeError::internal)?;
        store::insert_runtime_row(&self.platform.db, id, self.settings.port_range, &sealed, self.platform.clock.now()).await?;
        store::runtime_row(&self.platform.db, id).await?.ok_or_else(|| RuntimeError::internal("the runtime row vanished"))
    }

    async fn event(&self, id: &str, kind: HomeserverEventKind, message: &str, reference: Option<&str>) {
        if let Err(e) = events::record(&self.platform.db, id, kind, message, reference, self.platform.clock.now()).await {
            tracing::error!(homeserver_id = %id, error = %e, "cannot record a homeserver event");
        }
    }

    async fn converge(self: &Arc<Self>, target: &Target) -> Result<(), RuntimeError> {
        let hs = &target.homeserver;
        let id = parse_id(&hs.id)?;
        let db = &self.platform.db;
        let row = match store::runtime_row(db, &hs.id).await? {
            Some(row) => row,
            None => self.provision_record(&hs.id).await?,
        };
        // R2/R3: the tenant user and its encrypted volume, at the wanted size.
        let ensured = self.agent().ensure(&id, hs.volume.size_gb.get()).await?;
        if row.tenant_uid != Some(ensured.tenant_uid) {
            store::set_tenant_uid(db, &hs.id, ensured.tenant_uid).await?;
        }
        self.ingress.ensure(&id, row.port, ensured.tenant_uid).await.map_err(|e| {
            let reference = correlation_id();
            tracing::error!(homeserver_id = %hs.id, correlation_id = %reference, port = row.port, error = %e, "the ingress cannot listen");
            RuntimeError::Ingress { reference }
        })?;

        // R12: at 100% of its storage the homeserver is blocked until it has room again.
        let v = ensured.volume;
        let storage = target.plan.storage_block(v.used_bytes, v.size_bytes, v.full);
        self.note_storage(&hs.id, &row, storage).await?;
        let blocked = target.blocked.clone().or(storage.map(|s| s.message()));

        let client_url = Self::client_url(row.port);
        let secrets = spec::open_secrets(&self.platform.sealer, &hs.id, &row.secrets_sealed).map_err(RuntimeError::internal)?;
        let admin = MatrixAdmin::new(&client_url, secrets.registration_shared_secret.clone());
        let spec = spec::build(target, &client_url, secrets, blocked.clone(), self.settings.mau_trial_days);
        let limits = spec::limits(target);
        let state = self.agent().status(&id).await?;
        let oom_restart = self.note_oom(&hs.id, &row, &state).await?;
        let fingerprint = spec.fingerprint();
        // What the store says now (the target is a snapshot): the final status is written when it differs.
        let mut stored_status = hs.status;
        if !state.running || state.fingerprint.as_deref() != Some(fingerprint.as_str()) || oom_restart {
            if state.running {
                store::set_status(db, &hs.id, HomeserverStatus::Updating, Some("applying new settings"), None, self.platform.clock.now(), None).await?;
                stored_status = HomeserverStatus::Updating;
                // New accounts made before the restart hold their slots after it: one restart, not two.
                self.sync_accounts_before_restart(target, &admin).await;
                if oom_restart {
                    self.agent().stop(&id, None).await?;
                }
            } else if row.applied_fingerprint.is_some() && matches!(hs.status, HomeserverStatus::Running | HomeserverStatus::Blocked) {
                self.note_crash(&hs.id, &state).await;
            }
            if !self.start_backoff.may_start(&hs.id, &fingerprint, Instant::now()) {
                tracing::debug!(homeserver_id = %hs.id, "the last start failed; waiting before the next attempt");
                return Ok(());
            }
            match (self.start(&id, &spec, limits, ensured.tenant_uid).await, storage) {
                (Ok(()), _) => {}
                // On a volume with no room at all Synapse may not even start; it is blocked
                // either way, and the reason users and the customer need is the storage one.
                (Err(e), Some(block)) => {
                    tracing::warn!(homeserver_id = %hs.id, error = %e, "a full homeserver did not start; it stays blocked");
                    store::set_status(db, &hs.id, HomeserverStatus::Blocked, Some(&block.message()), None, self.platform.clock.now(), None).await?;
                    return Ok(());
                }
                (Err(e), None) => return Err(e),
            }
        } else if row.applied_limits.as_deref() != Some(spec::limits_text(limits).as_str()) {
            // Same spec, new plan limits: applied in place, without a restart.
            self.agent().start(&id, &spec, limits, &correlation_id()).await?;
            store::set_runtime_field(db, &hs.id, Field::AppliedLimits, Some(spec::limits_text(limits)), self.platform.clock.now()).await?;
        }

        let token = self.service_token(&hs.id, hs.server_name.as_str(), &admin).await?;
        if self.sync_accounts(target, &admin, &token, true).await? {
            // Synapse reads reserved threepids at start-up: restart so new accounts hold their slot (R8).
            self.agent().stop(&id, None).await?;
            self.start(&id, &spec, limits, ensured.tenant_uid).await?;
        }
        self.record_consents(&id, hs.server_name.as_str()).await;
        let notice_url = format!("{client_url}/_matrix/consent");
        let (status, reason) = match &blocked {
            Some(reason) => (HomeserverStatus::Blocked, Some(reason.as_str())),
            None => (HomeserverStatus::Running, None),
        };
        if stored_status != status || hs.client_url.as_deref() != Some(client_url.as_str()) || hs.status_reason.as_deref() != reason {
            store::set_status(db, &hs.id, status, reason, Some((&client_url, &notice_url)), self.platform.clock.now(), Some(hs.version)).await?;
            tracing::info!(homeserver_id = %hs.id, status = status.as_str(), "homeserver converged");
        }
        // Last, after the status: a client that sees its change applied finds the homeserver answering.
        store::mark_applied(db, target).await?;
        Ok(())
    }

    /// Best effort, on the homeserver still running the old settings: accounts it makes now are
    /// found by the restart that follows. Whatever fails here is tried (and recorded) after it.
    async fn sync_accounts_before_restart(&self, target: &Target, admin: &MatrixAdmin) {
        if !target.reserved.iter().any(|r| r.localpart.is_some() && r.synced_version != Some(r.version)) {
            return;
        }
        let id = &target.homeserver.id;
        let token = match self.service_token(id, target.homeserver.server_name.as_str(), admin).await {
            Ok(token) => token,
            Err(e) => return tracing::debug!(homeserver_id = %id, error = %e, "accounts wait for the restart"),
        };
        if let Err(e) = self.sync_accounts(target, admin, &token, false).await {
            tracing::debug!(homeserver_id = %id, error = %e, "accounts wait for the restart");
        }
    }

    /// Starts `spec` and waits until the homeserver answers on its socket. A failure begins or
    /// continues a backoff streak; the first of a streak is an event for the customer.
    async fn start(&self, id: &HomeserverId, spec: &SynapseSpec, limits: Limits, tenant_uid: u32) -> Result<(), RuntimeError> {
        let result = self.start_and_wait(id, spec, limits, tenant_uid).await;
        match &result {
            Ok(()) => self.start_backoff.succeeded(id.as_str()),
            Err(err) => {
                if self.start_backoff.failed(id.as_str(), &spec.fingerprint(), Instant::now()) {
                    self.event(id.as_str(), HomeserverEventKind::StartFailed, &err.to_string(), Some(err.reference())).await;
                }
            }
        }
        result
    }

    async fn start_and_wait(&self, id: &HomeserverId, spec: &SynapseSpec, limits: Limits, tenant_uid: u32) -> Result<(), RuntimeError> {
        let attempt = correlation_id();
        self.agent().start(id, spec, limits, &attempt).await?;
        let socket = self.platform.dirs.homeserver_socket(id).ok_or_else(|| RuntimeError::internal("no socket directory without the runtime"))?;
        let started = Instant::now();
        let mut checked = Instant::now();
        loop {
            if probe::ready(&socket, tenant_uid).await {
                break;
            }
            if started.elapsed() > self.settings.start_timeout {
                let _ = self.agent().stop(id, Some(&attempt)).await;
                return Err(RuntimeError::NotReady { seconds: self.settings.start_timeout.as_secs(), reference: attempt.clone() });
            }
            if checked.elapsed() > Duration::from_secs(1) {
                checked = Instant::now();
                let state = self.agent().status(id).await?;
                if !state.running {
                    let reference = state.last_exit.map(|e| e.correlation_id).unwrap_or(attempt.clone());
                    return Err(RuntimeError::ExitedAtStart { reference });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = self.platform.clock.now();
        store::set_runtime_field(&self.platform.db, id.as_str(), Field::AppliedFingerprint, Some(spec.fingerprint()), now).await?;
        store::set_runtime_field(&self.platform.db, id.as_str(), Field::AppliedLimits, Some(spec::limits_text(limits)), now).await?;
        tracing::info!(homeserver_id = %id, attempt = %attempt, seconds = format!("{:.1}", started.elapsed().as_secs_f64()), "homeserver answers");
        Ok(())
    }

    /// R12: records when the homeserver's storage fills up and when it has room again.
    async fn note_storage(&self, id: &str, row: &RuntimeRow, block: Option<StorageBlock>) -> Result<(), RuntimeError> {
        match (row.storage_blocked, block) {
            (false, Some(b)) => {
                self.event(id, HomeserverEventKind::StorageFull, &b.message(), None).await;
                store::set_storage_blocked(&self.platform.db, id, true).await?;
            }
            (true, None) => {
                self.event(id, HomeserverEventKind::StorageAvailable, "R12: the homeserver's storage has room again; the block is lifted.", None).await;
                store::set_storage_blocked(&self.platform.db, id, false).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// R5/R12: a kill by the kernel for the plan's memory limit hit only this tenant's
    /// processes. It is recorded, and the homeserver is restarted (whatever was killed, what is
    /// left may not be whole). Returns whether a restart is due.
    async fn note_oom(&self, id: &str, row: &RuntimeRow, state: &HomeserverState) -> Result<bool, RuntimeError> {
        if state.oom_kills <= row.oom_kills_seen {
            return Ok(false);
        }
        let killed = state.oom_kills - row.oom_kills_seen;
        let message = format!("R5: the homeserver ran out of its plan's memory; the kernel stopped {killed} of its processes and the homeserver was restarted.");
        self.event(id, HomeserverEventKind::OomKilled, &message, None).await;
        store::set_oom_kills_seen(&self.platform.db, id, state.oom_kills).await?;
        Ok(state.running)
    }

    async fn note_crash(&self, id: &str, state: &HomeserverState) {
        let (message, reference) = match &state.last_exit {
            Some(exit) => {
                let how = match (exit.code, exit.signal) {
                    (_, Some(signal)) => format!("was stopped by signal {signal}"),
                    (Some(code), None) => format!("exited with status {code}"),
                    _ => "stopped".to_owned(),
                };
                let at = Utc.timestamp_opt(exit.at, 0).single().map(|t| t.to_rfc3339()).unwrap_or_default();
                (format!("The homeserver {how} at {at} and was restarted."), Some(exit.correlation_id.clone()))
            }
            None => ("The homeserver was not running (the host restarted?) and was started again.".to_owned(), None),
        };
        self.event(id, HomeserverEventKind::Crashed, &message, reference.as_deref()).await;
    }

    /// The control plane's admin account on the homeserver, registered once with the shared secret.
    async fn service_token(&self, id: &str, server_name: &str, admin: &MatrixAdmin) -> Result<String, RuntimeError> {
        if let Some(sealed) = store::runtime_row(&self.platform.db, id).await?.and_then(|r| r.admin_token_sealed) {
            return Ok(self.platform.sealer.open_string(&sealed, &spec::admin_token_context(id)).map_err(RuntimeError::internal)?.to_string());
        }
        let failed = |e: anyhow::Error| {
            let reference = correlation_id();
            tracing::warn!(homeserver_id = id, correlation_id = %reference, error = %format!("{e:#}"), "cannot set up the service account");
            RuntimeError::ServiceAccount { reference }
        };
        let password = hex::encode(rand::random::<[u8; 32]>());
        let token = admin.register(SERVICE_LOCALPART, &password, true, Some("matrixhost service")).await.map_err(failed)?;
        let user_id = format!("@{SERVICE_LOCALPART}:{server_name}");
        admin.upsert_user(&token, &user_id, &spec::service_email(server_name), Some("matrixhost service"), true, None).await.map_err(failed)?;
        let sealed = self.platform.sealer.seal(token.as_bytes(), &spec::admin_token_context(id)).map_err(RuntimeError::internal)?;
        store::set_runtime_field(&self.platform.db, id, Field::AdminTokenSealed, Some(sealed), self.platform.clock.now()).await?;
        Ok(token)
    }

    /// Reserved users with a localpart get a real account with their email bound. Returns
    /// whether an account was created (reserved slots then need a restart). Refusals are
    /// recorded on the reserved user when `record_refusals`.
    async fn sync_accounts(&self, target: &Target, admin: &MatrixAdmin, token: &str, record_refusals: bool) -> Result<bool, RuntimeError> {
        let mut created = false;
        // Read again: the target is a snapshot, and a sync before a restart may have done some.
        let synced_now = store::account_synced_versions(&self.platform.db, &target.homeserver.id).await?;
        for r in &target.reserved {
            let Some(localpart) = &r.localpart else { continue };
            let synced = synced_now.get(&r.id).copied().flatten();
            if synced == Some(r.version) {
                continue;
            }
            let user_id = format!("@{localpart}:{}", target.homeserver.server_name);
            let password = match &r.password_sealed {
                Some(sealed) => Some(self.platform.sealer.open_string(sealed, &r.id).map_err(RuntimeError::internal)?.to_string()),
                None if synced.is_none() => Some(hex::encode(rand::random::<[u8; 24]>())),
                None => None,
            };
            match admin.upsert_user(token, &user_id, &r.email, r.display_name.as_deref(), r.admin, password.as_deref()).await {
                Ok(()) => {
                    created |= synced.is_none();
                    store::mark_account_synced(&self.platform.db, &r.id, r.version, None).await?;
                }
                Err(e) if !record_refusals => {
                    tracing::debug!(reserved_user_id = %r.id, error = %format!("{e:#}"), "account not synced yet");
                }
                Err(e) => {
                    // The homeserver's own words stay in the log; the record gets ours.
                    let reference = correlation_id();
                    let code = e.downcast_ref::<MatrixError>().map(|m| m.errcode.clone()).unwrap_or_else(|| "M_UNKNOWN".into());
                    tracing::warn!(reserved_user_id = %r.id, correlation_id = %reference, error = %format!("{e:#}"), "could not sync the account");
                    let message = format!("the homeserver refused the account ({code}) (ref {reference})");
                    store::mark_account_synced(&self.platform.db, &r.id, r.version, Some(&message)).await?;
                }
            }
        }
        Ok(created)
    }

    /// R19: copies new acceptances from the homeserver's database (read by the agent, as the
    /// tenant) into the control plane's history. Rows that are not this server's users or not a
    /// notice version this platform issues are ignored.
    async fn record_consents(&self, id: &HomeserverId, server_name: &str) {
        let consents = match self.agent().consents(id).await {
            Ok(c) => c,
            Err(e) => return tracing::debug!(homeserver_id = %id, error = %e, "could not read consents"),
        };
        let suffix = format!(":{server_name}");
        let rows: Vec<_> = consents
            .into_iter()
            .filter(|c| c.user_id.ends_with(&suffix) && privacy_notice::is_version(&c.version))
            .filter_map(|c| Some((c.user_id, c.version, Utc.timestamp_millis_opt(c.accepted_at_ms).single()?)))
            .collect();
        if let Err(e) = store::record_consents(&self.platform.db, id.as_str(), &rows).await {
            tracing::warn!(error = %e, "could not record consents");
        }
    }

    /// Stops the homeserver and has the agent remove its volume, key, user and files; the port
    /// is freed with the runtime row.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let hs = parse_id(id)?;
        self.ingress.remove(&hs);
        self.agent().destroy(&hs).await?;
        Ok(())
    }

    /// Homeservers the agent has resources for but the database no longer knows (a crash
    /// mid-delete), and runtime rows of homeservers that are gone.
    async fn collect_orphans(&self) -> Result<(), RuntimeError> {
        let live: Vec<String> = store::homeserver_ids(&self.platform.db).await?.into_iter().map(|(id, _)| id).collect();
        for id in self.agent().list().await? {
            if !live.iter().any(|l| l == id.as_str()) {
                tracing::warn!(homeserver_id = %id, "removing an orphaned homeserver's resources");
                self.ingress.remove(&id);
                self.agent().destroy(&id).await?;
            }
        }
        for id in store::orphan_runtime_ids(&self.platform.db).await? {
            store::forget_homeserver(&self.platform.db, &id).await?;
        }
        Ok(())
    }

    /// The homeserver's admin API with the service account's token.
    async fn service_account(&self, id: &str) -> Result<(MatrixAdmin, zeroize::Zeroizing<String>), RuntimeError> {
        let row = store::runtime_row(&self.platform.db, id).await?.ok_or_else(|| RuntimeError::internal("the homeserver has no runtime record yet"))?;
        let secrets = spec::open_secrets(&self.platform.sealer, id, &row.secrets_sealed).map_err(RuntimeError::internal)?;
        let admin = MatrixAdmin::new(Self::client_url(row.port), secrets.registration_shared_secret.clone());
        let sealed = row.admin_token_sealed.ok_or_else(|| RuntimeError::internal("the homeserver has no service account yet"))?;
        let token = self.platform.sealer.open_string(&sealed, &spec::admin_token_context(id)).map_err(RuntimeError::internal)?;
        Ok((admin, token))
    }

    /// What sets a reserved user's password (chosen through their invitation) on homeserver
    /// `id`. Made before the caller's transaction: it reads the store, setting does not.
    pub async fn password_setter(&self, id: &str) -> Result<PasswordSetter, RuntimeError> {
        let (admin, token) = self.service_account(id).await?;
        Ok(PasswordSetter { admin, token })
    }

    /// R23: server-level usage, never contents.
    pub async fn usage(&self, id: &str) -> Result<Usage, RuntimeError> {
        let hs = parse_id(id)?;
        let (admin, token) = self.service_account(id).await?;
        let registered = admin.registered_users(&token).await.map_err(RuntimeError::internal)?;
        let mau = self.agent().usage(&hs).await?.monthly_active_users;
        let volume =
            self.agent().status(&hs).await?.volume.ok_or_else(|| RuntimeError::Agent(matrixhost_agent_api::AgentError::new(ErrorCode::VolumeOpenFailed, correlation_id())))?;
        // The service account is not the customer's user.
        Ok(Usage {
            monthly_active_users: mau.saturating_sub(1),
            registered_users: registered.saturating_sub(1),
            volume_bytes_used: volume.used_bytes,
            volume_size_bytes: volume.size_bytes,
        })
    }
}

/// Sets passwords on one homeserver through its admin API, as the service account.
pub struct PasswordSetter {
    admin: MatrixAdmin,
    token: zeroize::Zeroizing<String>,
}

impl PasswordSetter {
    /// How long a homeserver that is restarting (to take new settings) is waited for.
    const RESTART_GRACE: Duration = Duration::from_secs(20);

    pub async fn set(&self, user_id: &str, password: &str) -> Result<(), RuntimeError> {
        let started = Instant::now();
        loop {
            match self.admin.set_password(&self.token, user_id, password).await {
                Ok(()) => return Ok(()),
                Err(e) if Self::restarting(&e) && started.elapsed() < Self::RESTART_GRACE => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(RuntimeError::internal(e)),
            }
        }
    }

    /// Unreachable, or the ingress finding no Synapse behind it: a restart, not a refusal.
    fn restarting(e: &anyhow::Error) -> bool {
        e.downcast_ref::<MatrixError>().is_some_and(|m| m.status == 0 || m.status == 502 || m.status == 503)
    }
}
