//! A compromised tenant (R3, R5, R12). Each test takes over a homeserver the way an attacker who
//! broke into its Synapse would (`runtime::as_tenant`: its namespaces, its cgroup, its uid, no
//! capabilities) and attacks the platform and another tenant through everything the platform
//! touches: files it reads or writes, its sockets, its limits. Throughout, the other tenant keeps
//! running, and none of the platform's secrets or the other tenant's data shows up anywhere: not
//! in API answers, not in the logs, not in files.
//!
//! They run the real `matrixhost-agent`, the real `matrixhostd` and real Synapse homeservers, and
//! need root, loop devices, bubblewrap and the Synapse venv (`scripts/setup.sh`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use matrixhost_tests::backups::{archive_path, partial_archives, restore, take_backup, try_backup};
use matrixhost_tests::runtime::{self, as_tenant, create_homeserver, runtime_available, wait_status, Matrix, RuntimeServer};
use matrixhost_tests::{expect_status, json, Client, Value};
use reqwest::Method;

/// Small limits so the attacks reach them quickly: 512 MiB, a quarter of a CPU, 5 GiB. The
/// larger plan has the same MAU (so the same Synapse config) and more CPU and memory.
fn plan_config(dir: &Path) -> String {
    runtime::catalog_config(
        dir,
        r#"
[[catalog.plans]]
tier = "small"
name = "Small"
mau = 10
price_per_mau_cents = 100
support_tier = "best_effort"
e2ee_can_be_disabled = true
limits = { cpu_millicores = 250, memory_mb = 512, storage_gb = 5 }
[[catalog.plans]]
tier = "large"
name = "Large"
mau = 10
price_per_mau_cents = 300
support_tier = "prioritised"
e2ee_can_be_disabled = true
limits = { cpu_millicores = 1000, memory_mb = 1024, storage_gb = 10 }
"#,
    )
}

/// An attacker (A) and a victim (B), both running. A has federation, so the host's network; B
/// has none. B keeps a secret in its data directory.
struct Tenants {
    server: RuntimeServer,
    _config: tempfile::TempDir,
    client: Client,
    a: String,
    b: String,
    b_url: String,
    b_server_name: String,
    b_secret: String,
}

async fn two_tenants(name: &str) -> Tenants {
    let config = tempfile::tempdir().unwrap();
    let path = plan_config(config.path());
    let server = RuntimeServer::start(&["--config", &path]).await;
    let client = server.client();
    let a = create_homeserver(&client, "small", &format!("{name}-a"), json!({"federation_enabled": true})).await;
    let b = create_homeserver(&client, "small", &format!("{name}-b"), json!({"federation_enabled": false})).await;
    let (a, b) = (a["id"].as_str().unwrap().to_owned(), b["id"].as_str().unwrap().to_owned());
    wait_status(&client, &a, "running").await;
    let rb = wait_status(&client, &b, "running").await;
    let b_secret = format!("SECRET-OF-B-{}", matrixhost_tests::unique_name("x"));
    let out = as_tenant(&b, &format!("echo {b_secret} > /data/secret-of-b"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Tenants {
        b_url: rb["client_url"].as_str().unwrap().to_owned(),
        b_server_name: rb["server_name"].as_str().unwrap().to_owned(),
        server,
        _config: config,
        client,
        a,
        b,
        b_secret,
    }
}

impl Tenants {
    /// What must never leak: the agent's master key, the control plane's secrets key, B's
    /// Synapse secrets and B's data.
    fn secrets(&self) -> Vec<String> {
        let state = self.server.state_dir();
        let mut secrets = vec![
            std::fs::read_to_string(self.server.master_key_path()).unwrap().trim().to_owned(),
            std::fs::read_to_string(state.join("api/secrets.key")).unwrap().trim().to_owned(),
            self.b_secret.clone(),
        ];
        let config = std::fs::read_to_string(state.join(format!("agent/config/{}/homeserver.yaml", self.b))).unwrap();
        for key in ["registration_shared_secret", "macaroon_secret_key", "form_secret"] {
            let value = config.split(&format!("\"{key}\": \"")).nth(1).and_then(|r| r.split('"').next()).unwrap();
            secrets.push(value.to_owned());
        }
        assert!(secrets.iter().all(|s| s.len() >= 20), "{secrets:?}");
        secrets
    }

    /// B still runs the same Synapse and answers through the ingress.
    async fn assert_victim_unharmed(&self, b_pids: &[i32]) {
        assert_eq!(runtime::synapse_pids(&self.b), b_pids, "the victim's Synapse was restarted or killed");
        let (status, _) = Matrix::new(&self.b_url).call(Method::GET, "/_matrix/client/versions", None, None).await;
        assert_eq!(status, 200, "the victim does not answer");
        let hs = expect_status(&self.client.get(&format!("/v1/homeservers/{}", self.b)).await, 200);
        assert_eq!(hs["status"], "running", "{hs}");
    }

    /// Reads everything the customer can read about both homeservers, then searches every API
    /// answer so far, both logs and A's files for the secrets.
    async fn assert_nothing_leaked(&self) {
        for id in [&self.a, &self.b] {
            for path in ["", "/events", "/backups", "/restores", "/reserved-users", "/usage"] {
                let _ = self.client.get(&format!("/v1/homeservers/{id}{path}")).await;
            }
        }
        let _ = self.client.get("/v1/homeservers").await;
        let transcript = self.server.transcript().join("\n");
        let api_log = self.server.log();
        let agent_log = self.server.agent_log();
        let a_files = files_under(&self.server.data_dir(&self.a));
        for secret in self.secrets() {
            let shown = &secret[..12];
            assert!(!transcript.contains(&secret), "an API answer holds a secret ({shown}…)");
            assert!(!api_log.contains(&secret), "matrixhostd's log holds a secret ({shown}…)");
            if secret != self.b_secret {
                // The agent's log may quote a tenant's own output, never a platform secret.
                assert!(!agent_log.contains(&secret), "the agent's log holds a platform secret ({shown}…)");
            }
            for (path, bytes) in &a_files {
                assert!(!matrixhost_tests::contains_bytes(bytes, &secret), "{} holds a secret ({shown}…)", path.display());
            }
        }
    }
}

/// Regular files under `dir` (root's view, never following links), at most 64 MiB each.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else if meta.is_file() && meta.len() < 64 << 20 {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "as the tenant: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The plaintext of a backup archive, decrypted the way only the agent (root, master key) can.
fn decrypt_archive(server: &RuntimeServer, hs: &str, bk: &str) -> Vec<u8> {
    let sealer = matrixhost_seal::Sealer::load_or_create(&server.master_key_path()).unwrap();
    let file = std::fs::File::open(archive_path(server.state_dir(), hs, bk)).unwrap();
    let mut reader = matrixhost_agent::archive::DecryptingReader::open(file, &sealer, hs, bk).unwrap();
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).unwrap();
    plain
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn events(client: &Client, id: &str) -> Vec<Value> {
    expect_status(&client.get(&format!("/v1/homeservers/{id}/events")).await, 200)["items"].as_array().unwrap().clone()
}

/// R3: links planted for every file the platform reads or writes in the tenant's directory, a
/// socket swapped for a link to another tenant's, and a crash that makes the platform look.
#[tokio::test]
async fn planted_symlinks_and_hard_links_reach_nothing() {
    if !runtime_available("planted_links") {
        return;
    }
    let t = two_tenants("links").await;
    let b_pids = runtime::synapse_pids(&t.b);
    let master = t.server.master_key_path();
    let agent_dir = t.server.state_dir().join("agent");
    let b_socket = t.server.state_dir().join("run/homeservers").join(&t.b).join("synapse.sock");
    let b_data = t.server.data_dir(&t.b);

    // What the attacker can see of the host: nothing of the state directory.
    let seen =
        ok(&as_tenant(&t.a, &format!("ls / ; test -e {} && echo VISIBLE || true; test -e {} && echo VISIBLE || true", agent_dir.display(), b_data.display())));
    assert!(!seen.contains("VISIBLE"), "the sandbox sees the host's state directory: {seen}");
    // Links to the platform's secrets and to B, under every name the platform has used in a
    // data directory (config, templates, output, staging), and inside the media store.
    let plant = format!(
        "cd /data && for f in homeserver.yaml log.config consent_templates synapse.out .mh-backup-staging .mh-restore-staging; do rm -rf $f; done; \
         ln -s {master} homeserver.yaml; ln -s {agent} log.config; ln -s {agent} consent_templates; \
         ln -s {master} synapse.out; ln -s {b_data} .mh-backup-staging; ln -s / .mh-restore-staging; \
         mkdir -p media_store/local_content && ln -s {agent} media_store/local_content/evil-dir && ln -s {master} media_store/local_content/evil-file; \
         ln homeserver.db media_store/hardlink-to-own-db; \
         ln {master} stolen-master 2>/dev/null && echo HARDLINKED || echo no-hard-link; \
         cat /proc/1/root{master} 2>/dev/null && echo READ-VIA-PROC || echo no-proc-root",
        master = master.display(),
        agent = agent_dir.display(),
        b_data = b_data.display(),
    );
    let planted = ok(&as_tenant(&t.a, &plant));
    assert!(planted.contains("no-hard-link") && planted.contains("no-proc-root"), "{planted}");

    // The socket: swapped for a link to B's. The ingress checks who listens and refuses it;
    // B's privacy notice (its server name) never comes back through A's port.
    let a_url = expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200)["client_url"].as_str().unwrap().to_owned();
    ok(&as_tenant(&t.a, &format!("rm -f /run/matrixhost/synapse.sock && ln -s {} /run/matrixhost/synapse.sock", b_socket.display())));
    let resp = reqwest::get(format!("{a_url}/_matrix/consent")).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains(&t.b_server_name), "A's port served B's homeserver: {body}");

    // The attack of record: Synapse's log file made a link to the master key, then a crash.
    // Synapse itself cannot start on it (it is a dangling link in its sandbox); the platform
    // reports that in its own words and never reads the log.
    ok(&as_tenant(
        &t.a,
        &format!(
            "rm -f /data/homeserver.log* && ln -s {} /data/homeserver.log && kill -TERM $(pgrep -o -u $(id -u) -f synapse.app.homeserver)",
            master.display()
        ),
    ));
    wait_until("A's failure", Duration::from_secs(120), async || {
        let hs = expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200);
        hs["status"] == "failed" && events(&t.client, &t.a).await.iter().any(|e| e["kind"] == "crashed")
    })
    .await;
    let failed = expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200);
    let reason = failed["status_reason"].as_str().unwrap();
    assert!(reason.starts_with("the homeserver stopped while it was starting (ref ref-"), "{reason}");
    t.assert_nothing_leaked().await;
    // Retries back off and the failure is one event, however often the start fails.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let failures = events(&t.client, &t.a).await.iter().filter(|e| e["kind"] == "start_failed").count();
    assert_eq!(failures, 1, "{:?}", events(&t.client, &t.a).await);
    // The customer's operator removes the link; the platform starts A again on its next pass.
    std::fs::remove_file(t.server.data_dir(&t.a).join("homeserver.log")).unwrap();
    wait_until("A running again", Duration::from_secs(120), async || {
        expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200)["status"] == "running"
    })
    .await;
    // The platform replaced the planted socket with a fresh one of A's own.
    let (status, _) = Matrix::new(&a_url).call(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, 200);
    let backup = take_backup(&t.client, &t.a).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    let bk = backup["id"].as_str().unwrap();
    let plain = decrypt_archive(&t.server, &t.a, bk);
    for secret in t.secrets() {
        assert!(!matrixhost_tests::contains_bytes(&plain, &secret), "the backup archived a secret through a planted link");
    }
    let restored = restore(&t.client, &t.a, bk).await;
    assert_eq!(restored["status"], "completed", "{restored}");
    // The database and the signing key swapped for links to the master key (Synapse keeps the
    // files it has open): the backup is refused in the platform's words, and archives nothing.
    let swap =
        format!("cd /data && mv homeserver.db db.real && mv signing.key key.real && ln -s {m} homeserver.db && ln -s {m} signing.key", m = master.display());
    ok(&as_tenant(&t.a, &swap));
    let refused = try_backup(&t.client, &t.a).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("(ref ref-"), "{refused}");
    assert_eq!(partial_archives(t.server.state_dir()), Vec::<PathBuf>::new());
    ok(&as_tenant(&t.a, "cd /data && rm homeserver.db signing.key && mv db.real homeserver.db && mv key.real signing.key"));
    // Nothing outside A's volume was touched: the master key is as it was, B is unharmed.
    assert!(std::fs::symlink_metadata(&master).unwrap().is_file());
    t.assert_victim_unharmed(&b_pids).await;
    t.assert_nothing_leaked().await;
    let usage = expect_status(&t.client.get(&format!("/v1/homeservers/{}/usage", t.a)).await, 200);
    assert!(usage["volume_bytes_used"].as_u64().unwrap() > 0, "{usage}");
}

/// R3/R4: a FIFO where a file is expected, a huge sparse file, and output without end.
#[tokio::test]
async fn fifos_huge_files_and_endless_output_are_bounded() {
    if !runtime_available("fifo_huge") {
        return;
    }
    let t = two_tenants("huge").await;
    let b_pids = runtime::synapse_pids(&t.b);
    ok(&as_tenant(
        &t.a,
        "mkdir -p /data/media_store/local_content && mkfifo /data/media_store/local_content/fifo && truncate -s 200G /data/media_store/local_content/huge",
    ));
    let started = Instant::now();
    let refused = try_backup(&t.client, &t.a).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(refused["error"].as_str().unwrap().starts_with("the homeserver's files are larger than its volume"), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(60), "the backup took {:?}", started.elapsed());
    assert_eq!(partial_archives(t.server.state_dir()), Vec::<PathBuf>::new(), "a refused backup left a partial archive");
    // Without the huge file the FIFO is skipped and the backup completes.
    ok(&as_tenant(&t.a, "rm /data/media_store/local_content/huge"));
    let backup = take_backup(&t.client, &t.a).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    // B's backups are not affected.
    assert_eq!(take_backup(&t.client, &t.b).await["status"], "completed");

    // Endless output: a compromised Synapse writes without end to the stderr it inherited, a
    // root-only file the agent keeps (the tenant cannot open it any other way: see below). The
    // bytes arrive the way Synapse's would, through that file; the agent keeps it small.
    let output = t.server.state_dir().join(format!("agent/logs/{}.log", t.a));
    let reopen = as_tenant(&t.a, "echo x > /proc/$(pgrep -o -u $(id -u) -f synapse.app.homeserver)/fd/2 && echo REOPENED");
    assert!(!String::from_utf8_lossy(&reopen.stdout).contains("REOPENED"), "the tenant reopened the agent's file");
    assert!(String::from_utf8_lossy(&reopen.stderr).contains("ermission denied"), "{}", String::from_utf8_lossy(&reopen.stderr));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&output).unwrap();
        f.write_all(&vec![b'x'; 30 << 20]).unwrap();
    }
    wait_until("the output cap", Duration::from_secs(30), async || std::fs::metadata(&output).map(|m| m.len() <= 2 << 20).unwrap_or(false)).await;
    t.assert_victim_unharmed(&b_pids).await;
    t.assert_nothing_leaked().await;
}

/// R3: no tenant reaches another's listener, data or processes.
#[tokio::test]
async fn a_tenant_reaches_no_other_tenant() {
    if !runtime_available("no_other_tenant") {
        return;
    }
    let t = two_tenants("reach").await;
    let b_pids = runtime::synapse_pids(&t.b);
    let b_socket = t.server.state_dir().join("run/homeservers").join(&t.b).join("synapse.sock");
    let b_data = t.server.data_dir(&t.b);
    let probe = format!(
        r#"/opt/synapse/bin/python - <<'PY'
import os, socket
def attempt(what, f):
    try:
        f()
        print(what, "REACHED")
    except Exception as e:
        print(what, "refused", type(e).__name__)
s = socket.socket(socket.AF_UNIX)
attempt("b-socket", lambda: s.connect("{sock}"))
attempt("b-data", lambda: open("{data}/secret-of-b").read())
attempt("b-data-listing", lambda: os.listdir("{data}"))
# Every process A can see is A's (or the sandbox's own init).
print("uids", sorted({{os.stat("/proc/" + p).st_uid for p in os.listdir("/proc") if p.isdigit()}}))
print("pids", len([p for p in os.listdir("/proc") if p.isdigit()]))
PY"#,
        sock = b_socket.display(),
        data = b_data.display(),
    );
    let seen = ok(&as_tenant(&t.a, &probe));
    assert!(!seen.contains("REACHED"), "{seen}");
    let a_uid = runtime::process_uid(runtime::synapse_pids(&t.a)[0]).unwrap();
    assert!(seen.contains(&format!("uids [0, {a_uid}]")), "A sees processes of others: {seen}");
    let pids: usize = seen.lines().find_map(|l| l.strip_prefix("pids ")).unwrap().trim().parse().unwrap();
    assert!(pids < 20, "A sees {pids} processes: {seen}");

    // B has no network at all (no federation): not even the host's loopback.
    let api_port = t.server.addr().port();
    let b_probe = format!(
        r#"/opt/synapse/bin/python -c "import socket
try:
    socket.create_connection(('127.0.0.1', {api_port}), timeout=3); print('REACHED')
except Exception as e: print('refused', type(e).__name__)""#
    );
    let seen = ok(&as_tenant(&t.b, &b_probe));
    assert!(seen.contains("refused"), "a tenant without federation reached the host's loopback: {seen}");
    t.assert_victim_unharmed(&b_pids).await;
    t.assert_nothing_leaked().await;
}

/// R5/R12: a memory hog is killed inside its own cgroup; the homeserver restarts and the event
/// is recorded; the other tenant is untouched.
#[tokio::test]
async fn a_memory_hog_is_killed_inside_its_own_cgroup() {
    if !runtime_available("memory_hog") {
        return;
    }
    let t = two_tenants("hog").await;
    let b_pids = runtime::synapse_pids(&t.b);
    let a_pids = runtime::synapse_pids(&t.a);
    let limit: u64 = std::fs::read_to_string(runtime::cgroup_dir(&t.a, "memory").join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(runtime::cgroup_dir(&t.a, "memory").join("memory.max")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(limit, 512 << 20, "the plan's memory limit");
    let out = as_tenant(&t.a, "/opt/synapse/bin/python -c \"x = [bytearray(16 << 20) for _ in range(200)]; print('SURVIVED')\"");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SURVIVED"), "3 GiB fit in a 512 MiB limit");
    wait_until("the oom event", Duration::from_secs(60), async || events(&t.client, &t.a).await.iter().any(|e| e["kind"] == "oom_killed")).await;
    let event = events(&t.client, &t.a).await.into_iter().find(|e| e["kind"] == "oom_killed").unwrap();
    assert!(event["message"].as_str().unwrap().starts_with("R5: the homeserver ran out of its plan's memory"), "{event}");
    // A restarts (a fresh Synapse); B never noticed.
    wait_until("A's restart", Duration::from_secs(120), async || {
        let now = runtime::synapse_pids(&t.a);
        !now.is_empty() && now != a_pids && expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200)["status"] == "running"
    })
    .await;
    t.assert_victim_unharmed(&b_pids).await;
    t.assert_nothing_leaked().await;
}

/// R5: a fork bomb stops at the pids limit; the host and the other tenant go on.
#[tokio::test]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    if !runtime_available("fork_bomb") {
        return;
    }
    let t = two_tenants("bomb").await;
    let b_pids = runtime::synapse_pids(&t.b);
    let max: u32 = std::fs::read_to_string(runtime::cgroup_dir(&t.a, "pids").join("pids.max")).unwrap().trim().parse().unwrap();
    // A classic fork bomb, left to run for a few seconds in the background.
    let _ = as_tenant(&t.a, "(b() { b | b & }; b) >/dev/null 2>&1 & sleep 5; exit 0");
    let in_cgroup = runtime::cgroup_pids(&t.a).len() as u32;
    assert!(in_cgroup <= max, "{in_cgroup} processes in a cgroup limited to {max}");
    // The host still forks, B still answers.
    assert!(std::process::Command::new("true").status().unwrap().success());
    t.assert_victim_unharmed(&b_pids).await;
    // A recovers: a settings change restarts it, and its sandbox takes the bomb with it.
    let hs = expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200);
    let mut settings = json!({
        "federation_enabled": true, "registration": hs["registration"], "allowed_email_domains": hs["allowed_email_domains"],
        "guest_access": true, "encryption_by_default": hs["encryption_by_default"], "deletion_protection": false,
        "volume": {"size_gb": 1}, "data_controller": hs["data_controller"],
    });
    settings["volume"]["encrypted"] = json!(true);
    expect_status(&t.client.put(&format!("/v1/homeservers/{}", t.a), &settings).await, 200);
    wait_until("A back to running", Duration::from_secs(180), async || {
        let hs = expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200);
        hs["status"] == "running" && hs["guest_access"] == true && runtime::cgroup_pids(&t.a).len() < 10
    })
    .await;
    t.assert_victim_unharmed(&b_pids).await;
}

/// R5: the plan's CPU share holds; an upgrade raises it at once, without a restart.
#[tokio::test]
async fn cpu_is_held_to_the_plan_and_raised_by_an_upgrade() {
    if !runtime_available("cpu_limit") {
        return;
    }
    let t = two_tenants("cpu").await;
    let burn = |seconds: u32| {
        format!("/opt/synapse/bin/python -c \"import os, time\nfor _ in range(2):\n    if os.fork() == 0:\n        end = time.time() + {seconds}\n        while time.time() < end: pass\n        os._exit(0)\nos.wait(); os.wait(); t = os.times(); print(t.children_user + t.children_system)\"")
    };
    let used: f64 = ok(&as_tenant(&t.a, &burn(4))).trim().parse().unwrap();
    eprintln!("measured: 2 busy loops for 4 s used {used:.2} CPU-seconds at 250 millicores");
    // Unlimited, two loops on this machine's two cores would use about 8 CPU-seconds.
    assert!(used < 1.6, "{used} CPU-seconds in 4 s with a quarter of a CPU");
    // Upgrade the plan: the new limit applies in place.
    let a_pids = runtime::synapse_pids(&t.a);
    let hs = expect_status(&t.client.get(&format!("/v1/homeservers/{}", t.a)).await, 200);
    let bp = hs["billing_plan_id"].as_str().unwrap();
    expect_status(&t.client.put(&format!("/v1/billing-plans/{bp}"), &json!({"plan": "large"})).await, 200);
    let quota = runtime::cgroup_dir(&t.a, "cpu").join("cpu.cfs_quota_us");
    wait_until("the new cpu limit", Duration::from_secs(30), async || std::fs::read_to_string(&quota).is_ok_and(|q| q.trim() == "100000")).await;
    assert_eq!(runtime::synapse_pids(&t.a), a_pids, "a limit change restarted the homeserver");
}

/// The API process runs as an unprivileged user and cannot read the agent's master key; the
/// agent answers only that user.
#[tokio::test]
async fn the_api_runs_unprivileged_and_holds_no_key() {
    if !runtime_available("unprivileged_api") {
        return;
    }
    let config = tempfile::tempdir().unwrap();
    let server = RuntimeServer::start(&["--config", &plan_config(config.path())]).await;
    let pid = server.pid().unwrap() as i32;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| status.lines().find(|l| l.starts_with(key)).unwrap().split_whitespace().skip(1).collect::<Vec<_>>();
    assert!(field("Uid:").iter().all(|u| *u != "0"), "matrixhostd runs as root: {:?}", field("Uid:"));
    assert!(field("Gid:").iter().all(|g| *g != "0"), "{:?}", field("Gid:"));
    assert_eq!(field("CapEff:"), ["0000000000000000"], "matrixhostd holds capabilities");
    let ps = std::process::Command::new("ps").args(["-o", "user=", "-p", &pid.to_string()]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), matrixhost_tests::SERVICE_USER);
    // Its user cannot read the master key, nor reach the agent's state at all.
    let cat = std::process::Command::new("runuser").args(["-u", matrixhost_tests::SERVICE_USER, "--", "cat"]).arg(server.master_key_path()).output().unwrap();
    assert!(!cat.status.success() && String::from_utf8_lossy(&cat.stderr).contains("ermission denied"), "{}", String::from_utf8_lossy(&cat.stderr));
    // No file of matrixhostd's holds a volume key: there are none in its directory.
    let api_files = files_under(&server.state_dir().join("api"));
    assert!(api_files.iter().all(|(p, _)| !p.to_string_lossy().contains("master")), "{:?}", api_files.iter().map(|(p, _)| p).collect::<Vec<_>>());
    // The agent's socket is 0600 and its owner is the service user; another uid is refused.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let socket = server.state_dir().join("run/agent.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), runtime::process_uid(pid).unwrap());
    let other = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c"])
        .arg(format!("exec 3<>/dev/null; test -w {}", socket.display()))
        .output()
        .unwrap();
    assert!(!other.status.success(), "another user may write to the agent's socket");
}
