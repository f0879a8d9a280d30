//! Helpers for tests that run real homeservers: start `matrixhostd` with its runtime, wait for
//! statuses, talk to Synapse, and leave nothing behind (processes, mounts, loop devices, users).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Backend, Client, TestServer};

/// Whether this machine can run homeservers: root, loop devices, bubblewrap, the service user
/// and the Synapse venv. Without them the test is skipped loudly, except in CI, where it fails.
pub fn runtime_available(test: &str) -> bool {
    let python = crate::workspace_root().join(".tools/synapse-venv/bin/python");
    let root = crate::running_as_root();
    let loops = Path::new("/dev/loop-control").exists();
    let bwrap = Path::new("/usr/bin/bwrap").exists();
    let user = std::fs::read_to_string("/etc/passwd").unwrap_or_default().lines().any(|l| l.starts_with(&format!("{}:", crate::SERVICE_USER)));
    let missing = [
        (!root, "root"),
        (!loops, "/dev/loop-control"),
        (!bwrap, "bubblewrap (scripts/setup.sh)"),
        (!user, "the matrixhost user (scripts/setup.sh)"),
        (!python.exists(), "the Synapse venv (scripts/setup.sh)"),
    ]
    .into_iter()
    .filter_map(|(missing, what)| missing.then_some(what))
    .collect::<Vec<_>>();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: homeserver tests need {}", missing.join(", "));
    }
    eprintln!("SKIPPED {test}: homeserver tests need {}", missing.join(", "));
    false
}

/// A `matrixhostd` that really runs homeservers. Cleans up every tenant resource when dropped.
pub struct RuntimeServer {
    server: Option<TestServer>,
    state_dir: PathBuf,
}

impl std::ops::Deref for RuntimeServer {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        self.server.as_ref().expect("the server is running")
    }
}

impl std::ops::DerefMut for RuntimeServer {
    fn deref_mut(&mut self) -> &mut TestServer {
        self.server.as_mut().expect("the server is running")
    }
}

impl RuntimeServer {
    /// Starts the agent and `matrixhostd` with the runtime on, a test clock and `extra` args for
    /// `matrixhostd`.
    pub async fn start(extra: &[&str]) -> RuntimeServer {
        Self::start_with(extra, &[]).await
    }

    /// Like [`RuntimeServer::start`], with extra arguments for the agent too.
    pub async fn start_with(extra: &[&str], agent_extra: &[&str]) -> RuntimeServer {
        Self::start_in(None, extra, agent_extra).await
    }

    /// Like [`RuntimeServer::start_with`], on the given state directory.
    pub async fn start_in(state_dir: Option<tempfile::TempDir>, extra: &[&str], agent_extra: &[&str]) -> RuntimeServer {
        let bin = crate::workspace_bin("matrixhostd");
        let mut builder = TestServer::builder(&bin, Backend::Sqlite).with_runtime().args(["--test-clock", "--homeserver-ports", &port_range()]).args(extra.iter().copied());
        for a in agent_extra {
            builder = builder.agent_arg(*a);
        }
        if let Some(dir) = state_dir {
            builder = builder.state_dir(dir);
        }
        let server = builder.start().await;
        let state_dir = server.state_dir().to_owned();
        RuntimeServer { server: Some(server), state_dir }
    }

    /// Restarts on the same state after a SIGKILL (the homeservers keep running meanwhile).
    pub async fn kill_and_restart(mut self) -> RuntimeServer {
        let server = self.server.take().expect("the server is running");
        self.server = Some(server.restart_after_kill().await);
        self
    }

    pub fn image_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("agent/volumes/images").join(format!("{id}.img"))
    }

    /// The homeserver's data directory on the host (root's view; the tenant sees `/data`).
    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("agent/volumes/mnt").join(id).join("data")
    }

    /// The agent's master key file.
    pub fn master_key_path(&self) -> PathBuf {
        self.state_dir.join("agent/master.key")
    }

    /// Where the agent keeps backup archives.
    pub fn backup_dir(&self) -> PathBuf {
        self.state_dir.join("agent/backups")
    }
}

impl Drop for RuntimeServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.as_mut() {
            server.kill();
            server.kill_agent();
            if std::thread::panicking() {
                let tail = |text: String| text.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                eprintln!("--- matrixhost-agent log (tail) ---\n{}", tail(server.agent_log()));
                eprintln!("--- matrixhostd log (tail) ---\n{}", tail(server.log()));
            }
        }
        cleanup_tenants(&self.state_dir);
    }
}

/// Writes a config file into `dir` whose catalog has one available US region and `plans`
/// (`[[catalog.plans]]` tables); returns its path, for `--config`.
pub fn catalog_config(dir: &Path, plans: &str) -> String {
    let path = dir.join("catalog.toml");
    let header = "[catalog]\nterms_version = \"test-1\"\nregions = [{ code = \"us-east-1\", name = \"US East\", country = \"US\", available = true }]\n";
    std::fs::write(&path, format!("{header}{plans}")).unwrap();
    path.to_string_lossy().into_owned()
}

/// Tests run several `matrixhostd` at once: each gets its own block of homeserver ports.
fn port_range() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::SeqCst)) % 400;
    let start = 20000 + slot * 50;
    format!("{start}-{}", start + 49)
}

/// Kills every process started from `state_dir` (and everything in its homeservers' cgroups),
/// unmounts its volumes, detaches their loop devices, removes the cgroups and deletes the
/// users, so a failed test leaves nothing behind.
pub fn cleanup_tenants(state_dir: &Path) {
    let needle = state_dir.to_string_lossy().into_owned();
    for pid in pids_matching(&needle) {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let images = state_dir.join("agent/volumes/images");
    let ids: Vec<String> = std::fs::read_dir(&images).into_iter().flatten().flatten().filter_map(|e| e.path().file_stem().and_then(|s| s.to_str()).map(str::to_owned)).collect();
    for id in &ids {
        for pid in cgroup_pids(id) {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut mounts = mounts_under(state_dir);
    // Where matrixhostd binds its directory for SQLite when its parents are private.
    if let Ok(api) = std::fs::metadata(state_dir.join("api")) {
        use std::os::unix::fs::MetadataExt;
        mounts.extend(mounts_under(&Path::new("/run/matrixhostd").join(format!("{:x}-{:x}", api.dev(), api.ino()))));
    }
    for mount in mounts {
        let _ = std::process::Command::new("umount").args(["-l", &mount]).status();
    }
    for id in &ids {
        remove_cgroups(id);
    }
    for entry in std::fs::read_dir(&images).into_iter().flatten().flatten() {
        let image = entry.path();
        let out = std::process::Command::new("losetup").args(["-j"]).arg(&image).output();
        if let Ok(out) = out {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(dev) = line.split(':').next() {
                    let _ = std::process::Command::new("losetup").args(["-d", dev]).status();
                }
            }
        }
        if let Some(id) = image.file_stem().and_then(|s| s.to_str()) {
            let user = tenant_user_name(id);
            let _ = std::process::Command::new("pkill").args(["-KILL", "-u", &user]).status();
            let _ = std::process::Command::new("userdel").arg(&user).output();
            let _ = std::process::Command::new("groupdel").arg(&user).output();
        }
    }
}

/// Must match the agent's naming (`agent/src/tenant.rs`).
pub fn tenant_user_name(homeserver_id: &str) -> String {
    let tail: String = homeserver_id.chars().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
    format!("mh-{tail}")
}

/// Pids whose command line mentions `needle`.
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The homeserver's cgroup leaf holding its sandbox (cgroup v1 or v2), as the agent lays it out
/// (`agent/src/cgroup.rs`, parent `matrixhost`).
pub fn cgroup_dir(homeserver_id: &str, controller: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join("matrixhost").join(homeserver_id)
    } else {
        root.join(controller).join("matrixhost").join(homeserver_id)
    }
}

/// Every process in the homeserver's cgroup (its sandbox and helpers).
pub fn cgroup_pids(homeserver_id: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for leaf in ["synapse", "helpers"] {
        let file = cgroup_dir(homeserver_id, "pids").join(leaf).join("cgroup.procs");
        pids.extend(std::fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    pids
}

fn remove_cgroups(homeserver_id: &str) {
    for controller in ["memory", "cpu", "pids", "freezer", ""] {
        let dir = if controller.is_empty() { PathBuf::from("/sys/fs/cgroup/matrixhost").join(homeserver_id) } else { cgroup_dir(homeserver_id, controller) };
        for leaf in ["synapse", "helpers"] {
            let _ = std::fs::remove_dir(dir.join(leaf));
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// The homeserver's Synapse: the Python process in its cgroup (its pid on the host). The
/// sandbox's own processes (bubblewrap, root's) carry the same command line and are left out.
pub fn synapse_pids(homeserver_id: &str) -> Vec<i32> {
    cgroup_pids(homeserver_id)
        .into_iter()
        .filter(|pid| process_uid(*pid).is_some_and(|uid| uid != 0))
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| String::from_utf8_lossy(&c).contains("synapse.app.homeserver")).unwrap_or(false))
        .collect()
}

/// The uid a process runs as.
pub fn process_uid(pid: i32) -> Option<u32> {
    status_field(pid, "Uid:")
}

/// The gid a process runs as.
pub fn process_gid(pid: i32) -> Option<u32> {
    status_field(pid, "Gid:")
}

fn status_field(pid: i32, key: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// `cgroup.procs` of the homeserver's `synapse` leaf, in every hierarchy it has: where a
/// process its Synapse started would be.
fn synapse_procs_files(homeserver_id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join("matrixhost").join(homeserver_id).join("synapse/cgroup.procs")];
    }
    ["memory", "cpu", "pids", "freezer"].iter().map(|c| cgroup_dir(homeserver_id, c).join("synapse/cgroup.procs")).filter(|f| f.exists()).collect()
}

/// Runs `script` (with `sh -c`) as a compromised homeserver would: inside its sandbox (the
/// mount, PID, IPC, UTS and network namespaces of its running Synapse), in its cgroup, as its
/// uid and gid with no supplementary groups and no capabilities. What a tenant who took over
/// its Synapse could do, this can; nothing more. Paths are the sandbox's (`/data`, ...).
pub fn as_tenant(homeserver_id: &str, script: &str) -> std::process::Output {
    let pid = *synapse_pids(homeserver_id).first().unwrap_or_else(|| panic!("homeserver {homeserver_id} has no running Synapse"));
    let (uid, gid) = (process_uid(pid).expect("uid"), process_gid(pid).expect("gid"));
    let files = synapse_procs_files(homeserver_id);
    // The outer shell (root, on the host) joins the cgroup, then becomes the tenant inside the
    // sandbox; nsenter forks into the PID namespace.
    let join = r#"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 97; shift; n=$((n-1)); done; exec "$@""#;
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", join, "sh", &files.len().to_string()]).args(&files);
    cmd.args(["nsenter", "--target", &pid.to_string(), "--mount", "--pid", "--ipc", "--uts", "--net", "--root", "--wd"]);
    cmd.args(["--setuid", &uid.to_string(), "--setgid", &gid.to_string(), "--", "/bin/sh", "-c", script]);
    cmd.env_clear().env("PATH", "/usr/bin:/bin").env("HOME", "/data").stdin(std::process::Stdio::null());
    cmd.output().expect("running nsenter")
}

pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// Polls the homeserver until `pred` holds, failing with its last state.
pub async fn wait_for(client: &Client, id: &str, what: &str, timeout: Duration, pred: impl Fn(&crate::Resp) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let resp = client.get(&format!("/v1/homeservers/{id}")).await;
        if pred(&resp) {
            return resp.2;
        }
        if resp.2["status"] == "failed" && what != "failed" {
            panic!("homeserver {id} failed instead of becoming {what}: {}", resp.2["status_reason"]);
        }
        if Instant::now() > deadline {
            panic!("homeserver {id} did not become {what} within {timeout:?}; last: {} {}", resp.0, resp.2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn wait_status(client: &Client, id: &str, status: &str) -> Value {
    wait_for(client, id, status, Duration::from_secs(120), |r| r.0.as_u16() == 200 && r.2["status"] == status).await
}

/// A billing plan and a homeserver with `settings` merged over sensible defaults; returns the
/// homeserver as created.
pub async fn create_homeserver(client: &Client, plan: &str, name: &str, settings: Value) -> Value {
    let bp = client.post("/v1/billing-plans", &json!({"plan": plan})).await;
    let bp = crate::expect_status(&bp, 201);
    let mut body = json!({
        "name": name,
        "region": "us-east-1",
        "billing_plan_id": bp["id"],
        "volume": {"size_gb": 1, "encrypted": true},
        "data_controller": {"entity_name": "Acme Corp", "admin_email": "dpo@acme.example"}
    });
    for (k, v) in settings.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let created = client.post("/v1/homeservers", &body).await;
    crate::expect_status(&created, 201)
}

/// A plain HTTP Matrix client for one homeserver.
#[derive(Clone)]
pub struct Matrix {
    pub base: String,
    http: reqwest::Client,
}

impl Matrix {
    pub fn new(client_url: &str) -> Matrix {
        Matrix { base: client_url.trim_end_matches('/').to_owned(), http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap() }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        // While Synapse restarts (a config change) the port refuses; callers retry on 0.
        let Ok(resp) = req.send().await else { return (0, Value::Null) };
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
        self.call(reqwest::Method::POST, "/_matrix/client/v3/login", None, Some(body)).await
    }

    /// Open registration through the user-interactive auth stages, as a client does: the
    /// privacy notice's terms (R19), then the dummy stage.
    pub async fn register(&self, user: &str, password: &str) -> (u16, Value) {
        let mut resp = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(json!({"username": user, "password": password}))).await;
        for _ in 0..4 {
            if resp.0 != 401 {
                return resp;
            }
            let session = resp.1["session"].clone();
            let completed: Vec<Value> = resp.1["completed"].as_array().cloned().unwrap_or_default();
            let Some(stage) = resp.1["flows"][0]["stages"].as_array().and_then(|s| s.iter().find(|s| !completed.contains(s)).cloned()) else {
                return resp;
            };
            let body = json!({"username": user, "password": password, "auth": {"type": stage, "session": session}});
            resp = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(body)).await;
        }
        resp
    }

    /// Accepts the privacy notice at `consent_uri` (from an M_CONSENT_NOT_GIVEN error), as a
    /// user would through the form (R19).
    pub async fn accept_consent(&self, consent_uri: &str) {
        let page = self.http.get(consent_uri).send().await.expect("consent page").text().await.unwrap();
        let field = |name: &str| -> String {
            let marker = format!("name=\"{name}\" value=\"");
            let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} field in the consent form: {page}")) + marker.len();
            page[start..start + page[start..].find('"').unwrap()].to_owned()
        };
        let form = [("v", field("v")), ("u", field("u")), ("h", field("h"))];
        let resp = self.http.post(format!("{}/_matrix/consent", self.base)).form(&form).send().await.expect("consent post");
        assert!(resp.status().is_success(), "accepting the notice failed: {}", resp.status());
    }
}
