//! `matrixhostd`, the matrixhost hosting control plane.

pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod operator;
pub mod resources;
pub mod runtime;

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
    /// Test hook: injected responses (`POST /v1/_test/faults`, only with `--test-clock`).
    pub faults: Faults,
    /// Wakes the runtime's reconciler after a change.
    pub wake: Arc<tokio::sync::Notify>,
    /// The homeserver runtime, unless started with `--no-runtime`.
    pub runtime: std::sync::OnceLock<Arc<runtime::Runtime>>,
    /// Where encrypted backup archives are kept (R4).
    pub backup_store: Arc<dyn backup::store::BackupStore>,
    /// The backup worker, once `serve` started it.
    pub backups: std::sync::OnceLock<Arc<backup::Backups>>,
}

impl App {
    /// Tells the runtime that desired state changed.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Tells the backup worker that there is work (an on-demand backup, a restore).
    pub fn backups_changed(&self) {
        if let Some(b) = self.backups.get() {
            b.wake();
        }
    }

    /// Whether homeservers are really run (false with `--no-runtime`).
    pub fn hosts_homeservers(&self) -> bool {
        self.settings.runtime.is_some()
    }

    /// Opens the state directory, the database (migrating it) and the master key.
    pub async fn open(settings: Settings) -> anyhow::Result<App> {
        std::fs::create_dir_all(&settings.state_dir)
            .with_context(|| format!("cannot create the state directory {}", settings.state_dir.display()))?;
        restrict_to_owner(&settings.state_dir)?;
        let db = db::connect(&settings.database_url).await?;
        let sealer = Sealer::load_or_create(&settings.master_key_file)?;
        let backup_store = Arc::new(backup::store::DirStore::open(&settings.backup_dir)?);
        Ok(App {
            backup_store,
            backups: std::sync::OnceLock::new(),
            db,
            clock: if settings.test_clock { Clock::adjustable() } else { Clock::system() },
            rate_limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
            sealer,
            last_used: auth::LastUsed::default(),
            faults: Faults::default(),
            wake: Arc::new(tokio::sync::Notify::new()),
            runtime: std::sync::OnceLock::new(),
            settings,
        })
    }
}

/// Injected responses for tests: the next `count` requests under `path_prefix` get `status`.
#[derive(Debug, Default)]
pub struct Faults(std::sync::Mutex<Vec<(String, axum::http::StatusCode, u32)>>);

impl Faults {
    pub fn arm(&self, path_prefix: String, status: axum::http::StatusCode, count: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((path_prefix, status, count));
    }

    fn take(&self, path: &str) -> Option<axum::http::StatusCode> {
        let mut faults = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fault = faults.iter_mut().find(|(prefix, _, count)| *count > 0 && path.starts_with(prefix.as_str()))?;
        fault.2 -= 1;
        let status = fault.1;
        faults.retain(|(_, _, count)| *count > 0);
        Some(status)
    }
}

/// The state directory holds the database and keys, created private (umask 077); tenants may
/// only traverse it to reach their own volume's mount point (R3).
fn restrict_to_owner(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot restrict {}", dir.display()))
}

/// Serves the API until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn serve(app: App) -> anyhow::Result<()> {
    let app = Arc::new(app);
    if app.settings.dev {
        auth::bootstrap_dev(&app).await?;
    }
    let mut hosted = None;
    if let Some(runtime_settings) = app.settings.runtime.clone() {
        let runtime = runtime::Runtime::new(app.clone(), runtime_settings)?;
        let _ = app.runtime.set(runtime.clone());
        hosted = Some(runtime.clone());
        tokio::spawn(runtime.run());
    } else {
        tracing::warn!("started with --no-runtime: homeservers are recorded but not run");
    }
    // R4: backups next to the runtime (without it, only retention runs).
    let backups = backup::Backups::new(app.clone(), hosted);
    let _ = app.backups.set(backups.clone());
    tracing::info!(store = %app.backup_store.describe(), "backup worker started");
    tokio::spawn(backups.run());
    let listener = tokio::net::TcpListener::bind(app.settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", app.settings.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read the bound address here (useful with port 0).
    std::fs::write(app.settings.state_dir.join("matrixhostd.addr"), addr.to_string())?;
    tracing::info!(%addr, database = %db::redact_url(&app.settings.database_url), "matrixhostd listening");
    // Small JSON responses must not wait for Nagle's algorithm (Terraform makes many calls).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
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
