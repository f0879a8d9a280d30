//! `matrixhostd`, the matrixhost hosting control plane.

pub mod auth;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod resources;

use std::sync::Arc;

use anyhow::Context;

use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::Sealer;
use crate::db::Db;
use crate::http::RateLimiter;

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct App {
    pub db: Db,
    pub settings: Settings,
    pub clock: Clock,
    pub rate_limiter: RateLimiter,
    pub sealer: Sealer,
    pub last_used: auth::LastUsed,
}

impl App {
    /// Opens the state directory, the database (migrating it) and the master key.
    pub async fn open(settings: Settings) -> anyhow::Result<App> {
        std::fs::create_dir_all(&settings.state_dir)
            .with_context(|| format!("cannot create the state directory {}", settings.state_dir.display()))?;
        restrict_to_owner(&settings.state_dir)?;
        let db = db::connect(&settings.database_url).await?;
        let sealer = Sealer::load_or_create(&settings.master_key_file)?;
        Ok(App {
            db,
            clock: if settings.test_clock { Clock::adjustable() } else { Clock::system() },
            rate_limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
            sealer,
            last_used: auth::LastUsed::default(),
            settings,
        })
    }
}

/// The state directory holds the database and keys: nobody else may read it.
fn restrict_to_owner(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))
}

/// Serves the API until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn serve(app: App) -> anyhow::Result<()> {
    let app = Arc::new(app);
    if app.settings.dev {
        auth::bootstrap_dev(&app).await?;
    }
    let listener = tokio::net::TcpListener::bind(app.settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", app.settings.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read the bound address here (useful with port 0).
    std::fs::write(app.settings.state_dir.join("matrixhostd.addr"), addr.to_string())?;
    tracing::info!(%addr, database = %db::redact_url(&app.settings.database_url), "matrixhostd listening");
    axum::serve(listener, http::router(app.clone())).with_graceful_shutdown(shutdown_signal()).await?;
    app.db.close().await;
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
