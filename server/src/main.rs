//! `matrixhostd`: `serve` runs the control plane; the other commands are for the operator.

use clap::{Parser, Subcommand};
use matrixhost_api::{Email, OrgName};
use matrixhost_server::config::{ServeArgs, Settings, StoreArgs};
use matrixhost_server::{auth, db, operator, App};

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
