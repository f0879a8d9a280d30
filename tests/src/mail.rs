//! A real SMTP server for the tests: aiosmtpd (from PyPI, installed by `scripts/setup.sh`),
//! delivering into a Maildir, and what the tests need to read what arrived there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running aiosmtpd on a loopback port. Killed when dropped.
pub struct SmtpServer {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl SmtpServer {
    /// Starts on a free port.
    pub async fn start() -> SmtpServer {
        Self::start_on(crate::free_port()).await
    }

    /// Starts on `port` (a relay that comes back on the address the platform knows).
    pub async fn start_on(port: u16) -> SmtpServer {
        let dir = tempfile::Builder::new().prefix("matrixhost-smtp.").tempdir().expect("a Maildir");
        let python = crate::tools_dir().join("bin/mail-python");
        assert!(python.exists(), "{} is missing; run scripts/setup.sh", python.display());
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("Maildir"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting aiosmtpd");
        let server = SmtpServer { child, port, dir };
        crate::wait_for_port(port, "aiosmtpd", Duration::from_secs(20)).await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL for matrixhostd's `--smtp-url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The whole message as delivered (headers and encoded parts).
    pub raw: Vec<u8>,
}

fn parse(raw: Vec<u8>) -> Option<Received> {
    let mail = mailparse::parse_mail(&raw).ok()?;
    let header = |name: &str| mail.headers.iter().find(|h| h.get_key().eq_ignore_ascii_case(name)).map(|h| h.get_value()).unwrap_or_default();
    let (mut text, mut html) = (String::new(), String::new());
    for part in mail.subparts.iter().chain(std::iter::once(&mail)) {
        match part.ctype.mimetype.as_str() {
            "text/plain" => text = part.get_body().unwrap_or_default(),
            "text/html" => html = part.get_body().unwrap_or_default(),
            _ => {}
        }
    }
    Some(Received { to: header("To"), subject: header("Subject"), text, html, raw: raw.clone() })
}

/// Every message in a Maildir (`new/` and `cur/`), oldest first.
pub fn read_maildir(maildir: &Path) -> Vec<Received> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    files.into_iter().filter_map(|(_, path)| parse(std::fs::read(path).ok()?)).collect()
}

/// Waits for a message to `to` whose subject contains `subject`, beyond the first `skip` such.
pub async fn wait_for_mail(maildir: &Path, to: &str, subject: &str, skip: usize) -> Received {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<Received> = read_maildir(maildir).into_iter().filter(|m| m.to.contains(to) && m.subject.contains(subject)).collect();
        if let Some(m) = found.into_iter().nth(skip) {
            return m;
        }
        assert!(Instant::now() < deadline, "no mail to {to} about `{subject}` arrived in {}; got {:?}", maildir.display(), read_maildir(maildir).iter().map(|m| (&m.to, &m.subject)).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first link in `text` to `path` (e.g. `/console/verify`), with its query.
pub fn link_to(text: &str, path: &str) -> String {
    let start = text.find(&format!("{path}?")).unwrap_or_else(|| panic!("no link to {path} in:\n{text}"));
    let begin = text[..start].rfind("http").expect("an absolute link");
    let end = text[start..].find(|c: char| c.is_whitespace() || c == '"' || c == '<').map_or(text.len(), |e| start + e);
    text[begin..end].to_owned()
}

/// The `token` query parameter of a link.
pub fn token_of(link: &str) -> String {
    link.split("token=").nth(1).expect("a token in the link").split('&').next().unwrap_or_default().to_owned()
}
