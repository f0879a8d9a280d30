//! The control plane's side of the socket: one typed method per request.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::error::{AgentError, ErrorCode};
use crate::messages::*;
use crate::wire::{read_frame, write_frame};
use crate::{BackupId, HomeserverId, Limits, SynapseSpec, PROTOCOL_VERSION};

/// Short operations answer within this; backups and restores may take as long as they need.
const QUICK: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentClient { socket: socket.into() }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Sends one request and reads its answer. Dropping the future closes the connection,
    /// which cancels long work on the agent's side.
    pub async fn call(&self, request: Request, timeout: Option<Duration>) -> Reply {
        let op = request.op();
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| AgentError::local(ErrorCode::Unavailable, format!("{op}: connect {}: {e}", self.socket.display())))?;
            // The write half stays open until the answer is in: the agent reads its closing as
            // the caller hanging up, which cancels long work.
            let (r, mut w) = stream.into_split();
            write_frame(&mut w, &request).await.map_err(|e| AgentError::local(ErrorCode::Unavailable, format!("{op}: send: {e}")))?;
            let reply: Reply = read_frame(r).await.map_err(|e| AgentError::local(ErrorCode::Unavailable, format!("{op}: receive: {e}")))?;
            drop(w);
            reply
        };
        match timeout {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .unwrap_or_else(|_| Err(AgentError::local(ErrorCode::Unavailable, format!("{op}: no answer within {limit:?}")))),
            None => exchange.await,
        }
    }

    fn unexpected(op: &str, got: &Response) -> AgentError {
        AgentError::local(ErrorCode::Protocol, format!("{op}: unexpected answer {got:?}"))
    }

    pub async fn hello(&self) -> Result<AgentInfo, AgentError> {
        match self.call(Request::Hello, Some(QUICK)).await? {
            Response::Hello(info) if info.protocol == PROTOCOL_VERSION => Ok(info),
            Response::Hello(info) => {
                Err(AgentError::local(ErrorCode::Protocol, format!("the agent speaks protocol {}, this control plane {PROTOCOL_VERSION}", info.protocol)))
            }
            other => Err(Self::unexpected("hello", &other)),
        }
    }

    pub async fn ensure(&self, homeserver: &HomeserverId, volume_size_gb: u32) -> Result<Ensured, AgentError> {
        // Growing offline stops the homeserver and runs e2fsck: allow for that.
        match self.call(Request::Ensure { homeserver: homeserver.clone(), volume_size_gb }, Some(Duration::from_secs(900))).await? {
            Response::Ensured(e) => Ok(e),
            other => Err(Self::unexpected("ensure", &other)),
        }
    }

    pub async fn start(&self, homeserver: &HomeserverId, spec: &SynapseSpec, limits: Limits, attempt: &str) -> Result<Started, AgentError> {
        let request = Request::Start { homeserver: homeserver.clone(), spec: Box::new(spec.clone()), limits, attempt: attempt.to_owned() };
        match self.call(request, Some(QUICK)).await? {
            Response::Started(s) => Ok(s),
            other => Err(Self::unexpected("start", &other)),
        }
    }

    pub async fn stop(&self, homeserver: &HomeserverId, diagnose: Option<&str>) -> Result<(), AgentError> {
        match self.call(Request::Stop { homeserver: homeserver.clone(), diagnose: diagnose.map(str::to_owned) }, Some(QUICK)).await? {
            Response::Stopped => Ok(()),
            other => Err(Self::unexpected("stop", &other)),
        }
    }

    pub async fn status(&self, homeserver: &HomeserverId) -> Result<HomeserverState, AgentError> {
        match self.call(Request::Status { homeserver: homeserver.clone() }, Some(QUICK)).await? {
            Response::Status(s) => Ok(s),
            other => Err(Self::unexpected("status", &other)),
        }
    }

    pub async fn destroy(&self, homeserver: &HomeserverId) -> Result<(), AgentError> {
        match self.call(Request::Destroy { homeserver: homeserver.clone() }, Some(Duration::from_secs(300))).await? {
            Response::Destroyed => Ok(()),
            other => Err(Self::unexpected("destroy", &other)),
        }
    }

    pub async fn list(&self) -> Result<Vec<HomeserverId>, AgentError> {
        match self.call(Request::List, Some(QUICK)).await? {
            Response::List { homeservers } => Ok(homeservers),
            other => Err(Self::unexpected("list", &other)),
        }
    }

    pub async fn usage(&self, homeserver: &HomeserverId) -> Result<TenantUsage, AgentError> {
        match self.call(Request::Usage { homeserver: homeserver.clone() }, Some(QUICK)).await? {
            Response::Usage(u) => Ok(u),
            other => Err(Self::unexpected("usage", &other)),
        }
    }

    pub async fn consents(&self, homeserver: &HomeserverId) -> Result<Vec<Consent>, AgentError> {
        match self.call(Request::Consents { homeserver: homeserver.clone() }, Some(QUICK)).await? {
            Response::Consents { consents } => Ok(consents),
            other => Err(Self::unexpected("consents", &other)),
        }
    }

    pub async fn take_backup(&self, homeserver: &HomeserverId, backup: &BackupId, created_at: i64) -> Result<BackupTaken, AgentError> {
        let request = Request::TakeBackup { homeserver: homeserver.clone(), backup: backup.clone(), created_at };
        match self.call(request, None).await? {
            Response::BackupTaken(b) => Ok(b),
            other => Err(Self::unexpected("take_backup", &other)),
        }
    }

    pub async fn stage_restore(&self, homeserver: &HomeserverId, backup: &BackupId) -> Result<RestoreStaged, AgentError> {
        match self.call(Request::StageRestore { homeserver: homeserver.clone(), backup: backup.clone() }, None).await? {
            Response::RestoreStaged(r) => Ok(r),
            other => Err(Self::unexpected("stage_restore", &other)),
        }
    }

    pub async fn swap_in_restore(&self, homeserver: &HomeserverId) -> Result<(), AgentError> {
        match self.call(Request::SwapInRestore { homeserver: homeserver.clone() }, Some(Duration::from_secs(600))).await? {
            Response::RestoreSwapped => Ok(()),
            other => Err(Self::unexpected("swap_in_restore", &other)),
        }
    }

    pub async fn delete_backup(&self, homeserver: &HomeserverId, backup: &BackupId) -> Result<bool, AgentError> {
        match self.call(Request::DeleteBackup { homeserver: homeserver.clone(), backup: backup.clone() }, Some(QUICK)).await? {
            Response::BackupDeleted { existed } => Ok(existed),
            other => Err(Self::unexpected("delete_backup", &other)),
        }
    }

    pub async fn remove_incomplete_backups(&self) -> Result<u32, AgentError> {
        match self.call(Request::RemoveIncompleteBackups, Some(QUICK)).await? {
            Response::IncompleteBackupsRemoved { count } => Ok(count),
            other => Err(Self::unexpected("remove_incomplete_backups", &other)),
        }
    }
}
