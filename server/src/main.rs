//! `matrixhostd`: `serve` runs the control plane; the other commands are for the operator.

use clap::{Parser, Subcommand};
use matrixhost_api::{Email, OrgName};
use matrixhost_server::config::{ServeArgs, Settings, StoreArgs};
use matrixhost_server::{auth, backup, db, operator, App};

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
    /// Operator actions on billing plans (R12).
    #[command(subcommand)]
    Billing(BillingCommand),
    /// Encrypted backups (R4): list, take, restore. `take` and `restore` are carried out by
    /// the running `matrixhostd serve` on the same state; the command waits for the outcome.
    #[command(subcommand)]
    Backup(BackupCommand),
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

async fn open(store: &StoreArgs) -> anyhow::Result<App> {
    App::open(Settings::for_store(store)?).await
}

async fn create_org(app: &App, name: &str, email: &str, verified: bool) -> anyhow::Result<auth::Org> {
    let name = OrgName::parse(name).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    auth::create_org(&app.db, &name, &email, verified, app.clock.now()).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => matrixhost_server::serve(App::open(Settings::resolve(&args)?).await?).await,
        Command::Migrate(store) => {
            let app = open(&store).await?;
            eprintln!("database is up to date ({})", db::redact_url(&app.settings.database_url));
            Ok(())
        }
        Command::Openapi => {
            print!("{}", matrixhost_api::openapi::document_text());
            Ok(())
        }
        Command::Org(OrgCommand::Create { name, email, verified, store }) => {
            let app = open(&store).await?;
            let org = create_org(&app, &name, &email, verified).await?;
            println!("{}", org.id);
            Ok(())
        }
        Command::Homeserver(HomeserverCommand::Block { id, reason, store }) => operator::block_homeserver(&open(&store).await?.db, &id, &reason).await,
        Command::Homeserver(HomeserverCommand::Unblock { id, store }) => operator::unblock_homeserver(&open(&store).await?.db, &id).await,
        Command::Billing(BillingCommand::PaymentFailed { id, store }) => operator::set_payment_status(&open(&store).await?.db, &id, true).await,
        Command::Billing(BillingCommand::PaymentSettled { id, store }) => operator::set_payment_status(&open(&store).await?.db, &id, false).await,
        Command::Org(OrgCommand::Verify { name, store }) => auth::verify_org(&open(&store).await?.db, &name).await,
        Command::Backup(command) => backup_command(command).await,
        Command::Token(TokenCommand::Create { org, create_org: create, email, verified, description, store }) => {
            let app = open(&store).await?;
            let found = match auth::find_org(&app.db, &org).await? {
                Some(found) => found,
                None if create => {
                    let email = email.ok_or_else(|| anyhow::anyhow!("--create-org needs --email"))?;
                    create_org(&app, &org, &email, verified).await?
                }
                None => anyhow::bail!("no organization named {org}; pass --create-org --email ADDRESS to create it"),
            };
            let (id, token) = auth::create_token(&app.db, &found.id, &description, app.clock.now()).await?;
            eprintln!("created token {id} for organization {}; it is shown only once:", found.name);
            println!("{token}");
            Ok(())
        }
        Command::Token(TokenCommand::List { org, store }) => {
            let app = open(&store).await?;
            let found = auth::find_org(&app.db, &org).await?.ok_or_else(|| anyhow::anyhow!("no organization named {org}"))?;
            for t in auth::list_tokens(&app.db, &found.id).await? {
                let state = match &t.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".into(),
                };
                println!("{}\t{}\tcreated {}\tlast used {}\t{}", t.id, state, t.created_at, t.last_used_at.as_deref().unwrap_or("never"), t.description);
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id, store }) => {
            let app = open(&store).await?;
            auth::revoke_token(&app.db, &id, app.clock.now()).await?;
            eprintln!("revoked token {id}");
            Ok(())
        }
    }
}

async fn backup_command(command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::List { homeserver_id, store } => {
            let app = open(&store).await?;
            for b in backup::operator_list(&app, &homeserver_id).await? {
                println!(
                    "{}\t{}\t{}\tstarted {}\tfinished {}\t{} bytes\texpires {}{}",
                    b.id,
                    status_name(b.status),
                    match b.kind {
                        matrixhost_api::BackupKind::Scheduled => "scheduled",
                        matrixhost_api::BackupKind::OnDemand => "on_demand",
                    },
                    backup::show_time(Some(b.started_at)),
                    backup::show_time(b.finished_at),
                    b.size_bytes.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    backup::show_time(Some(b.expires_at)),
                    b.error.map(|e| format!("\t{e}")).unwrap_or_default(),
                );
            }
            Ok(())
        }
        BackupCommand::Take { homeserver_id, wait, store } => {
            let app = open(&store).await?;
            let b = backup::operator_take(&app, &homeserver_id).await?;
            eprintln!("backup {} of homeserver {homeserver_id} requested", b.id);
            if !wait.no_wait {
                let done = wait_for(&wait, "backup", || async { Ok(backup::load_backup(&app, &b.id).await?.map(|b| (status_name(b.status), b.error))) }).await?;
                anyhow::ensure!(done.0 == "completed", "backup {} failed: {}", b.id, done.1.unwrap_or_default());
            }
            println!("{}", b.id);
            Ok(())
        }
        BackupCommand::Restore { backup_id, wait, store } => {
            let app = open(&store).await?;
            let r = backup::operator_restore(&app, &backup_id).await?;
            eprintln!("restore {} of backup {backup_id} into homeserver {} requested", r.id, r.homeserver_id);
            if !wait.no_wait {
                let done = wait_for(&wait, "restore", || async {
                    Ok(backup::load_restore(&app, &r.id).await?.map(|r| (restore_status_name(r.status), r.error)))
                })
                .await?;
                anyhow::ensure!(done.0 == "completed", "restore {} failed: {}", r.id, done.1.unwrap_or_default());
                eprintln!("restore {} completed: homeserver {} runs on the data of backup {backup_id}", r.id, r.homeserver_id);
            }
            println!("{}", r.id);
            Ok(())
        }
    }
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
    // Everything matrixhostd creates (database, keys, tokens, tenant files) is private unless
    // it says otherwise.
    // SAFETY: umask(2) only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    // Backtraces are for developers; operators get the error chain.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(err) = runtime.block_on(run(Cli::parse())) {
        eprintln!("matrixhostd: {err:#}");
        std::process::exit(1);
    }
}
