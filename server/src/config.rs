//! Configuration: command-line flags, then `MATRIXHOSTD_*` environment variables, then the
//! config file (`--config`, TOML), then built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use matrixhost_api::Catalog;
use serde::Deserialize;

/// How the runtime runs homeservers (through the node agent).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Ports the ingress gives homeservers, inclusive.
    pub port_range: (u16, u16),
    /// R6: users count toward the MAU cap once their account is this many days old.
    pub mau_trial_days: u32,
    /// How long a homeserver may take to answer after it was started.
    pub start_timeout: Duration,
    /// How often the reconciler looks even when nothing wakes it.
    pub interval: Duration,
}

const DEFAULT_CATALOG: &str = include_str!("default_catalog.toml");
const DEFAULT_STATE_DIR: &str = "/var/lib/matrixhostd";
const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
const DEFAULT_USER: &str = "matrixhost";

/// The test clock exists only in test builds (the `test-hooks` feature); a release binary
/// refuses it by name rather than ignoring it.
fn test_clock_allowed(wanted: bool) -> anyhow::Result<bool> {
    if wanted && !cfg!(feature = "test-hooks") {
        anyhow::bail!("test_clock: this matrixhostd is a release build and has no test hooks; remove `test_clock` from the config file (and --test-clock from the command line)");
    }
    Ok(wanted)
}

/// Where the store lives; shared by `serve` and the operator commands.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Config file (TOML). Keys: listen, state_dir, database_url, platform_domain, user,
    /// rate_limit_per_second, rate_limit_burst, homeserver_ports, mau_trial_days, smtp_url,
    /// mail_from, public_url, [catalog].
    #[arg(long, env = "MATRIXHOSTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory, shared with matrixhost-agent: the control plane keeps its database and
    /// secrets key in STATE_DIR/api.
    #[arg(long, env = "MATRIXHOSTD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The unprivileged user matrixhostd runs as; started as root, it switches to this user
    /// before it opens anything.
    #[arg(long, env = "MATRIXHOSTD_USER")]
    pub user: Option<String>,
    /// `postgres://user:pass@host/db` to use PostgreSQL instead of SQLite in the state dir.
    #[arg(long, env = "MATRIXHOSTD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on; port 0 picks a free port (written to STATE_DIR/matrixhostd.addr).
    #[arg(long, env = "MATRIXHOSTD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Bootstrap a verified `dev` organization and write its token to STATE_DIR/dev-token.
    #[arg(long)]
    pub dev: bool,
    /// Test hook: let `POST /v1/_test/clock` move the clock forward. Only test builds have it.
    #[arg(long, hide = true)]
    pub test_clock: bool,
    /// Record homeservers without running them (API-only tests and machines without root).
    #[arg(long)]
    pub no_runtime: bool,
    /// Ports handed to homeservers, e.g. `18000-18999`.
    #[arg(long, env = "MATRIXHOSTD_HOMESERVER_PORTS", value_parser = parse_port_range)]
    pub homeserver_ports: Option<(u16, u16)>,
    /// R6 trial period in days before a new user counts toward the MAU cap (default 2).
    #[arg(long, env = "MATRIXHOSTD_MAU_TRIAL_DAYS")]
    pub mau_trial_days: Option<u32>,
    /// Sustained requests per second allowed per API token.
    #[arg(long, env = "MATRIXHOSTD_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<f64>,
    /// Burst of requests allowed per API token.
    #[arg(long, env = "MATRIXHOSTD_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// The mail relay: `smtp://[user:pass@]host[:port]` (STARTTLS whenever the relay offers
    /// it) or `smtps://...`. Without one, `--dev` delivers into STATE_DIR/api/maildir and
    /// otherwise mail waits in the outbox.
    #[arg(long, env = "MATRIXHOSTD_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The console's address as customers reach it (links in mail; `https://` makes cookies
    /// Secure). Default: http:// and the listen address.
    #[arg(long, env = "MATRIXHOSTD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A file holding the signing secret (`whsec_...`) of Stripe's webhook endpoint for
    /// `POST /v1/stripe/webhook`. Without one, the endpoint answers 404. A file, so that the
    /// secret never shows in the process list.
    #[arg(long, env = "MATRIXHOSTD_STRIPE_WEBHOOK_SECRET_FILE")]
    pub stripe_webhook_secret_file: Option<PathBuf>,
    /// Stripe's API base URL: `https://api.stripe.com`, or an emulator's such as localstripe's.
    /// With it (and the secret key) billing plans are Stripe subscriptions, charged in advance.
    #[arg(long, env = "MATRIXHOSTD_STRIPE_API_URL")]
    pub stripe_api_url: Option<String>,
    /// A file holding Stripe's secret API key (`sk_...`); a file, so it never shows in the
    /// process list.
    #[arg(long, env = "MATRIXHOSTD_STRIPE_SECRET_KEY_FILE")]
    pub stripe_secret_key_file: Option<PathBuf>,
    /// Stripe's publishable key (`pk_...`), which the console's card form hands to Stripe.js.
    #[arg(long, env = "MATRIXHOSTD_STRIPE_PUBLISHABLE_KEY")]
    pub stripe_publishable_key: Option<String>,
    /// Where the console loads Stripe.js from. Default: `https://js.stripe.com/v3/` for Stripe,
    /// `<api url>/js.stripe.com/v3/` for an emulator.
    #[arg(long, env = "MATRIXHOSTD_STRIPE_JS_URL")]
    pub stripe_js_url: Option<String>,
}

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    state_dir: Option<PathBuf>,
    database_url: Option<String>,
    platform_domain: Option<String>,
    user: Option<String>,
    rate_limit_per_second: Option<f64>,
    rate_limit_burst: Option<u32>,
    /// Read so that a build without test hooks can refuse it by name.
    test_clock: Option<bool>,
    catalog: Option<Catalog>,
    homeserver_ports: Option<[u16; 2]>,
    mau_trial_days: Option<u32>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    public_url: Option<String>,
    stripe_webhook_secret_file: Option<PathBuf>,
    stripe_api_url: Option<String>,
    stripe_secret_key_file: Option<PathBuf>,
    stripe_publishable_key: Option<String>,
    stripe_js_url: Option<String>,
}

/// Stripe, when billing goes through it.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_url: String,
    pub secret_key: crate::stripe_api::SecretKey,
    pub publishable_key: String,
    pub js_url: String,
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// PostgreSQL; `None` for SQLite in `STATE/api`.
    pub database_url: Option<String>,
    /// Default server names are `<homeserver>.<org>.<platform_domain>`.
    pub platform_domain: String,
    /// The user to run as when started as root.
    pub user: String,
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: u32,
    pub test_clock: bool,
    pub dev: bool,
    pub catalog: Catalog,
    /// How homeservers are run; `None` with `--no-runtime`.
    pub runtime: Option<RuntimeSettings>,
    /// The mail relay (may hold a password: never logged).
    pub smtp_url: Option<String>,
    /// The sender of the platform's mail.
    pub mail_from: String,
    /// The console's public base URL; `None`: http:// and the bound address.
    pub public_url: Option<String>,
    /// The signing secret of Stripe's webhook endpoint, when webhooks are taken.
    pub stripe_webhook_secret: Option<crate::stripe::SigningSecret>,
    /// Billing through Stripe; `None`: plans are recorded and never charged.
    pub stripe: Option<StripeSettings>,
}

fn load_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected START-END, e.g. 18000-18999")?;
    let (a, b): (u16, u16) = (a.parse().map_err(|_| "bad start port")?, b.parse().map_err(|_| "bad end port")?);
    if a == 0 || a > b {
        return Err("the range must be START-END with 0 < START <= END".into());
    }
    Ok((a, b))
}

pub fn default_catalog() -> Catalog {
    toml::from_str(DEFAULT_CATALOG).expect("the built-in catalog parses")
}

impl Settings {
    pub fn for_store(args: &StoreArgs) -> anyhow::Result<Settings> {
        // The operator commands only open the store: they never run homeservers.
        Self::resolve(&ServeArgs { store: args.clone(), no_runtime: true, ..ServeArgs::default() })
    }

    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file = load_file(args.store.config.as_deref())?;
        let state_dir = args.store.state_dir.clone().or(file.state_dir).unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        let database_url = args.store.database_url.clone().or(file.database_url);
        let catalog = file.catalog.unwrap_or_else(default_catalog);
        catalog.check().map_err(|e| anyhow::anyhow!("invalid catalog: {e}"))?;
        let rate_limit_per_second = args.rate_limit_per_second.or(file.rate_limit_per_second).unwrap_or(20.0);
        anyhow::ensure!(rate_limit_per_second > 0.0, "rate_limit_per_second must be positive");
        let runtime = (!args.no_runtime).then(|| RuntimeSettings {
            port_range: args.homeserver_ports.or(file.homeserver_ports.map(|[a, b]| (a, b))).unwrap_or((18000, 18999)),
            mau_trial_days: args.mau_trial_days.or(file.mau_trial_days).unwrap_or(2),
            start_timeout: Duration::from_secs(60),
            interval: Duration::from_secs(5),
        });
        let test_clock = test_clock_allowed(args.test_clock || file.test_clock.unwrap_or(false))?;
        let platform_domain = file.platform_domain.unwrap_or_else(|| "matrixhost.localhost".into());
        let public_url = args.public_url.clone().or(file.public_url).map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url {
            anyhow::ensure!(url.starts_with("http://") || url.starts_with("https://"), "public_url must start with http:// or https://");
        }
        Ok(Settings {
            runtime,
            listen: args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid")),
            user: args.store.user.clone().or(file.user).unwrap_or_else(|| DEFAULT_USER.into()),
            state_dir,
            database_url,
            mail_from: file.mail_from.unwrap_or_else(|| format!("matrixhost <noreply@{platform_domain}>")),
            platform_domain,
            smtp_url: args.smtp_url.clone().or(file.smtp_url),
            public_url,
            stripe_webhook_secret: read_webhook_secret(args.stripe_webhook_secret_file.clone().or(file.stripe_webhook_secret_file))?,
            stripe: stripe_settings(
                args.stripe_api_url.clone().or(file.stripe_api_url),
                args.stripe_secret_key_file.clone().or(file.stripe_secret_key_file),
                args.stripe_publishable_key.clone().or(file.stripe_publishable_key),
                args.stripe_js_url.clone().or(file.stripe_js_url),
            )?,
            rate_limit_per_second,
            rate_limit_burst: args.rate_limit_burst.or(file.rate_limit_burst).unwrap_or(100).max(1),
            test_clock,
            dev: args.dev,
            catalog,
        })
    }
}

/// Stripe takes three settings together: the API URL, the secret key's file, the publishable key.
fn stripe_settings(api_url: Option<String>, key_file: Option<PathBuf>, publishable_key: Option<String>, js_url: Option<String>) -> anyhow::Result<Option<StripeSettings>> {
    let (api_url, key_file, publishable_key) = match (api_url, key_file, publishable_key) {
        (None, None, None) => return Ok(None),
        (Some(u), Some(k), Some(p)) => (u.trim_end_matches('/').to_owned(), k, p),
        _ => anyhow::bail!("Stripe needs all of stripe_api_url, stripe_secret_key_file and stripe_publishable_key"),
    };
    anyhow::ensure!(api_url.starts_with("http://") || api_url.starts_with("https://"), "stripe_api_url must start with http:// or https://");
    anyhow::ensure!(publishable_key.starts_with("pk_"), "stripe_publishable_key must start with pk_ (the secret key goes in its file)");
    let text = std::fs::read_to_string(&key_file).with_context(|| format!("cannot read the Stripe secret key file {}", key_file.display()))?;
    let secret_key = crate::stripe_api::SecretKey::from_text(&text).with_context(|| format!("in {}", key_file.display()))?;
    let js_url = js_url.unwrap_or_else(|| if api_url == "https://api.stripe.com" { "https://js.stripe.com/v3/".into() } else { format!("{api_url}/js.stripe.com/v3/") });
    Ok(Some(StripeSettings { api_url, secret_key, publishable_key, js_url }))
}

/// Reads Stripe's webhook signing secret from its file.
fn read_webhook_secret(path: Option<PathBuf>) -> anyhow::Result<Option<crate::stripe::SigningSecret>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read the Stripe webhook secret file {}", path.display()))?;
    crate::stripe::SigningSecret::from_text(&text).map(Some).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_is_valid_and_us_only() {
        let c = default_catalog();
        c.check().unwrap();
        assert_eq!(c.available_region_codes(), ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]);
        assert!(c.regions.iter().any(|r| r.country != "US" && !r.available));
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("mh-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("matrixhostd.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nstate_dir = \"/tmp/x\"\nplatform_domain = \"example.net\"\n").unwrap();
        let mut args = ServeArgs {
            store: StoreArgs { config: Some(file.clone()), ..StoreArgs::default() },
            no_runtime: true,
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.user, "matrixhost");
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.platform_domain, "example.net");
        assert!(s.database_url.is_none());
        args.listen = Some("127.0.0.1:1234".parse().unwrap());
        assert_eq!(Settings::resolve(&args).unwrap().listen.port(), 1234);
        std::fs::write(&file, "bogus = 1\n").unwrap();
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    #[cfg(not(feature = "test-hooks"))]
    fn a_release_build_refuses_the_test_clock_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("matrixhostd.toml");
        std::fs::write(&file, "test_clock = true\n").unwrap();
        let args = ServeArgs { store: StoreArgs { config: Some(file), ..StoreArgs::default() }, no_runtime: true, ..ServeArgs::default() };
        let err = Settings::resolve(&args).unwrap_err().to_string();
        assert!(err.starts_with("test_clock:") && err.contains("release build"), "{err}");
        let args = ServeArgs { test_clock: true, no_runtime: true, ..ServeArgs::default() };
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    fn an_available_international_region_is_refused() {
        let mut c = default_catalog();
        c.regions.iter_mut().find(|r| r.code == "eu-west-1").unwrap().available = true;
        assert!(c.check().unwrap_err().message.contains("R1"));
    }
}
