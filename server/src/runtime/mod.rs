//! The homeserver runtime: the control plane's decisions about each hosted homeserver. A
//! reconciler brings each homeserver's actual state to the desired state in the database. It
//! decides; the node agent (root) does: every volume, user, sandbox and process operation is a
//! typed request to `matrixhost-agent`. The runtime talks HTTP to the homeservers themselves
//! (their admin API, through the ingress) and treats what they answer as untrusted.

mod backoff;
pub mod matrix_admin;
pub mod privacy_notice;
mod probe;
mod reconcile;
mod spec;
#[cfg(test)]
mod synapse_rules;

use std::collections::HashMap;
use std::sync::Arc;

use matrixhost_agent_api::{correlation_id, AgentClient, AgentError, HomeserverId};
use tokio::sync::Mutex;

use crate::config::RuntimeSettings;
use crate::domain::runtime as store;
use crate::domain::DomainError;
use crate::ingress::Ingress;
use crate::platform::Platform;

pub use reconcile::{PasswordSetter, Usage};

/// Why the runtime could not bring a homeserver where it should be. Every message is the
/// platform's own words and a reference into a log; none holds text a tenant wrote, so it can
/// be shown as the homeserver's `status_reason`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the homeserver did not answer within {seconds} s of being started (ref {reference})")]
    NotReady { seconds: u64, reference: String },
    #[error("the homeserver stopped while it was starting (ref {reference})")]
    ExitedAtStart { reference: String },
    #[error("the homeserver's service account could not be set up (ref {reference})")]
    ServiceAccount { reference: String },
    #[error("the platform's ingress could not take the homeserver's port (ref {reference})")]
    Ingress { reference: String },
    #[error("internal error (ref {reference})")]
    Internal { reference: String },
}

impl RuntimeError {
    /// The reference that leads the operator to the details.
    pub fn reference(&self) -> &str {
        match self {
            RuntimeError::Agent(e) => &e.correlation_id,
            RuntimeError::NotReady { reference, .. }
            | RuntimeError::ExitedAtStart { reference }
            | RuntimeError::ServiceAccount { reference }
            | RuntimeError::Ingress { reference }
            | RuntimeError::Internal { reference } => reference,
        }
    }

    /// Logs `detail` (which may hold anything) under a fresh reference, for the operator.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let reference = correlation_id();
        tracing::error!(correlation_id = %reference, detail = %detail, "runtime error");
        RuntimeError::Internal { reference }
    }
}

impl From<DomainError> for RuntimeError {
    fn from(e: DomainError) -> Self {
        RuntimeError::internal(e)
    }
}

#[derive(Debug)]
pub struct Runtime {
    platform: Arc<Platform>,
    settings: RuntimeSettings,
    ingress: Arc<Ingress>,
    /// One actor per homeserver at a time: a reconcile, a backup or a restore (R4).
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    start_backoff: backoff::StartBackoff,
}

impl Runtime {
    pub fn new(platform: Arc<Platform>, settings: RuntimeSettings, ingress: Arc<Ingress>) -> Arc<Runtime> {
        Arc::new(Runtime { platform, settings, ingress, locks: Default::default(), start_backoff: Default::default() })
    }

    fn agent(&self) -> &AgentClient {
        self.platform.agent.as_ref().expect("the runtime exists only with a node agent")
    }

    /// The homeserver's lock. Whoever holds it is the only one acting on the homeserver's
    /// process and volume: the reconciler skips a homeserver whose lock is taken, and a backup
    /// or restore waits for a reconcile to finish.
    pub fn homeserver_lock(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1 || l.try_lock().is_err());
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Listens again on the port of every homeserver that has one and a known tenant (after a
    /// restart of `matrixhostd`). A failure is left to the reconciler, which tries again.
    pub async fn reopen_ingress(&self) {
        let ids = match store::homeserver_ids(&self.platform.db).await {
            Ok(ids) => ids,
            Err(e) => return tracing::warn!(error = %e, "cannot list homeservers to reopen their ports"),
        };
        for (id, _) in ids {
            let (Ok(Some(row)), Ok(hs)) = (store::runtime_row(&self.platform.db, &id).await, HomeserverId::parse(&id)) else { continue };
            let Some(uid) = row.tenant_uid else { continue };
            if let Err(e) = self.ingress.ensure(&hs, row.port, uid).await {
                tracing::warn!(homeserver_id = %id, port = row.port, error = %e, "cannot reopen the homeserver's port yet");
            }
        }
    }

    /// Reconciles until the process ends: at once, whenever the API changes something, and at
    /// every interval (to notice dead processes, full volumes and billing anniversaries).
    pub async fn run(self: Arc<Self>) {
        match self.agent().hello().await {
            Ok(info) => {
                tracing::info!(agent = %info.version, sandbox = %info.sandbox, cgroups = %info.cgroups, pids_max = info.pids_max, "node agent answers")
            }
            Err(e) => {
                tracing::error!(error = %e, "the node agent does not answer; homeservers wait for it")
            }
        }
        loop {
            if let Err(err) = self.pass().await {
                tracing::error!(error = %err, "reconcile pass failed");
            }
            tokio::select! {
                _ = self.platform.runtime_woken() => {}
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }
}
