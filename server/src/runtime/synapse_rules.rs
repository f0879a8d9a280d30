//! The rules as a real Synapse applies them (R5-R9, R12, R19, R22): the config the node agent
//! renders (`matrixhost_agent::synapse`), a real Synapse from the project's venv, reached through
//! the platform's ingress, driven with the control plane's own admin client. They skip, with a
//! message, when the venv is missing, unless `MATRIXHOST_REQUIRE_SYNAPSE=1`. The rule-to-knob
//! mapping is documented in `docs/synapse.md`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use matrixhost_agent::fsat::Dir;
use matrixhost_agent::synapse::{self as rendering, Placement, DATABASE_FILE, LOG_FILE};
use matrixhost_agent_api::{HomeserverId, PrivacyNotice, RegistrationMode, SynapseSecrets, SynapseSpec, SYNAPSE_SOCKET};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use super::matrix_admin::{MatrixAdmin, MatrixError};
use super::privacy_notice::{self, NoticeInput};
use crate::ingress::Ingress;

const DEFAULT_PYTHON: &str = "/work/main/.tools/synapse-venv/bin/python";
const SERVER: &str = "acme.test";
const ENTITY: &str = "Acme Corp <Testing & Co>";
const PW: &str = "correct horse battery staple";

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MATRIXHOST_TOOLS_DIR").map(|d| PathBuf::from(d).join("synapse-venv/bin/python")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/synapse-venv/bin/python")),
        Some(PathBuf::from(DEFAULT_PYTHON)),
    ];
    if let Some(p) = candidates.into_iter().flatten().find(|p| p.exists()) {
        return Some(p);
    }
    if std::env::var("MATRIXHOST_REQUIRE_SYNAPSE").as_deref() == Ok("1") {
        panic!("MATRIXHOST_REQUIRE_SYNAPSE=1 but there is no Synapse venv at {DEFAULT_PYTHON} (run scripts/setup.sh)");
    }
    eprintln!("SKIPPED: no Synapse venv at {DEFAULT_PYTHON} (run scripts/setup.sh to install it)");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running Synapse (as this test process's user, without the sandbox, which the runtime
/// tests cover); dropping it kills the process group and removes its directories.
struct Hs {
    python: PathBuf,
    spec: SynapseSpec,
    dir: tempfile::TempDir,
    port: u16,
    ingress: Arc<Ingress>,
    child: Option<tokio::process::Child>,
    http: reqwest::Client,
}

impl Hs {
    async fn start(python: PathBuf, tweak: impl FnOnce(&mut SynapseSpec)) -> Hs {
        let dir = tempfile::tempdir().unwrap();
        for d in ["data", "config", "socket"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let port = free_port();
        let html = privacy_notice::render(&NoticeInput { entity_name: ENTITY, admin_email: "it@acme.test", server_name: SERVER, processor_name: "matrixhost" });
        let mut spec = SynapseSpec {
            server_name: SERVER.into(),
            public_base_url: format!("http://127.0.0.1:{port}/"),
            federation_enabled: false,
            registration: RegistrationMode::InviteOnly,
            allowed_email_domains: vec![],
            guest_access: false,
            encryption_by_default: true,
            mau_cap: 10,
            mau_trial_days: 2,
            reserved_emails: vec![],
            blocked_message: None,
            privacy_notice: PrivacyNotice { version: privacy_notice::version_of(&html), html },
            admin_contact: Some("mailto:it@acme.test".into()),
            secrets: SynapseSecrets::generate(),
        };
        tweak(&mut spec);
        let socket = dir.path().join("socket").join(SYNAPSE_SOCKET);
        let ingress = Arc::new(Ingress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), move |_| Some(socket.clone())));
        let id = HomeserverId::parse("hs_rules").unwrap();
        ingress.ensure(&id, port, rustix::process::geteuid().as_raw()).await.unwrap();
        let mut hs = Hs { python, spec, dir, port, ingress, child: None, http: reqwest::Client::new() };
        hs.boot().await;
        hs
    }

    fn placement(&self) -> Placement {
        Placement { data_dir: self.dir.path().join("data"), config_dir: self.dir.path().join("config"), socket_dir: self.dir.path().join("socket") }
    }

    fn synapse(&self, extra: &[&str]) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.python);
        cmd.args(["-m", "synapse.app.homeserver", "--config-path"]).arg(self.placement().config_file()).args(extra);
        cmd.current_dir(self.dir.path().join("data")).env_clear().env("PATH", "/usr/bin:/bin").env("HOME", self.dir.path().join("data")).process_group(0);
        cmd
    }

    async fn boot(&mut self) {
        let t = Instant::now();
        let at = self.placement();
        let config = Dir::open(&at.config_dir).unwrap();
        rendering::write_config(&config, &self.spec, &at, rustix::process::getegid().as_raw()).unwrap();
        if !at.data_dir.join("signing.key").exists() {
            let out = self.synapse(&["--generate-keys"]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = std::fs::remove_file(at.socket_dir.join(SYNAPSE_SOCKET));
        let _ = std::fs::remove_file(at.socket_dir.join(format!("{SYNAPSE_SOCKET}.lock")));
        self.child = Some(tokio::process::Command::from(self.synapse(&[])).stdout(std::process::Stdio::null()).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = self.http.get(self.url("/_matrix/client/versions")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "Synapse did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("Synapse ready on port {} in {:?}", self.port, t.elapsed());
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
                if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
            }
            let _ = child.wait().await;
        }
    }

    /// Rewrites the config from the (changed) spec and restarts Synapse.
    async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    fn admin(&self) -> MatrixAdmin {
        MatrixAdmin::new(format!("http://127.0.0.1:{}", self.port), self.spec.secrets.registration_shared_secret.clone())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// R23: the MAU count, read the way Synapse counts it for the cap.
    fn mau(&self) -> u64 {
        let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nprint(c.execute(\"SELECT COUNT(*) FROM monthly_active_users\").fetchone()[0])";
        let out = std::process::Command::new(&self.python).arg("-c").arg(script).arg(self.placement().data_dir.join(DATABASE_FILE)).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// A raw client call: (status, JSON body or Null).
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn text(&self, method: Method, path: &str) -> (u16, String) {
        let resp = self.http.request(method, self.url(path)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Any authenticated request makes the user active (it lands in the MAU table).
    async fn make_active(&self, token: &str) {
        let (s, v) = self.call(Method::GET, "/_matrix/client/v3/account/whoami", Some(token), None).await;
        assert_eq!(s, 200, "{v}");
    }

    fn consent_hmac(&self, user: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.spec.secrets.form_secret.as_bytes()).unwrap();
        mac.update(user.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Accepts the privacy notice the way the notice's form does.
    async fn consent(&self, localpart: &str) {
        let path = format!("/_matrix/consent?u={localpart}&h={}&v={}", self.consent_hmac(localpart), self.spec.privacy_notice.version);
        let (s, body) = self.text(Method::POST, &path).await;
        assert_eq!(s, 200, "{body}");
        assert!(body.contains("acceptance of the privacy notice has been recorded"), "{body}");
    }

    async fn create_room(&self, token: &str) -> (u16, Value) {
        self.call(Method::POST, "/_matrix/client/v3/createRoom", Some(token), Some(json!({ "preset": "private_chat" }))).await
    }
}

impl Drop for Hs {
    fn drop(&mut self) {
        self.ingress.remove(&HomeserverId::parse("hs_rules").unwrap());
        if let Some(child) = self.child.take() {
            if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.placement().data_dir.join(LOG_FILE)).unwrap_or_default();
            eprintln!("--- Synapse log tail ---\n{}", &log[log.len().saturating_sub(6000)..]);
        }
    }
}

fn matrix_err(e: &anyhow::Error) -> &MatrixError {
    e.downcast_ref::<MatrixError>().unwrap_or_else(|| panic!("not a Matrix error: {e:#}"))
}

/// Accounts, R19 consent, R22 encryption, R9 (invite-only, no guests, no federation) and R6
/// (trial users do not count) on one homeserver with a MAU cap of 1.
#[tokio::test(flavor = "multi_thread")]
async fn synapse_accounts_notice_e2ee_and_r9_refusals() {
    let Some(python) = python() else { return };
    let t = Instant::now();
    let hs = Hs::start(python, |s| s.mau_cap = 1).await;
    let admin = hs.admin();

    // Shared-secret registration and password login.
    let boss = admin.register("boss", PW, true, Some("The Boss")).await.unwrap();
    let alice = admin.register("alice", PW, false, None).await.unwrap();
    assert!(!boss.is_empty() && !alice.is_empty());
    admin.login("alice", PW).await.unwrap();
    admin.login("@boss:acme.test", PW).await.unwrap();
    let e = admin.login("alice", "wrong password").await.unwrap_err();
    assert_eq!((e.status, e.errcode.as_str()), (403, "M_FORBIDDEN"), "{e}");
    // A bad shared secret is refused and the error names neither secret nor password.
    let bad = MatrixAdmin::new(admin.base(), "not-the-secret");
    let e = bad.register("mallory", "mallory-password", false, None).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("HMAC incorrect") && !text.contains("mallory-password") && !text.contains("not-the-secret"), "{text}");
    assert_eq!(matrix_err(&e).status, 403);

    // Admin-API accounts: the password is set on creation only.
    admin.upsert_user(&boss, "@carol:acme.test", "Carol@Acme.test", Some("Carol"), false, Some(PW)).await.unwrap();
    admin.login("carol", PW).await.unwrap();
    admin.upsert_user(&boss, "@carol:acme.test", "carol@acme.test", Some("Carol C."), false, Some("another password")).await.unwrap();
    admin.login("carol", PW).await.unwrap();
    let (s, v) = hs.call(Method::GET, "/_synapse/admin/v2/users/@carol:acme.test", Some(&boss), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["displayname"], "Carol C.");
    assert_eq!(v["threepids"][0]["address"], "carol@acme.test");
    assert_eq!(admin.registered_users(&boss).await.unwrap(), 3);
    admin.deactivate(&boss, "@carol:acme.test", true).await.unwrap();
    assert_eq!(admin.registered_users(&boss).await.unwrap(), 2);
    let e = admin.login("carol", PW).await.unwrap_err();
    eprintln!("login of a deactivated user: {e}");
    assert_eq!((e.status, e.errcode.as_str()), (403, "M_FORBIDDEN"));

    // R6: with mau_trial_days = 2, brand-new accounts are trial users: three of them are
    // active on a cap of 1 and none counts yet.
    hs.make_active(&boss).await;
    hs.make_active(&alice).await;
    assert_eq!(hs.mau(), 0);

    // R9 invite-only: client registration is refused.
    let (s, v) = hs
        .call(Method::POST, "/_matrix/client/v3/register", None, Some(json!({ "username": "eve", "password": PW, "auth": { "type": "m.login.dummy" } })))
        .await;
    eprintln!("registration on an invite-only server: {s} {v}");
    assert_eq!((s, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));

    // R9 guests off.
    let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register?kind=guest", None, Some(json!({}))).await;
    eprintln!("guest registration: {s} {v}");
    // Synapse 1.163 answers this one with M_UNKNOWN (M_GUEST_ACCESS_FORBIDDEN is for rooms).
    assert_eq!((s, v["errcode"].as_str(), v["error"].as_str()), (403, Some("M_UNKNOWN"), Some("Guest access is disabled")));

    // R19: the public notice names the controller, the processor and the server.
    let (s, html) = hs.text(Method::GET, "/_matrix/consent").await;
    assert_eq!(s, 200);
    assert!(html.contains("<strong>Data controller:</strong> Acme Corp &lt;Testing &amp; Co&gt;"), "{html}");
    assert!(html.contains("<strong>Data processor:</strong> matrixhost") && html.contains("acme.test"));
    assert!(html.contains("After you sign in") && !html.contains("<form"));
    // Before accepting, alice cannot create rooms or send messages.
    let (s, v) = hs.create_room(&alice).await;
    eprintln!("room creation before consent: {s} {v}");
    assert_eq!((s, v["errcode"].as_str()), (403, Some("M_CONSENT_NOT_GIVEN")));
    assert!(v["consent_uri"].as_str().unwrap().contains("/_matrix/consent?u=alice&h="), "{v}");
    // Her personal link shows the form with Synapse's hidden fields; a wrong HMAC is refused.
    let (s, html) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("alice"))).await;
    assert_eq!(s, 200);
    assert!(html.contains("Acme Corp &lt;Testing &amp; Co&gt;"));
    assert!(html.contains(r#"name="u" value="alice""#), "{html}");
    assert!(html.contains(&format!(r#"name="v" value="{}""#, hs.spec.privacy_notice.version)));
    assert!(html.contains(&format!(r#"name="h" value="{}""#, hs.consent_hmac("alice"))));
    let (s, _) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("bob"))).await;
    assert_eq!(s, 403);
    hs.consent("alice").await;
    let (_, html) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("alice"))).await;
    assert!(html.contains("You have accepted this version") && !html.contains("<form"));

    // R22: new rooms are end-to-end encrypted.
    let (s, v) = hs.create_room(&alice).await;
    assert_eq!(s, 200, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    let (s, v) = hs.call(Method::GET, &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"), Some(&alice), None).await;
    assert_eq!((s, v["algorithm"].as_str()), (200, Some("m.megolm.v1.aes-sha2")), "{v}");

    // R9 federation off: a remote invite is refused.
    let (s, v) =
        hs.call(Method::POST, &format!("/_matrix/client/v3/rooms/{room}/invite"), Some(&alice), Some(json!({ "user_id": "@someone:other.example" }))).await;
    eprintln!("remote invite with federation off: {s} {v}");
    assert_eq!((s, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    assert!(v["error"].as_str().unwrap().contains("Federation denied with other.example"), "{v}");

    // R19: a changed notice is a new version that alice must accept again.
    let mut hs = hs;
    let html = privacy_notice::render(&NoticeInput {
        entity_name: "Acme Corporation",
        admin_email: "privacy@acme.test",
        server_name: SERVER,
        processor_name: "matrixhost",
    });
    let old_version = std::mem::replace(&mut hs.spec.privacy_notice, PrivacyNotice { version: privacy_notice::version_of(&html), html }).version;
    assert_ne!(old_version, hs.spec.privacy_notice.version);
    hs.restart().await;
    let (s, v) = hs.create_room(&alice).await;
    assert_eq!((s, v["errcode"].as_str()), (403, Some("M_CONSENT_NOT_GIVEN")), "{v}");
    let (_, html) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("alice"))).await;
    assert!(html.contains("Acme Corporation") && html.contains("privacy@acme.test") && html.contains("<form"));
    hs.consent("alice").await;
    let (s, v) = hs.create_room(&alice).await;
    assert_eq!(s, 200, "{v}");
    eprintln!("test took {:?}", t.elapsed());
}

/// R7/R8: a cap of 3 with one reserved user. Reserved threepids apply at start-up, so the
/// reserved account is created first and Synapse restarted; then admin + reserved + one more
/// user fill the cap, the next users are locked out and the reserved user still gets in.
#[tokio::test(flavor = "multi_thread")]
async fn synapse_mau_cap_with_reserved_user() {
    let Some(python) = python() else { return };
    let t = Instant::now();
    let mut hs = Hs::start(python, |s| {
        s.mau_cap = 3;
        s.mau_trial_days = 0;
        s.reserved_emails = vec!["VIP@acme.test".into()];
    })
    .await;
    let admin = hs.admin();
    let boss = admin.register("boss", PW, true, None).await.unwrap();
    hs.make_active(&boss).await;
    admin.upsert_user(&boss, "@vip:acme.test", "vip@acme.test", Some("VIP"), false, Some(PW)).await.unwrap();
    assert_eq!(hs.mau(), 1, "the reserved user is not counted before a restart");

    hs.restart().await;
    assert_eq!(hs.mau(), 2, "after the restart the reserved user holds a slot");

    let u1 = admin.register("u1", PW, false, None).await.unwrap();
    hs.make_active(&u1).await;
    assert_eq!(hs.mau(), 3);

    // R7: the cap is reached; a new user is locked out (Synapse creates the account but
    // refuses its token), and so is their login.
    let e = admin.register("u2", PW, false, None).await.unwrap_err();
    let m = matrix_err(&e);
    eprintln!("registration over the cap: {m}");
    assert_eq!((m.status, m.errcode.as_str()), (403, "M_RESOURCE_LIMIT_EXCEEDED"));
    assert_eq!(m.error, "Monthly Active User Limit Exceeded");
    let e = admin.login("u2", PW).await.unwrap_err();
    assert_eq!((e.status, e.errcode.as_str()), (403, "M_RESOURCE_LIMIT_EXCEEDED"));
    let (s, v) = hs
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "u2" }, "password": PW })),
        )
        .await;
    eprintln!("login of a new user over the cap: {s} {v}");
    assert_eq!(v["limit_type"], "monthly_active_user");
    assert_eq!(v["admin_contact"], "mailto:it@acme.test");
    let e = admin.register("u3", PW, false, None).await.unwrap_err();
    assert_eq!(matrix_err(&e).errcode, "M_RESOURCE_LIMIT_EXCEEDED");

    // R8: the reserved user still logs in; R7: active users go on.
    let vip = admin.login("vip", PW).await.unwrap();
    hs.make_active(&vip).await;
    admin.login("u1", PW).await.unwrap();
    admin.login("boss", PW).await.unwrap();
    assert_eq!(hs.mau(), 3);
    assert_eq!(admin.registered_users(&boss).await.unwrap(), 5);
    eprintln!("test took {:?}", t.elapsed());
}

/// R8 when the reserved user arrives after the cap is full: it cannot log in until a
/// restart; on restart Synapse puts it in the MAU table and trims the other users back to
/// cap - reserved, dropping the least recently active one.
#[tokio::test(flavor = "multi_thread")]
async fn synapse_reserved_user_added_when_cap_is_full() {
    let Some(python) = python() else { return };
    let t = Instant::now();
    let mut hs = Hs::start(python, |s| {
        s.mau_cap = 3;
        s.mau_trial_days = 0;
        s.reserved_emails = vec!["vip@acme.test".into()];
    })
    .await;
    let admin = hs.admin();
    let boss = admin.register("boss", PW, true, None).await.unwrap();
    hs.make_active(&boss).await;
    for u in ["u1", "u2"] {
        let tok = admin.register(u, PW, false, None).await.unwrap();
        hs.make_active(&tok).await;
    }
    assert_eq!(hs.mau(), 3);
    let e = admin.register("u3", PW, false, None).await.unwrap_err();
    assert_eq!(matrix_err(&e).errcode, "M_RESOURCE_LIMIT_EXCEEDED");

    admin.upsert_user(&boss, "@vip:acme.test", "vip@acme.test", None, false, Some(PW)).await.unwrap();
    let e = admin.login("vip", PW).await.unwrap_err();
    assert_eq!(e.errcode, "M_RESOURCE_LIMIT_EXCEEDED", "before a restart the reservation is not in force");

    hs.restart().await;
    admin.login("vip", PW).await.unwrap();
    // The start-up reaper runs in the background: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hs.mau() != 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(hs.mau(), 3, "reserved user + the two most recently active users");
    let e = admin.login("boss", PW).await.unwrap_err();
    assert_eq!(e.errcode, "M_RESOURCE_LIMIT_EXCEEDED", "the least recently active user lost its slot");
    admin.login("u2", PW).await.unwrap();
    eprintln!("test took {:?}", t.elapsed());
}

/// R9 email domains: Synapse refuses to start a registration for another domain's email;
/// R22 off: rooms are created unencrypted.
#[tokio::test(flavor = "multi_thread")]
async fn synapse_email_domain_registration_and_e2ee_off() {
    let Some(python) = python() else { return };
    let t = Instant::now();
    let hs = Hs::start(python, |s| {
        s.registration = RegistrationMode::EmailDomains;
        s.allowed_email_domains = vec!["acme.test".into(), "acme-labs.test".into()];
        s.encryption_by_default = false;
        s.federation_enabled = true;
    })
    .await;
    let request = |email: &str| json!({ "client_secret": "s3cr3t-client", "email": email, "send_attempt": 1 });
    let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register/email/requestToken", None, Some(request("eve@evil.example"))).await;
    eprintln!("requestToken for another domain: {s} {v}");
    assert_eq!((s, v["errcode"].as_str()), (403, Some("M_THREEPID_DENIED")));
    let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register/email/requestToken", None, Some(request("eve@sub.acme.test"))).await;
    assert_eq!((s, v["errcode"].as_str()), (403, Some("M_THREEPID_DENIED")), "subdomains are not whitelisted");
    let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register/email/requestToken", None, Some(request("Bob@ACME-labs.test"))).await;
    eprintln!("requestToken for a whitelisted domain (no mail relay): {s} {v}");
    assert_ne!(v["errcode"].as_str(), Some("M_THREEPID_DENIED"), "{v}");
    // Every registration flow needs the email step (and the privacy notice).
    let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register", None, Some(json!({ "username": "eve", "password": PW }))).await;
    eprintln!("registration flows: {s} {}", v["flows"]);
    assert_eq!(s, 401);
    for flow in v["flows"].as_array().unwrap() {
        let stages: Vec<&str> = flow["stages"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert!(stages.contains(&"m.login.email.identity") && stages.contains(&"m.login.terms"), "{stages:?}");
    }

    let admin = hs.admin();
    let boss = admin.register("boss", PW, true, None).await.unwrap();
    hs.consent("boss").await;
    let (s, v) = hs.create_room(&boss).await;
    assert_eq!(s, 200, "{v}");
    let room = v["room_id"].as_str().unwrap();
    let (s, v) = hs.call(Method::GET, &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"), Some(&boss), None).await;
    assert_eq!((s, v["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{v}");
    // With federation on, the federation listener answers.
    let (s, _) = hs.call(Method::GET, "/_matrix/federation/v1/version", None, None).await;
    assert_eq!(s, 200);
    eprintln!("test took {:?}", t.elapsed());
}

/// R12: blocking (hs_disabled + restart) refuses logins with the block message; unblocking
/// restores them.
#[tokio::test(flavor = "multi_thread")]
async fn synapse_blocked_and_unblocked() {
    let Some(python) = python() else { return };
    let t = Instant::now();
    let mut hs = Hs::start(python, |_| {}).await;
    let admin = hs.admin();
    let alice = admin.register("alice", PW, false, None).await.unwrap();
    hs.make_active(&alice).await;
    // Federation off: no federation listener.
    let (s, _) = hs.call(Method::GET, "/_matrix/federation/v1/version", None, None).await;
    assert_eq!(s, 404);

    hs.spec.blocked_message = Some("R12: this homeserver is blocked until its invoice is paid.".into());
    hs.restart().await;
    let e = admin.login("alice", PW).await.unwrap_err();
    eprintln!("login while blocked: {e}");
    assert_eq!((e.status, e.errcode.as_str()), (403, "M_RESOURCE_LIMIT_EXCEEDED"));
    assert_eq!(e.error, "R12: this homeserver is blocked until its invoice is paid.");
    let (s, v) = hs.call(Method::GET, "/_matrix/client/v3/sync?timeout=0", Some(&alice), None).await;
    eprintln!("sync while blocked: {s} {v}");
    assert_eq!((s, v["errcode"].as_str()), (403, Some("M_RESOURCE_LIMIT_EXCEEDED")));
    assert_eq!(v["limit_type"], "hs_disabled");
    assert_eq!(v["admin_contact"], "mailto:it@acme.test");
    let e = admin.register("bob", PW, false, None).await.unwrap_err();
    assert_eq!(matrix_err(&e).errcode, "M_RESOURCE_LIMIT_EXCEEDED");

    hs.spec.blocked_message = None;
    hs.restart().await;
    admin.login("alice", PW).await.unwrap();
    let (s, _) = hs.call(Method::GET, "/_matrix/client/v3/sync?timeout=0", Some(&alice), None).await;
    assert_eq!(s, 200);
    eprintln!("test took {:?}", t.elapsed());
}
