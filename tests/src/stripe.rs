//! localstripe (from PyPI, installed by `scripts/setup.sh`): a stateful emulator of Stripe's
//! API that delivers its events to registered webhooks, signed the way Stripe signs them. Each
//! test starts its own on a loopback port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The secret key the tests use against localstripe (it takes any `sk_test_` key).
pub const SECRET_KEY: &str = "sk_test_matrixhost";

/// A running localstripe. Killed when dropped.
pub struct LocalStripe {
    child: Child,
    port: u16,
    http: reqwest::Client,
}

impl LocalStripe {
    pub async fn start() -> LocalStripe {
        let bin = crate::tools_dir().join("bin/localstripe");
        assert!(bin.exists(), "{} is missing; run scripts/setup.sh", bin.display());
        let port = crate::free_port();
        // --from-scratch: never the state another run saved.
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--from-scratch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting localstripe");
        let stripe = LocalStripe { child, port, http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap() };
        crate::wait_for_port(port, "localstripe", Duration::from_secs(30)).await;
        stripe
    }

    /// Its API base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Has localstripe deliver every event to `url`, signed with `secret`.
    pub async fn register_webhook(&self, id: &str, url: &str, secret: &str) {
        let resp = self.http.post(format!("{}/_config/webhooks/{id}", self.url())).form(&[("url", url), ("secret", secret)]).send().await.unwrap();
        assert!(resp.status().is_success(), "registering the webhook: {}", resp.status());
    }

    /// A call to the Stripe API, form-encoded as Stripe takes it; the answer's JSON.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let resp = self.http.post(format!("{}{path}", self.url())).bearer_auth(SECRET_KEY).form(form).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
