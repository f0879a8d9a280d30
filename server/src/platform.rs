//! What the HTTP layer and the workers (runtime, backups) share: the database, the settings,
//! the clock, the control plane's secrets key, its state directories and the node agent's
//! client. Neither side depends on the other; both depend on this.

use anyhow::Context;
use matrixhost_agent_api::AgentClient;
use matrixhost_seal::Sealer;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::{self, Db};
use crate::domain::accounts::Accounts;
use crate::domain::passwords::Hasher;
use crate::mail::Transport;
use crate::state::{StateDirs, MAILDIR, PEPPER_FILE, SECRETS_KEY_FILE};

#[derive(Debug)]
pub struct Platform {
    pub db: Db,
    pub settings: Settings,
    pub clock: Clock,
    /// Seals what the control plane keeps for later (Synapse secrets, the service account's
    /// token, an initial password until its account exists). Not the agent's master key.
    pub sealer: Sealer,
    pub dirs: StateDirs,
    /// The node agent, when homeservers are hosted.
    pub agent: Option<AgentClient>,
    /// R14: hashes customer passwords with the pepper from `STATE/api`.
    pub hasher: Hasher,
    /// How the outbox's mail leaves.
    pub mail: Transport,
    /// Stripe's API, when billing goes through it (R10-R13).
    pub stripe: Option<crate::stripe_api::StripeApi>,
    /// The console's base URL, once known (the configured one, or the bound address).
    public_url: std::sync::OnceLock<String>,
    wake_runtime: Notify,
    wake_backups: Notify,
    wake_housekeeping: Notify,
    /// Asks housekeeping for a full round now, not just the mail (the test clock moved).
    full_housekeeping: std::sync::atomic::AtomicBool,
}

impl Platform {
    /// Opens the database (migrating it) and the secrets key.
    pub async fn open(settings: Settings, dirs: StateDirs) -> anyhow::Result<Platform> {
        let url = settings.database_url.clone().unwrap_or_else(|| dirs.sqlite_url());
        let db = db::connect(&url).await?;
        let sealer = Sealer::load_or_create(&dirs.api_file(SECRETS_KEY_FILE)).context("the control plane's secrets key")?;
        let agent = match (&settings.runtime, dirs.agent_socket()) {
            (Some(_), Some(socket)) => Some(AgentClient::new(socket)),
            _ => None,
        };
        let clock = if settings.test_clock { Clock::adjustable() } else { Clock::system() };
        let pepper = matrixhost_seal::load_or_create_key(&dirs.api_file(PEPPER_FILE)).context("the password pepper")?;
        let mail = match (&settings.smtp_url, settings.dev) {
            (Some(url), _) => Transport::smtp(url)?,
            (None, true) => Transport::Maildir(dirs.api_file(MAILDIR)),
            (None, false) => Transport::Unconfigured,
        };
        let stripe = match &settings.stripe {
            Some(s) => Some(crate::stripe_api::StripeApi::new(&s.api_url, s.secret_key.clone())?),
            None => None,
        };
        let public_url = std::sync::OnceLock::new();
        if let Some(url) = &settings.public_url {
            let _ = public_url.set(url.clone());
        }
        Ok(Platform {
            db,
            settings,
            clock,
            sealer,
            dirs,
            agent,
            hasher: Hasher::new(pepper),
            mail,
            stripe,
            public_url,
            wake_runtime: Notify::new(),
            wake_backups: Notify::new(),
            wake_housekeeping: Notify::new(),
            full_housekeeping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Records the bound address as the console's URL, unless one was configured.
    pub fn bound_to(&self, addr: std::net::SocketAddr) {
        let _ = self.public_url.set(format!("http://{addr}"));
    }

    /// The console's base URL (links in mail).
    pub fn console_url(&self) -> &str {
        self.public_url.get().map(String::as_str).unwrap_or("http://localhost")
    }

    /// The payment processor and what billing needs with it, when billing goes through Stripe.
    pub fn payments(&self) -> Option<crate::domain::billing_plans::Payments<'_>> {
        self.stripe.as_ref().map(|stripe| crate::domain::billing_plans::Payments { stripe, console_url: self.console_url() })
    }

    /// Whether cookies get the `Secure` flag: the console is reached over HTTPS.
    pub fn console_is_https(&self) -> bool {
        self.console_url().starts_with("https://")
    }

    /// Customer accounts, with what they need from the platform.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts {
            db: &self.db,
            sealer: &self.sealer,
            hasher: &self.hasher,
            console_url: self.console_url(),
            terms_version: &self.settings.catalog.terms_version,
        }
    }

    /// Tells the housekeeping worker that mail is waiting (or that the test clock moved).
    pub fn mail_queued(&self) {
        self.wake_housekeeping.notify_one();
    }

    /// Time-driven work (retention, erasures, key rotation) looks at once.
    pub fn time_moved(&self) {
        self.full_housekeeping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake_housekeeping.notify_one();
    }

    pub(crate) async fn housekeeping_woken(&self) {
        self.wake_housekeeping.notified().await
    }

    /// Whether a full round was asked for since the last call.
    pub(crate) fn take_full_housekeeping(&self) -> bool {
        self.full_housekeeping.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether homeservers are really run (false with `--no-runtime`).
    pub fn hosts_homeservers(&self) -> bool {
        self.agent.is_some()
    }

    /// Tells the runtime that desired state changed.
    pub fn changed(&self) {
        self.wake_runtime.notify_one();
    }

    /// Tells the backup worker that there is work (an on-demand backup, a restore).
    pub fn backups_changed(&self) {
        self.wake_backups.notify_one();
    }

    pub(crate) async fn runtime_woken(&self) {
        self.wake_runtime.notified().await
    }

    pub(crate) async fn backups_woken(&self) {
        self.wake_backups.notified().await
    }
}
