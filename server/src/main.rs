//! `matrixhostd`: `serve` runs the control plane; the other commands are for the operator.
//! Started as root, every command becomes the unprivileged service user before it opens
//! anything (see `state.rs`).

use clap::{Parser, Subcommand};
use matrixhost_server::config::{ServeArgs, Settings, StoreArgs};
use matrixhost_server::domain::{backups, orgs, sessions};
use matrixhost_server::platform::Platform;
use matrixhost_server::state::{self, StateDirs};
use matrixhost_server::{db, operator};

#[derive(Parser)]
#[command(name = "matrixhostd", version, about = "The matrixhost hosting control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Operator actions on homeservers (R12).
    #[command(subcommand)]
    Homeserver(HomeserverCommand),
    /// Test builds only: record a payment's outcome by hand (R12), until the payment processor
    /// does it.
    #[cfg(feature = "test-hooks")]
    #[command(subcommand)]
    Billing(BillingCommand),
    /// Encrypted backups (R4): list, take, restore. `take` and `restore` are carried out by
    /// the running `matrixhostd serve` on the same state; the command waits for the outcome.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// The keys that sign console session cookies (R16).
    #[command(subcommand)]
    SessionKeys(SessionKeysCommand),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        #[arg(long)]
        org: String,
        /// Create the organization if it does not exist (needs --email).
        #[arg(long)]
        create_org: bool,
        #[arg(long)]
        email: Option<String>,
        /// Mark a newly created organization's email as verified (R15).
        #[arg(long)]
        verified: bool,
        #[arg(long, default_value = "created with matrixhostd token create")]
        description: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List an organization's tokens (ids only, never secrets).
    List {
        #[arg(long)]
        org: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum SessionKeysCommand {
    /// Make a new signing key now. With --retire-old every older key stops verifying at once,
    /// which logs out every session (for a key that may have leaked).
    Rotate {
        #[arg(long)]
        retire_old: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum HomeserverCommand {
    /// Block every login on a homeserver (R12); users see the reason.
    Block {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lift an operator block.
    Unblock {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[cfg(feature = "test-hooks")]
#[derive(Subcommand)]
enum BillingCommand {
    /// Record a failed payment: the homeserver is blocked until it is paid (R12).
    PaymentFailed {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Record that the outstanding payment was settled.
    PaymentSettled {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// List a homeserver's backups, oldest first (also of a deleted homeserver).
    List {
        homeserver_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Take an on-demand backup now.
    Take {
        homeserver_id: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Restore a completed backup into its homeserver. The homeserver keeps running while the
    /// archive is verified, then is offline while the data is swapped in and Synapse restarts.
    /// A corrupt archive is refused and changes nothing.
    Restore {
        backup_id: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
struct WaitArgs {
    /// Return once the request is recorded, without waiting for the outcome.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the outcome.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization.
    Create {
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        verified: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Mark an organization's email as verified (R15).
    Verify {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colours only for a terminal: log files and CI output stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).with_target(false).init();
}

/// What a command needs before the async runtime starts: its settings and the state
/// directories, opened (and root dropped) while the process has one thread.
struct Prepared {
    settings: Settings,
    dirs: StateDirs,
}

fn prepare(command: &Command) -> anyhow::Result<Option<Prepared>> {
    let settings = match command {
        Command::Openapi => return Ok(None),
        Command::Serve(args) => Settings::resolve(args)?,
        Command::Migrate(store) | Command::SessionKeys(SessionKeysCommand::Rotate { store, .. }) => Settings::for_store(store)?,
        Command::Token(TokenCommand::Create { store, .. } | TokenCommand::List { store, .. } | TokenCommand::Revoke { store, .. }) => Settings::for_store(store)?,
        Command::Org(OrgCommand::Create { store, .. } | OrgCommand::Verify { store, .. }) => Settings::for_store(store)?,
        Command::Homeserver(HomeserverCommand::Block { store, .. } | HomeserverCommand::Unblock { store, .. }) => Settings::for_store(store)?,
        #[cfg(feature = "test-hooks")]
        Command::Billing(BillingCommand::PaymentFailed { store, .. } | BillingCommand::PaymentSettled { store, .. }) => Settings::for_store(store)?,
        Command::Backup(BackupCommand::List { store, .. } | BackupCommand::Take { store, .. } | BackupCommand::Restore { store, .. }) => Settings::for_store(store)?,
    };
    let dirs = state::enter(&settings.state_dir, &settings.user, settings.runtime.is_some())?;
    Ok(Some(Prepared { settings, dirs }))
}

async fn run(command: Command, prepared: Option<Prepared>) -> anyhow::Result<()> {
    let Some(Prepared { settings, dirs }) = prepared else {
        print!("{}", matrixhost_api::openapi::document_text());
        return Ok(());
    };
    let p = Platform::open(settings, dirs).await?;
    match command {
        Command::Openapi => unreachable!("handled above"),
        Command::Serve(_) => matrixhost_server::serve(p).await,
        Command::Migrate(_) => {
            eprintln!("database is up to date ({})", p.settings.database_url.as_deref().map(db::redact_url).unwrap_or_else(|| "sqlite".into()));
            Ok(())
        }
        Command::Org(OrgCommand::Create { name, email, verified, .. }) => {
            let org = operator::create_org(&p, &name, &email, verified).await?;
            println!("{}", org.id);
            Ok(())
        }
        Command::Org(OrgCommand::Verify { name, .. }) => Ok(orgs::verify_org(&p.db, &name).await?),
        Command::SessionKeys(SessionKeysCommand::Rotate { retire_old, .. }) => {
            let retired = sessions::rotate_now(&p.db, &p.sealer, retire_old, p.clock.now()).await?;
            eprintln!("made a new session signing key; retired {retired} older key(s)");
            Ok(())
        }
        Command::Homeserver(HomeserverCommand::Block { id, reason, .. }) => operator::block_homeserver(&p, &id, &reason).await,
        Command::Homeserver(HomeserverCommand::Unblock { id, .. }) => operator::unblock_homeserver(&p, &id).await,
        #[cfg(feature = "test-hooks")]
        Command::Billing(BillingCommand::PaymentFailed { id, .. }) => operator::set_payment_failed(&p, &id, true).await,
        #[cfg(feature = "test-hooks")]
        Command::Billing(BillingCommand::PaymentSettled { id, .. }) => operator::set_payment_failed(&p, &id, false).await,
        Command::Backup(command) => backup_command(&p, command).await,
        Command::Token(TokenCommand::Create { org, create_org: create, email, verified, description, .. }) => {
            let found = match orgs::find_org(&p.db, &org).await? {
                Some(found) => found,
                None if create => {
                    let email = email.ok_or_else(|| anyhow::anyhow!("--create-org needs --email"))?;
                    operator::create_org(&p, &org, &email, verified).await?
                }
                None => anyhow::bail!("no organization named {org}; pass --create-org --email ADDRESS to create it"),
            };
            let (id, token) = orgs::create_token(&p.db, &found.id, &description, p.clock.now()).await?;
            eprintln!("created token {id} for organization {}; it is shown only once:", found.name);
            println!("{token}");
            Ok(())
        }
        Command::Token(TokenCommand::List { org, .. }) => {
            let found = orgs::find_org(&p.db, &org).await?.ok_or_else(|| anyhow::anyhow!("no organization named {org}"))?;
            for t in orgs::list_tokens(&p.db, &found.id).await? {
                let state = match &t.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".into(),
                };
                println!("{}\t{}\tcreated {}\tlast used {}\t{}", t.id, state, t.created_at, t.last_used_at.as_deref().unwrap_or("never"), t.description);
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id, .. }) => {
            orgs::revoke_token(&p.db, None, &id, p.clock.now()).await.map_err(|e| anyhow::anyhow!("token {id}: {e}"))?;
            eprintln!("revoked token {id}");
            Ok(())
        }
    }
}

async fn backup_command(p: &Platform, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::List { homeserver_id, .. } => {
            for b in backups::all_of(&p.db, &homeserver_id).await? {
                println!(
                    "{}\t{}\t{}\tstarted {}\tfinished {}\t{} bytes\texpires {}{}",
                    b.id,
                    status_name(b.status),
                    match b.kind {
                        matrixhost_api::BackupKind::Scheduled => "scheduled",
                        matrixhost_api::BackupKind::OnDemand => "on_demand",
                    },
                    show_time(Some(b.started_at)),
                    show_time(b.finished_at),
                    b.size_bytes.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    show_time(Some(b.expires_at)),
                    b.error.map(|e| format!("\t{e}")).unwrap_or_default(),
                );
            }
            Ok(())
        }
        BackupCommand::Take { homeserver_id, wait, .. } => {
            let b = operator::take_backup(p, &homeserver_id).await?;
            eprintln!("backup {} of homeserver {homeserver_id} requested", b.id);
            if !wait.no_wait {
                let done = wait_for(&wait, "backup", || async { Ok(operator::load_backup(p, &b.id).await?.map(|b| (status_name(b.status), b.error))) }).await?;
                anyhow::ensure!(done.0 == "completed", "backup {} failed: {}", b.id, done.1.unwrap_or_default());
            }
            println!("{}", b.id);
            Ok(())
        }
        BackupCommand::Restore { backup_id, wait, .. } => {
            let r = operator::restore_backup(p, &backup_id).await?;
            eprintln!("restore {} of backup {backup_id} into homeserver {} requested", r.id, r.homeserver_id);
            if !wait.no_wait {
                let done = wait_for(&wait, "restore", || async { Ok(operator::load_restore(p, &r.id).await?.map(|r| (restore_status_name(r.status), r.error))) }).await?;
                anyhow::ensure!(done.0 == "completed", "restore {} failed: {}", r.id, done.1.unwrap_or_default());
                eprintln!("restore {} completed: homeserver {} runs on the data of backup {backup_id}", r.id, r.homeserver_id);
            }
            println!("{}", r.id);
            Ok(())
        }
    }
}

/// Timestamps in CLI output.
fn show_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(db::ts).unwrap_or_else(|| "-".into())
}

fn status_name(s: matrixhost_api::BackupStatus) -> &'static str {
    match s {
        matrixhost_api::BackupStatus::Running => "running",
        matrixhost_api::BackupStatus::Completed => "completed",
        matrixhost_api::BackupStatus::Failed => "failed",
    }
}

fn restore_status_name(s: matrixhost_api::RestoreStatus) -> &'static str {
    match s {
        matrixhost_api::RestoreStatus::Pending => "pending",
        matrixhost_api::RestoreStatus::Running => "running",
        matrixhost_api::RestoreStatus::Completed => "completed",
        matrixhost_api::RestoreStatus::Failed => "failed",
    }
}

/// Polls `read` (status, error) until the status is `completed` or `failed`, reporting changes.
async fn wait_for<F, Fut>(wait: &WaitArgs, what: &str, read: F) -> anyhow::Result<(&'static str, Option<String>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<(&'static str, Option<String>)>>>,
{
    let started = std::time::Instant::now();
    let mut last = "";
    let mut hinted = false;
    loop {
        let (status, error) = read().await?.ok_or_else(|| anyhow::anyhow!("the {what} vanished (erased?)"))?;
        if status != last {
            eprintln!("{what}: {status}");
            last = status;
        }
        if status == "completed" || status == "failed" {
            return Ok((status, error));
        }
        let waited = started.elapsed();
        if !hinted && waited > std::time::Duration::from_secs(30) && (status == "pending" || status == "running") {
            eprintln!("still {status} after 30 s; the running `matrixhostd serve` on this state carries it out");
            hinted = true;
        }
        anyhow::ensure!(waited < std::time::Duration::from_secs(wait.timeout), "gave up waiting after {} s; the {what} is still {status}", wait.timeout);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn main() {
    // Everything matrixhostd creates (database, keys, tokens) is private unless it says otherwise.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Backtraces are for developers; operators get the error chain.
    std::env::remove_var("RUST_BACKTRACE");
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    init_logging();
    let cli = Cli::parse();
    let fail = |err: anyhow::Error| -> ! {
        eprintln!("matrixhostd: {err:#}");
        std::process::exit(1);
    };
    // Before any thread exists: root is dropped here, for good.
    let prepared = prepare(&cli.command).unwrap_or_else(|e| fail(e));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(err) = runtime.block_on(run(cli.command, prepared)) {
        fail(err);
    }
}
