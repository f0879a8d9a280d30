//! Helpers for the integration and acceptance tests: start the real `matrixhostd` on loopback,
//! each instance with its own state directory (and, on PostgreSQL, its own database), and talk
//! to it over HTTP.
//!
//! ```ignore
//! let server = TestServer::start(bin, Backend::Sqlite).await;
//! let (status, headers, body) = server.client().get("/v1/regions").await;
//! ```
//!
//! * [`TestServer::builder`] adds CLI arguments (`--test-clock`, rate limits, `--config FILE`).
//! * [`TestServer::restart`] stops the server with SIGTERM (asserting a clean exit) and starts it
//!   again on the same state directory and database.
//! * [`both_backends!`] turns one `async fn(Backend)` into a SQLite and a PostgreSQL test.
//! * [`workspace_bin`] builds `matrixhostd` with cargo for tests outside the server package.

use std::fs::{self, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

pub use chrono;
pub use reqwest;
pub use reqwest::header::HeaderMap;
pub use reqwest::{Method, StatusCode};
pub use serde_json::{self, json, Value};

/// Whether the tests run as root (the effective uid, from /proc).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok()))
        == Some(0)
}

/// The URL of the test PostgreSQL server (from `scripts/pg-test.sh`); each server gets a fresh
/// database on it.
pub const POSTGRES_URL_ENV: &str = "MATRIXHOST_TEST_POSTGRES_URL";
/// How long a server may take to answer `/healthz` after it is spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub const LOG_FILE: &str = "matrixhostd.log";
pub const AGENT_LOG_FILE: &str = "matrixhost-agent.log";
/// The control plane's files are in `STATE/api` (see `matrixhost_agent_api::StateLayout`).
pub const ADDR_FILE: &str = "api/matrixhostd.addr";
pub const DEV_TOKEN_FILE: &str = "api/dev-token";
pub const SQLITE_FILE: &str = "api/matrixhost.db";
/// The unprivileged user `matrixhostd` runs as (made by `scripts/setup.sh`).
pub const SERVICE_USER: &str = "matrixhost";
/// How long the agent may take to open its socket.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status, headers and the body parsed as JSON (`Null` when empty, a JSON string
/// when the body is not JSON).
pub type Resp = (StatusCode, HeaderMap, Value);

// ------------------------------------------------------------------ backends --------------

/// Where the server keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite database in the state directory (the default).
    Sqlite,
    /// A fresh database on the server named by `MATRIXHOST_TEST_POSTGRES_URL`.
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The test PostgreSQL URL, if one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL_ENV).ok().filter(|u| !u.trim().is_empty())
}

/// Whether PostgreSQL tests can run. Without `MATRIXHOST_TEST_POSTGRES_URL` this panics under CI
/// (env `CI` set) and otherwise prints a loud skip line and returns false.
pub fn postgres_available(test: &str) -> bool {
    if postgres_url().is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("PostgreSQL tests need {POSTGRES_URL_ENV}; run scripts/test.sh");
    }
    eprintln!(
        "!!!!! SKIPPED {test}: {POSTGRES_URL_ENV} is not set (start one with scripts/pg-test.sh start) !!!!!"
    );
    false
}

/// Generates a SQLite and a PostgreSQL test from one `async fn(Backend)`:
///
/// ```ignore
/// async fn r1_region_must_be_us(backend: Backend) { ... }
/// both_backends!(r1_region_must_be_us);
/// ```
///
/// expands to the module `r1_region_must_be_us` with the tests `sqlite` and `postgres` (so
/// `cargo test r1_` selects both, `cargo test sqlite` all SQLite ones). The PostgreSQL test
/// skips (or, under CI, fails) without `MATRIXHOST_TEST_POSTGRES_URL`. The calling crate needs
/// `tokio` as a (dev-)dependency.
#[macro_export]
macro_rules! both_backends {
    ($test:ident) => {
        $crate::both_backends!($test, $test);
    };
    ($name:ident, $test:ident) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[::tokio::test]
            async fn sqlite() {
                super::$test($crate::Backend::Sqlite).await
            }

            #[::tokio::test]
            async fn postgres() {
                if !$crate::postgres_available(concat!(module_path!(), "::postgres")) {
                    return;
                }
                super::$test($crate::Backend::Postgres).await
            }
        }
    };
}

fn random_hex(len: usize) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    while out.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// A name that is unique across tests and valid as an organization or homeserver name
/// (a lower-case DNS label), e.g. `unique_name("org")` → `org3f9a1c2d`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(8))
}

/// `postgres://u@h:p/db?x` with the database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{prefix}/{name}{query}")
}

fn psql(url: &str, sql: &str) -> std::io::Result<std::process::Output> {
    Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .output()
}

/// Creates a fresh database `mh_<hex>` on the test PostgreSQL server and returns its URL.
pub fn create_postgres_database() -> String {
    let admin = postgres_url().unwrap_or_else(|| {
        panic!("PostgreSQL tests need {POSTGRES_URL_ENV}; run scripts/test.sh")
    });
    let name = format!("mh_{}", random_hex(16));
    let out = psql(&admin, &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("running psql to create a test database: {e}"));
    assert!(
        out.status.success(),
        "CREATE DATABASE {name} on {admin} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    with_database(&admin, &name)
}

fn drop_postgres_database(url: &str) {
    let (Some(admin), Some(name)) = (postgres_url(), url.rsplit('/').next()) else { return };
    let name = name.split('?').next().unwrap_or(name);
    if !name.starts_with("mh_") || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return;
    }
    let _ = psql(&admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

// ----------------------------------------------------------------- binaries ---------------

/// A free loopback port for a helper server the tests start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Waits until something listens on loopback `port` (a helper server starting), at most `limit`.
pub async fn wait_for_port(port: u16, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The workspace root (the parent of this crate).
/// The project's tools (`scripts/setup.sh`): `$MATRIXHOST_TOOLS_DIR` or `<workspace>/.tools`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("MATRIXHOST_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".tools"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        None => workspace_root().join("target"),
    }
}

/// The features test builds have (the test hooks); scripts/test.sh builds with the same, so the
/// build below is a no-op after it.
pub const TEST_FEATURES: &str = "matrixhost-server/test-hooks,matrixhost-agent/test-hooks";

/// The cargo profile of the binaries under test: `dev`, or `bench-hooks` (optimised, hooks kept)
/// for the benchmarks, set through `MATRIXHOST_BIN_PROFILE`.
pub fn bin_profile() -> String {
    std::env::var("MATRIXHOST_BIN_PROFILE").unwrap_or_else(|_| "dev".to_owned())
}

/// Builds the workspace's binaries once per test process, with the test hooks, in
/// [`bin_profile`], and returns the path of `name`.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        // The same command as scripts/test.sh's build (same feature unification), so after it
        // this is a no-op instead of a rebuild of half the dependency tree per test binary.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // `cargo test` gives the test its crate's variables; build scripts that watch them
        // (ring watches CARGO_MANIFEST_DIR) would rebuild on every test run.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"]
                    .contains(&&*key)
            {
                build.env_remove(&*key);
            }
        }
        let status = build
            .args(["build", "--workspace", "--bins", "--profile", &bin_profile(), "--features", TEST_FEATURES])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --workspace --bins --profile {} --features {TEST_FEATURES} failed: {status}", bin_profile());
    });
    let profile = bin_profile();
    let path = target_dir().join(if profile == "dev" { "debug" } else { &profile }).join(name);
    assert!(path.exists(), "{} does not exist after cargo build", path.display());
    path
}

// ------------------------------------------------------------------- server ---------------

/// How to start a [`TestServer`].
#[derive(Debug)]
pub struct ServerBuilder {
    bin: PathBuf,
    backend: Backend,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    state_dir: Option<TempDir>,
    database_url: Option<String>,
    owns_database: bool,
    runtime: bool,
    agent_args: Vec<String>,
}

impl ServerBuilder {
    /// An extra argument for `matrixhost-agent` (with the runtime).
    pub fn agent_arg(mut self, arg: impl Into<String>) -> Self {
        self.agent_args.push(arg.into());
        self
    }

    /// Runs homeservers for real: a `matrixhost-agent` (as root: loop devices, sandboxes,
    /// cgroups) next to `matrixhostd`. Without this the server starts with `--no-runtime`:
    /// homeservers are recorded and stay `provisioning`.
    pub fn with_runtime(mut self) -> Self {
        self.runtime = true;
        self
    }

    /// An extra CLI argument after `serve --dev --listen ... --state-dir ...`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the server process (`RUST_LOG=info` is always set).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Reuse an existing state directory (it is kept alive by the server).
    pub fn state_dir(mut self, dir: TempDir) -> Self {
        self.state_dir = Some(dir);
        self
    }

    /// Reuse an existing PostgreSQL database (not dropped when the server is).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Starts the server and waits for `/healthz`; panics with the server log on failure.
    pub async fn start(self) -> TestServer {
        self.start_with_agent(None).await
    }

    /// Like [`ServerBuilder::start`], keeping an agent that already runs.
    async fn start_with_agent(self, agent: Option<Child>) -> TestServer {
        let ServerBuilder { bin, backend, args, envs, state_dir, mut database_url, mut owns_database, runtime, agent_args } = self;
        let dir =
            state_dir.unwrap_or_else(|| tempfile::Builder::new().prefix("matrixhostd-test.").tempdir().expect("creating a state dir"));
        if backend == Backend::Postgres && database_url.is_none() {
            database_url = Some(create_postgres_database());
            owns_database = true;
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building an HTTP client");
        let mut server = TestServer {
            bin,
            backend,
            args,
            envs,
            dir: Some(dir),
            database_url,
            owns_database,
            runtime,
            agent_args,
            agent: None,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dev_token: String::new(),
            http,
            transcript: Arc::new(Mutex::new(Vec::new())),
        };
        server.agent = agent;
        if server.runtime && server.agent.is_none() {
            server.spawn_agent().await;
        }
        server.spawn_and_wait().await;
        server
    }
}

/// A running `matrixhostd` with its own state directory. Killed (SIGKILL) when dropped; its
/// PostgreSQL database, if the harness made it, is dropped too.
pub struct TestServer {
    bin: PathBuf,
    backend: Backend,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: Option<TempDir>,
    database_url: Option<String>,
    owns_database: bool,
    runtime: bool,
    agent_args: Vec<String>,
    /// The node agent, with the runtime. It outlives restarts of `matrixhostd`.
    agent: Option<Child>,
    child: Option<Child>,
    addr: SocketAddr,
    dev_token: String,
    http: reqwest::Client,
    transcript: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("backend", &self.backend)
            .field("addr", &self.addr)
            .field("state_dir", &self.state_dir())
            .field("database_url", &self.database_url)
            .finish()
    }
}

impl TestServer {
    pub fn builder(bin: &Path, backend: Backend) -> ServerBuilder {
        ServerBuilder {
            bin: bin.to_path_buf(),
            backend,
            args: Vec::new(),
            envs: Vec::new(),
            state_dir: None,
            database_url: None,
            owns_database: false,
            runtime: false,
            agent_args: Vec::new(),
        }
    }

    /// Starts `bin serve --dev` on a fresh state directory (and a fresh database on PostgreSQL).
    pub async fn start(bin: &Path, backend: Backend) -> TestServer {
        Self::builder(bin, backend).start().await
    }

    /// Like [`TestServer::start`], but `None` (after a loud skip line) for PostgreSQL when no
    /// test PostgreSQL is configured outside CI.
    pub async fn try_start(bin: &Path, backend: Backend) -> Option<TestServer> {
        if backend == Backend::Postgres && !postgres_available("TestServer::try_start") {
            return None;
        }
        Some(Self::start(bin, backend).await)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.as_ref().expect("state dir").path()
    }

    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// The token `--dev` wrote to `DIR/dev-token`.
    pub fn dev_token(&self) -> &str {
        &self.dev_token
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.state_dir().join(LOG_FILE)
    }

    /// Everything the server printed so far (all runs, for a restarted server).
    pub fn log(&self) -> String {
        fs::read(self.log_path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Everything the node agent printed so far (the operator's log).
    pub fn agent_log(&self) -> String {
        fs::read(self.state_dir().join(AGENT_LOG_FILE)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The pid of the node agent, with the runtime.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Everything the database holds, as bytes: for SQLite the database files of the state
    /// directory (`matrixhost.db` and its `-wal`/`-shm`/`-journal` siblings), for PostgreSQL a
    /// `pg_dump` of the server's database. Tests search it for secrets that must not be stored.
    pub fn database_bytes(&self) -> Vec<u8> {
        match &self.database_url {
            None => {
                let mut bytes = Vec::new();
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let path = self.state_dir().join(format!("{SQLITE_FILE}{suffix}"));
                    if let Ok(b) = fs::read(&path) {
                        bytes.extend(b);
                    }
                }
                assert!(!bytes.is_empty(), "no SQLite database at {}", self.state_dir().join(SQLITE_FILE).display());
                bytes
            }
            Some(url) => {
                let out = Command::new("pg_dump")
                    .args(["--no-owner", url])
                    .stdin(Stdio::null())
                    .output()
                    .expect("running pg_dump");
                assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
                out.stdout
            }
        }
    }

    /// A client that sends the dev token.
    pub fn client(&self) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base_url(),
            token: Some(self.dev_token.clone()),
            headers: Vec::new(),
            transcript: self.transcript.clone(),
        }
    }

    /// A client that sends `token`.
    pub fn client_with_token(&self, token: &str) -> Client {
        self.client().with_token(token)
    }

    /// Every response body any client of this server received so far, in order.
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.lock().unwrap().clone()
    }

    /// The arguments that point a CLI command at this server's state: `--state-dir DIR`, plus
    /// `--database-url URL` on PostgreSQL.
    pub fn cli_db_args(&self) -> Vec<String> {
        let mut args = vec!["--state-dir".to_owned(), self.state_dir().display().to_string()];
        if let Some(url) = &self.database_url {
            args.push("--database-url".to_owned());
            args.push(url.clone());
        }
        args
    }

    /// Runs `BIN args... <cli_db_args>` and returns its output (whatever the exit status).
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(&self.bin);
        remove_server_env(&mut cmd);
        tokio::process::Command::from(cmd)
            .args(args)
            .args(self.cli_db_args())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", self.bin.display()))
    }

    /// Runs a CLI command and panics unless it exits 0; returns stdout.
    pub async fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "`matrixhostd {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates (if needed) the verified organization `org` with email `org@example.com` and a
    /// token for it; returns the token (the only stdout line starting with `mh_`).
    pub async fn create_token(&self, org: &str) -> String {
        let email = format!("{org}@example.com");
        let stdout = self
            .cli_ok(&["token", "create", "--org", org, "--email", &email, "--create-org", "--verified"])
            .await;
        token_from_stdout(&stdout)
    }

    /// Creates the organization `org` with an unverified email (R15) and a token for it.
    pub async fn create_unverified_token(&self, org: &str) -> String {
        let email = format!("{org}@example.com");
        self.cli_ok(&["org", "create", org, "--email", &email]).await;
        let stdout = self.cli_ok(&["token", "create", "--org", org]).await;
        token_from_stdout(&stdout)
    }

    /// Sends SIGTERM and waits (up to 10 s) for the process to exit; returns its exit status.
    /// Panics (after SIGKILL) if it does not exit in time.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for matrixhostd") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "matrixhostd did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM, asserts a graceful exit (status 0 within 10 s), and starts
    /// it again with the same arguments on the same state directory and database.
    pub async fn restart(mut self) -> TestServer {
        let status = self.stop();
        assert!(
            status.success(),
            "matrixhostd did not shut down gracefully on SIGTERM: {status}\n--- log ---\n{}",
            self.log()
        );
        self.relaunch().await
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again after [`TestServer::kill`], on the same state and database.
    pub async fn restart_after_kill(mut self) -> TestServer {
        self.kill();
        self.relaunch().await
    }

    async fn relaunch(mut self) -> TestServer {
        let mut builder = TestServer::builder(&self.bin, self.backend)
            .args(self.args.clone())
            .state_dir(self.dir.take().expect("state dir"));
        builder.envs = self.envs.clone();
        builder.runtime = self.runtime;
        builder.agent_args = self.agent_args.clone();
        if let Some(url) = self.database_url.take() {
            builder = builder.database_url(url);
            builder.owns_database = std::mem::replace(&mut self.owns_database, false);
        }
        let agent = self.agent.take();
        let mut server = builder.start_with_agent(agent).await;
        server.transcript = self.transcript.clone();
        server
    }

    /// Starts `matrixhost-agent` as root on the state directory and waits for its socket.
    async fn spawn_agent(&mut self) {
        let dir = self.state_dir().to_path_buf();
        let socket = dir.join("run/agent.sock");
        let log = OpenOptions::new().create(true).append(true).open(dir.join(AGENT_LOG_FILE)).expect("opening the agent log");
        let agent_bin = self.bin.with_file_name("matrixhost-agent");
        let mut cmd = Command::new(&agent_bin);
        cmd.args(["--state-dir"]).arg(&dir).args(["--api-user", SERVICE_USER]).args(&self.agent_args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MATRIXHOST_AGENT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        self.agent = Some(cmd.spawn().unwrap_or_else(|e| panic!("spawning {}: {e}", agent_bin.display())));
        let deadline = Instant::now() + AGENT_START_TIMEOUT;
        while !socket.exists() {
            if let Some(status) = self.agent.as_mut().and_then(|a| a.try_wait().ok().flatten()) {
                self.agent = None;
                panic!("matrixhost-agent exited during start-up ({status})\n--- agent log ---\n{}", self.agent_log());
            }
            assert!(
                Instant::now() < deadline,
                "matrixhost-agent did not open its socket within {AGENT_START_TIMEOUT:?}\n--- agent log ---\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the node agent (SIGKILL, as a crash would); homeservers keep running.
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    /// Starts the node agent again after [`TestServer::kill_agent`].
    pub async fn restart_agent(&mut self) {
        let _ = fs::remove_file(self.state_dir().join("run/agent.sock"));
        self.spawn_agent().await;
    }

    async fn spawn_and_wait(&mut self) {
        let dir = self.state_dir().to_path_buf();
        let _ = fs::remove_file(dir.join(ADDR_FILE));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))
            .expect("opening the log file");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0", "--state-dir"]).arg(&dir);
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        remove_server_env(&mut cmd);
        if !self.runtime {
            cmd.arg("--no-runtime");
        }
        cmd.args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log file"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin.display()));
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "matrixhostd exited during start-up ({status}); args {:?}\n--- log ---\n{}",
                    self.args,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!(
                    "matrixhostd did not become healthy within {START_TIMEOUT:?} (addr file {}, dev token {})\n--- log ---\n{}",
                    if dir.join(ADDR_FILE).exists() { "present" } else { "missing" },
                    if dir.join(DEV_TOKEN_FILE).exists() { "present" } else { "missing" },
                    self.log()
                );
            }
            if let Some(addr) = fs::read_to_string(dir.join(ADDR_FILE)).ok().and_then(|s| s.trim().parse().ok()) {
                let healthy = self
                    .http
                    .get(format!("http://{addr}/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                let token = fs::read_to_string(dir.join(DEV_TOKEN_FILE)).unwrap_or_default();
                if healthy && !token.trim().is_empty() {
                    self.addr = addr;
                    self.dev_token = token.trim().to_owned();
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_agent();
        if self.owns_database {
            if let Some(url) = &self.database_url {
                drop_postgres_database(url);
            }
        }
    }
}

/// The server reads `MATRIXHOSTD_*` variables as configuration: keep the caller's environment
/// out of the tests.
fn remove_server_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MATRIXHOSTD_") {
            cmd.env_remove(key);
        }
    }
}

fn token_from_stdout(stdout: &str) -> String {
    let tokens: Vec<&str> = stdout.lines().map(str::trim).filter(|l| l.starts_with("mh_")).collect();
    assert_eq!(tokens.len(), 1, "expected exactly one `mh_...` line on stdout, got:\n{stdout}");
    tokens[0].to_owned()
}

// ------------------------------------------------------------------- client ---------------

/// A small JSON client. Builder-style methods return a modified copy, e.g.
/// `client.idempotency_key("k").post(...)`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    transcript: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("headers", &self.headers).finish()
    }
}

impl Client {
    /// Sends `Authorization: Bearer <token>` instead.
    pub fn with_token(&self, token: &str) -> Client {
        Client { token: Some(token.to_owned()), ..self.clone() }
    }

    /// Sends no `Authorization` header.
    pub fn without_token(&self) -> Client {
        Client { token: None, ..self.clone() }
    }

    /// Adds (or replaces) a header on every request of the returned client.
    pub fn header(&self, name: &str, value: &str) -> Client {
        let mut c = self.clone();
        c.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        c.headers.push((name.to_owned(), value.to_owned()));
        c
    }

    pub fn idempotency_key(&self, key: &str) -> Client {
        self.header("Idempotency-Key", key)
    }

    /// `If-Match` exactly as given (e.g. `"\"3\""` for the ETag form).
    pub fn if_match(&self, value: &str) -> Client {
        self.header("If-Match", value)
    }

    /// `If-Match: "<version>"`.
    pub fn if_version(&self, version: i64) -> Client {
        self.if_match(&format!("\"{version}\""))
    }

    pub fn request_id(&self, id: &str) -> Client {
        self.header("x-request-id", id)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(("application/json", body.to_string().into_bytes()))).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, Some(("application/json", body.to_string().into_bytes()))).await
    }

    /// Sends a body as given (e.g. malformed JSON).
    pub async fn send_raw(&self, method: Method, path: &str, content_type: &str, body: &[u8]) -> Resp {
        self.send(method, path, Some((content_type, body.to_vec()))).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Resp {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in &self.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.transcript.lock().unwrap().push(text.clone());
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(text))
        };
        (status, headers, body)
    }
}

// ----------------------------------------------------------------- assertions -------------

fn show(resp: &Resp) -> String {
    format!("status {} body {}", resp.0, resp.2)
}

/// Panics unless the status is `status`; returns the body.
#[track_caller]
pub fn expect_status(resp: &Resp, status: u16) -> Value {
    assert_eq!(resp.0.as_u16(), status, "expected {status}, got {}", show(resp));
    resp.2.clone()
}

/// The `x-request-id` response header.
pub fn request_id_header(headers: &HeaderMap) -> Option<String> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The `ETag` response header.
pub fn etag(headers: &HeaderMap) -> Option<String> {
    headers.get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Checks the `ApiError` shape (code, message, field present and null or a string, request_id
/// equal to the `x-request-id` header) and the status; `code`/`field` are checked when given.
/// Returns the message.
#[track_caller]
pub fn assert_api_error(resp: &Resp, status: u16, code: Option<&str>, field: Option<&str>) -> String {
    let (st, headers, body) = resp;
    assert_eq!(st.as_u16(), status, "expected error status {status}, got {}", show(resp));
    let obj = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {}", show(resp)));
    let got_code = obj.get("code").and_then(Value::as_str).unwrap_or_else(|| panic!("error without code: {}", show(resp)));
    assert!(!got_code.is_empty(), "empty error code: {}", show(resp));
    let message = obj.get("message").and_then(Value::as_str).unwrap_or_else(|| panic!("error without message: {}", show(resp)));
    assert!(!message.is_empty(), "empty error message: {}", show(resp));
    let got_field = obj.get("field").unwrap_or_else(|| panic!("error without `field` (should be null or a string): {}", show(resp)));
    assert!(got_field.is_null() || got_field.is_string(), "`field` is neither null nor a string: {}", show(resp));
    let rid = obj.get("request_id").and_then(Value::as_str).unwrap_or_else(|| panic!("error without request_id: {}", show(resp)));
    assert!(!rid.is_empty(), "empty request_id: {}", show(resp));
    assert_eq!(
        request_id_header(headers).as_deref(),
        Some(rid),
        "x-request-id header differs from the body's request_id: {}",
        show(resp)
    );
    if let Some(code) = code {
        assert_eq!(got_code, code, "unexpected error code: {}", show(resp));
    }
    if let Some(field) = field {
        assert_eq!(got_field.as_str(), Some(field), "unexpected error field: {}", show(resp));
    }
    message.to_owned()
}

/// A 422 naming `field`; returns the message.
#[track_caller]
pub fn assert_invalid(resp: &Resp, field: &str) -> String {
    assert_api_error(resp, 422, None, Some(field))
}

/// A 400 or 422 that names `field` in `field` (also as the last part of a JSON path) or in the
/// message; returns the message.
#[track_caller]
pub fn assert_rejects_field(resp: &Resp, field: &str) -> String {
    let status = resp.0.as_u16();
    assert!(status == 400 || status == 422, "expected 400 or 422 naming `{field}`, got {}", show(resp));
    let message = assert_api_error(resp, status, None, None);
    let got = resp.2.get("field").and_then(Value::as_str).unwrap_or("");
    let named = got == field || got.ends_with(&format!(".{field}")) || message.contains(field);
    assert!(named, "the error does not name `{field}`: {}", show(resp));
    message
}

/// Parses an RFC 3339 timestamp field.
#[track_caller]
pub fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = value.as_str().unwrap_or_else(|| panic!("not a timestamp string: {value}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("`{s}` is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// Removes ANSI escape sequences (colours) from log text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Percent-encodes a query-string value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_is_replaced() {
        assert_eq!(with_database("postgres://p@127.0.0.1:5/matrixhost_test", "mh_1"), "postgres://p@127.0.0.1:5/mh_1");
        assert_eq!(with_database("postgres://p@h:5/db?sslmode=disable", "mh_1"), "postgres://p@h:5/mh_1?sslmode=disable");
        assert_eq!(with_database("postgres://p@h:5", "mh_1"), "postgres://p@h:5/mh_1");
    }

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique_name("org");
        let b = unique_name("org");
        assert_ne!(a, b);
        assert!(matrixhost_api::OrgName::parse(&a).is_ok(), "{a}");
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2mrequest_id\u{1b}[0m\u{1b}[2m=\u{1b}[0mabc"), "request_id=abc");
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("Alice@X.com"), "Alice%40X.com");
    }
}

/// Whether `needle` occurs anywhere in `haystack` (for searching database bytes and logs).
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub mod backups;
pub mod console;
pub mod mail;
pub mod modules;
pub mod runtime;
pub mod stripe;
pub mod terraform;
