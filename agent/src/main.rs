//! `matrixhost-agent`: the privileged node agent. Run it as root, next to `matrixhostd serve`
//! on the same state directory.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use matrixhost_agent::agent::Agent;
use matrixhost_agent::cgroup::Cgroups;
use matrixhost_agent::keys::Keys;
use matrixhost_agent::sandbox::{self, Sandbox};
use matrixhost_agent::store::DirStore;
use matrixhost_agent::supervisor::Supervisor;
use matrixhost_agent::volume::VolumeManager;
use matrixhost_agent::{api_ids, preflight, prepare_layout, server, AgentSettings};
use matrixhost_agent_api::StateLayout;

#[derive(Parser, Debug)]
#[command(name = "matrixhost-agent", version, about = "The matrixhost node agent: volumes, sandboxes, cgroups and backups (runs as root)")]
struct Cli {
    /// The state directory shared with `matrixhostd serve`.
    #[arg(long, env = "MATRIXHOST_AGENT_STATE_DIR", default_value = "/var/lib/matrixhostd")]
    state_dir: PathBuf,
    /// The control plane's system user: the only caller the agent answers (besides root).
    #[arg(long, env = "MATRIXHOST_AGENT_API_USER", default_value = "matrixhost")]
    api_user: String,
    /// The Synapse virtualenv, made from the system's /usr/bin/python3.
    #[arg(long, env = "MATRIXHOST_AGENT_SYNAPSE_VENV")]
    synapse_venv: Option<PathBuf>,
    /// Where encrypted backup archives are kept (default STATE_DIR/agent/backups).
    #[arg(long, env = "MATRIXHOST_AGENT_BACKUP_DIR")]
    backup_dir: Option<PathBuf>,
    #[arg(long, env = "MATRIXHOST_AGENT_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// The cgroup under which every homeserver gets its own.
    #[arg(long, env = "MATRIXHOST_AGENT_CGROUP_PARENT", default_value = "matrixhost")]
    cgroup_parent: String,
    /// R5: the process and thread limit of every homeserver.
    #[arg(long, env = "MATRIXHOST_AGENT_PIDS_MAX", default_value_t = 512)]
    pids_max: u32,
    /// Check the host and exit (0 when it is ready).
    #[arg(long)]
    check: bool,
    /// `bubblewrap`; test builds also accept `none` (the sandbox benchmark's baseline).
    #[arg(long, default_value = "bubblewrap", hide = true)]
    sandbox: String,
    /// Test hook (test builds only): pause every backup this many seconds once its database is
    /// in the archive, so a test can interrupt it.
    #[arg(long, hide = true)]
    test_backup_delay_seconds: Option<u64>,
}

/// The project's Synapse venv next to the binary's checkout, else the packaged location.
fn default_venv() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| exe.ancestors().map(|d| d.join(".tools/synapse-venv")).find(|v| v.join("bin/python").exists()));
    from_exe.unwrap_or_else(|| PathBuf::from("/opt/matrixhost/synapse-venv"))
}

fn settings(cli: &Cli) -> anyhow::Result<AgentSettings> {
    let layout = StateLayout::new(&cli.state_dir);
    let backup_pause = match cli.test_backup_delay_seconds {
        None => None,
        #[cfg(feature = "test-hooks")]
        Some(s) => Some(std::time::Duration::from_secs(s)),
        #[cfg(not(feature = "test-hooks"))]
        Some(_) => anyhow::bail!("--test-backup-delay-seconds is a test hook; this build has none"),
    };
    Ok(AgentSettings {
        backup_dir: cli.backup_dir.clone().unwrap_or_else(|| layout.agent_dir().join("backups")),
        layout,
        api_user: cli.api_user.clone(),
        venv: cli.synapse_venv.clone().unwrap_or_else(default_venv),
        cgroup_root: cli.cgroup_root.clone(),
        cgroup_parent: cli.cgroup_parent.clone(),
        pids_max: cli.pids_max,
        sandbox: sandbox::Kind::parse(&cli.sandbox)?,
        backup_pause,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = settings(&cli)?;
    let problems = preflight::check(&settings);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        anyhow::bail!("{} problem(s) on this host; fix them and start again", problems.len());
    }
    if cli.check {
        eprintln!("this host is ready for matrixhost-agent");
        return Ok(());
    }
    prepare_layout(&settings)?;
    let (api_uid, api_gid) = api_ids(&settings.api_user)?;
    let layout = settings.layout.clone();
    let keys = Keys::open(&layout.agent_dir().join("master.key"), layout.agent_dir().join("keys"))?;
    let volumes = VolumeManager::new(layout.agent_dir().join("volumes"));
    let cgroups = Cgroups::detect(&settings.cgroup_root, &settings.cgroup_parent)?;
    cgroups.prepare()?;
    let sandbox = Sandbox::new(settings.sandbox, settings.venv.clone())?;
    let supervisor = Supervisor::new(layout.clone(), sandbox, cgroups, settings.pids_max, api_gid)?;
    let store = DirStore::open(&settings.backup_dir)?;
    let agent = Arc::new(Agent::new(&settings, keys, volumes, supervisor, store));
    let listener = server::bind(&layout.agent_socket(), api_uid, api_gid)?;
    tracing::info!(
        socket = %layout.agent_socket().display(),
        api_user = %settings.api_user,
        sandbox = settings.sandbox.as_str(),
        cgroups = agent.supervisor.cgroups.version().as_str(),
        backups = %settings.backup_dir.display(),
        "matrixhost-agent ready"
    );
    tokio::select! {
        () = server::serve(agent, listener, api_uid) => Ok(()),
        () = shutdown_signal() => {
            // Homeservers keep running: the data plane outlives the agent, which finds them
            // again in their cgroups when it starts.
            tracing::info!("matrixhost-agent stopped; homeservers keep running");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() {
    // Everything the agent creates is private unless it says otherwise.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Backtraces are for developers; operators get the error chain.
    std::env::remove_var("RUST_BACKTRACE");
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).with_target(false).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime");
    let result = runtime.and_then(|rt| rt.block_on(run(Cli::parse())));
    if let Err(err) = result {
        eprintln!("matrixhost-agent: {err:#}");
        std::process::exit(1);
    }
}
