//! Helpers for tests that run real homeservers: start `matrixhostd` with its runtime, wait for
//! statuses, talk to Synapse, and leave nothing behind (processes, mounts, loop devices, users).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Backend, Client, TestServer};

/// Whether this machine can run homeservers: root, loop devices and the Synapse venv. Without
/// them the test is skipped loudly, except in CI, where it fails.
pub fn runtime_available(test: &str) -> bool {
    let python = crate::workspace_root().join(".tools/synapse-venv/bin/python");
    let root = unsafe_geteuid() == 0;
    let loops = Path::new("/dev/loop-control").exists();
    let missing = [(!root, "root"), (!loops, "/dev/loop-control"), (!python.exists(), "the Synapse venv (scripts/setup.sh)")]
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

fn unsafe_geteuid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()))
        .unwrap_or(u32::MAX)
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
    /// Starts with the runtime on, a test clock, a fast reconcile interval and `extra` args.
    pub async fn start(extra: &[&str]) -> RuntimeServer {
        let bin = crate::workspace_bin("matrixhostd");
        let server = TestServer::builder(&bin, Backend::Sqlite)
            .with_runtime()
            .args(["--test-clock", "--homeserver-ports", &port_range()])
            .args(extra.iter().copied())
            .start()
            .await;
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
        self.state_dir.join("volumes/images").join(format!("{id}.img"))
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("volumes/mnt").join(id).join("data")
    }
}

impl Drop for RuntimeServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.as_mut() {
            server.kill();
        }
        cleanup_tenants(&self.state_dir);
    }
}

/// Tests run several `matrixhostd` at once: each gets its own block of homeserver ports.
fn port_range() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::SeqCst)) % 400;
    let start = 20000 + slot * 50;
    format!("{start}-{}", start + 49)
}

/// Kills every process started from `state_dir`, unmounts its volumes, detaches their loop
/// devices and deletes their users, so a failed test leaves nothing behind.
pub fn cleanup_tenants(state_dir: &Path) {
    let needle = state_dir.to_string_lossy().into_owned();
    for pid in pids_matching(&needle) {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    std::thread::sleep(Duration::from_millis(200));
    for mount in mounts_under(state_dir) {
        let _ = std::process::Command::new("umount").args(["-l", &mount]).status();
    }
    let images = state_dir.join("volumes/images");
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

/// Must match the runtime's naming (`server/src/runtime/tenant_user.rs`).
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

/// Synapse processes serving `data_dir`.
pub fn synapse_pids(data_dir: &Path) -> Vec<i32> {
    pids_matching(&data_dir.to_string_lossy()).into_iter().filter(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| String::from_utf8_lossy(&c).contains("synapse.app.homeserver")).unwrap_or(false)
    }).collect()
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
