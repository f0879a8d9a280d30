//! The agent's socket: `run/agent.sock`, mode 0600, owned by the control plane's user. The
//! agent also checks each caller's peer credentials (`SO_PEERCRED`): only that user (and root)
//! get an answer. One request per connection; a caller that hangs up cancels long work.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use matrixhost_agent_api::{correlation_id, read_frame, write_frame, AgentError, ErrorCode, Reply, Request};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::agent::Agent;

/// Binds the socket with the owner and mode the control plane needs, replacing a stale one.
pub fn bind(path: &Path, api_uid: u32, api_gid: u32) -> anyhow::Result<UnixListener> {
    // The run directory is root's: nobody else can have put anything here.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove the stale socket {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(api_uid), Some(api_gid)).with_context(|| format!("cannot hand {} to the control plane's user", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers connections until the process ends.
pub async fn serve(agent: Arc<Agent>, listener: UnixListener, api_uid: u32) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let agent = agent.clone();
                let request_id = correlation_id().replace("ref-", "req-");
                let span = tracing::info_span!("request", request_id = %request_id);
                tokio::spawn(connection(agent, stream, api_uid).instrument(span));
            }
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(agent: Arc<Agent>, stream: UnixStream, api_uid: u32) {
    let peer = stream.peer_cred().ok();
    let uid = peer.map(|c| c.uid());
    if !matches!(uid, Some(u) if u == api_uid || u == 0) {
        tracing::warn!(peer_uid = ?uid, peer_pid = ?peer.and_then(|c| c.pid()), "refused a caller that is not the control plane");
        let (_r, w) = stream.into_split();
        let reply: Reply = Err(AgentError::new(ErrorCode::Forbidden, correlation_id()));
        let _ = write_frame(w, &reply).await;
        return;
    }
    let (mut r, w) = stream.into_split();
    let request: Request = match read_frame(&mut r).await {
        Ok(request) => request,
        Err(e) => {
            let id = correlation_id();
            tracing::warn!(correlation_id = %id, error = %e, "unreadable request");
            let _ = write_frame(w, &(Err(AgentError::new(ErrorCode::InvalidRequest, id)) as Reply)).await;
            return;
        }
    };
    let op = request.op();
    let homeserver = request.homeserver().map(|h| h.to_string()).unwrap_or_default();
    let started = std::time::Instant::now();
    let cancel = Arc::new(AtomicBool::new(false));
    let work = agent.handle(request, cancel.clone());
    tokio::pin!(work);
    // The caller sends nothing more: a read that returns means it hung up.
    let hung_up = async {
        let mut byte = [0u8; 1];
        let _ = r.read(&mut byte).await;
    };
    let reply = tokio::select! {
        reply = &mut work => reply,
        () = hung_up => {
            cancel.store(true, Ordering::Relaxed);
            tracing::warn!(op, homeserver = %homeserver, "the caller hung up; cancelling");
            (&mut work).await
        }
    };
    let outcome = match &reply {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{} ({})", e.code, e.correlation_id),
    };
    tracing::info!(op, homeserver = %homeserver, elapsed_ms = started.elapsed().as_millis() as u64, outcome = %outcome, "request finished");
    let _ = write_frame(w, &reply).await;
}
