//! `matrixhostd`, the matrixhost hosting control plane. It runs unprivileged: the root work of
//! hosting (volumes, sandboxes, cgroups, processes, backup files) is the node agent's
//! (`matrixhost-agent`), which it asks through a typed API.
//!
//! Layers, with the trust boundaries as the seams (`docs/architecture.md`):
//! * `http`: the customer's edge; status codes and the one error shape live only here.
//! * `domain`: each resource's table and rules, with typed errors.
//! * `runtime`, `backup`: the workers that decide what the node agent does; they never use `http`.
//! * `ingress`: the only way into a homeserver's socket.
//! * `platform`, `state`, `config`, `db`, `clock`: what they all share.

#[cfg(all(feature = "test-hooks", not(debug_assertions)))]
compile_error!("the test-hooks feature is for test builds only; release builds never enable it");

pub mod backup;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod housekeeping;
pub mod http;
pub mod ids;
pub mod ingress;
pub mod mail;
pub mod operator;
pub mod platform;
pub mod runtime;
pub mod state;
pub mod stripe;
pub mod stripe_api;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Context;
use matrixhost_api::{Email, OrgName};

use crate::domain::orgs;
use crate::ingress::Ingress;
use crate::platform::Platform;
use crate::state::{ADDR_FILE, DEV_TOKEN_FILE};

/// `--dev`: a verified `dev` organization whose token is in `STATE/api/dev-token` (0600). A
/// valid token already in the file is kept, so restarts don't invalidate it.
async fn bootstrap_dev(platform: &Platform) -> anyhow::Result<()> {
    let now = platform.clock.now();
    let org = match orgs::find_org(&platform.db, "dev").await? {
        Some(org) => org,
        None => {
            let name = OrgName::parse("dev").expect("valid");
            let email = Email::parse("dev@matrixhost.localhost").expect("valid");
            orgs::create_org(&platform.db, &name, &email, true, now).await?
        }
    };
    let path = platform.dirs.api_file(DEV_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if orgs::token_is_active(&platform.db, &org.id, existing.trim()).await? {
            return Ok(());
        }
    }
    let (_, token) = orgs::create_token(&platform.db, &org.id, "dev bootstrap", now).await?;
    matrixhost_seal::write_secret_file(&path, token.as_bytes()).context("cannot write the dev token")?;
    tracing::info!(path = %platform.dirs.layout().api_dir().join(DEV_TOKEN_FILE).display(), "wrote the dev organization's token");
    Ok(())
}

/// Serves the API until SIGTERM or Ctrl-C, then finishes the requests in flight. Homeservers
/// keep running: the data plane is the agent's.
pub async fn serve(platform: Platform) -> anyhow::Result<()> {
    let platform = Arc::new(platform);
    if platform.settings.dev {
        bootstrap_dev(&platform).await?;
    }
    let runtime = match (&platform.settings.runtime, platform.hosts_homeservers()) {
        (Some(settings), true) => {
            let p = platform.clone();
            let ingress = Arc::new(Ingress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), move |id| p.dirs.homeserver_socket(id)));
            let runtime = runtime::Runtime::new(platform.clone(), settings.clone(), ingress);
            // Homeservers kept running while matrixhostd was away: their ports answer again
            // before the API does, so `running` never means "not reachable yet".
            runtime.reopen_ingress().await;
            tokio::spawn(runtime.clone().run());
            Some(runtime)
        }
        _ => {
            tracing::warn!("started with --no-runtime: homeservers are recorded but not run");
            None
        }
    };
    // R4: backups next to the runtime (without it, only retention runs).
    let backups = backup::Backups::new(platform.clone(), runtime.clone());
    tokio::spawn(backups.clone().run());
    let (access_log, entries) = tokio::sync::mpsc::channel(10_000);
    tokio::spawn(housekeeping::write_access_log(platform.clone(), entries));
    let app = Arc::new(http::App::new(platform.clone(), runtime, backups, access_log));
    let listener = tokio::net::TcpListener::bind(platform.settings.listen).await.with_context(|| format!("cannot listen on {}", platform.settings.listen))?;
    let addr = listener.local_addr()?;
    platform.bound_to(addr);
    tracing::info!(transport = platform.mail.describe(), console = %format!("{}/console", platform.console_url()), "mail and console");
    // Mail, R17 retention, session keys and erasures.
    tokio::spawn(housekeeping::run(platform.clone()));
    // Tests and scripts read the bound address here (useful with port 0).
    std::fs::write(platform.dirs.api_file(ADDR_FILE), addr.to_string())?;
    let database = match &platform.settings.database_url {
        Some(url) => db::redact_url(url),
        None => format!("sqlite in {}", platform.dirs.layout().api_dir().display()),
    };
    tracing::info!(%addr, %database, "matrixhostd listening");
    // Small JSON responses must not wait for Nagle's algorithm (Terraform makes many calls).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let service = http::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await?;
    platform.db.close().await;
    tracing::info!("matrixhostd stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down gracefully"),
    }
}
