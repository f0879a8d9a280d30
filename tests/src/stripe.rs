//! localstripe (from PyPI, installed by `scripts/setup.sh`): a stateful emulator of Stripe's
//! API that delivers its events to registered webhooks, signed the way Stripe signs them. Each
//! test starts its own on a loopback port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The secret key the tests use against localstripe (it takes any `sk_test_` key).
pub const SECRET_KEY: &str = "sk_test_matrixhost";
/// The publishable key the console hands to Stripe.js.
pub const PUBLISHABLE_KEY: &str = "pk_test_matrixhost";
/// The webhook signing secret the billing tests register.
pub const WEBHOOK_SECRET: &str = "whsec_matrixhost_billing";

/// Test cards, as Stripe documents them and localstripe knows them.
pub const CARD_OK: &str = "4242424242424242";
/// Refused when it is attached to a customer.
pub const CARD_DECLINED: &str = "4000000000000002";
/// Attaches, then every charge on it fails.
pub const CARD_CHARGES_FAIL: &str = "4000000000000341";

/// A running localstripe. Killed when dropped.
pub struct LocalStripe {
    child: Child,
    port: u16,
    http: reqwest::Client,
    /// Holds its private state file (see `start`).
    _tmp: tempfile::TempDir,
}

impl LocalStripe {
    pub async fn start() -> LocalStripe {
        let bin = crate::tools_dir().join("bin/localstripe");
        assert!(bin.exists(), "{} is missing; run scripts/setup.sh", bin.display());
        let port = crate::free_port();
        // localstripe saves its state to the fixed path /tmp/localstripe.pickle after every
        // write. As root each instance gets its own file there: in a mount namespace of its own,
        // a private file is bound over that path (only the file, so a checkout under /tmp stays
        // visible). --from-scratch: never read another run's state.
        let tmp = tempfile::tempdir().unwrap();
        let mut command = if crate::running_as_root() {
            let private = tmp.path().join("localstripe.pickle");
            std::fs::write(&private, b"").unwrap();
            // The mount point must exist outside; an empty file there is harmless.
            let _ = std::fs::OpenOptions::new().create(true).append(true).open("/tmp/localstripe.pickle");
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c", "mount --bind \"$1\" /tmp/localstripe.pickle && shift && exec \"$@\"", "sh"]).arg(&private).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let child = command.args(["--port", &port.to_string(), "--from-scratch"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting localstripe");
        let stripe = LocalStripe { child, port, http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap(), _tmp: tmp };
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

    /// matrixhostd's arguments for billing through this localstripe, with the files they name
    /// written into `dir`.
    pub fn server_args(&self, dir: &std::path::Path) -> Vec<String> {
        std::fs::write(dir.join("stripe-key"), SECRET_KEY).unwrap();
        std::fs::write(dir.join("stripe-whsec"), WEBHOOK_SECRET).unwrap();
        vec![
            "--stripe-api-url".into(),
            self.url(),
            "--stripe-secret-key-file".into(),
            dir.join("stripe-key").display().to_string(),
            "--stripe-publishable-key".into(),
            PUBLISHABLE_KEY.into(),
            "--stripe-webhook-secret-file".into(),
            dir.join("stripe-whsec").display().to_string(),
        ]
    }

    /// A card payment method, made the way Stripe.js makes one from what a customer typed.
    pub async fn card(&self, number: &str) -> String {
        let pm = self.post("/v1/payment_methods", &[("type", "card"), ("card[number]", number), ("card[exp_month]", "12"), ("card[exp_year]", "2034"), ("card[cvc]", "123")]).await;
        pm["id"].as_str().unwrap().to_owned()
    }

    /// A SEPA Direct Debit mandate whose debits bounce: Stripe learns of that days later and
    /// sends `invoice.payment_failed` then, which is how localstripe fails a renewal too (its card
    /// refusals on an invoice raise no event).
    pub async fn bouncing_debit(&self) -> String {
        let pm = self.post("/v1/payment_methods", &[("type", "sepa_debit"), ("sepa_debit[iban]", "DE62370400440532013001")]).await;
        pm["id"].as_str().unwrap().to_owned()
    }

    /// A GET on the Stripe API; the answer's JSON.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        success(self.http.get(format!("{}{path}", self.url())).bearer_auth(SECRET_KEY).query(query), "GET", path).await
    }

    /// The only customer (each test has its own localstripe and one organization).
    pub async fn only_customer(&self) -> String {
        let list = self.get("/v1/customers", &[]).await;
        let all = list["data"].as_array().unwrap();
        assert_eq!(all.len(), 1, "{list}");
        all[0]["id"].as_str().unwrap().to_owned()
    }

    /// The customer's invoices, oldest first.
    pub async fn invoices(&self, customer: &str) -> Vec<Value> {
        let list = self.get("/v1/invoices", &[("customer", customer), ("limit", "100")]).await;
        let mut all = list["data"].as_array().unwrap().clone();
        all.reverse();
        all
    }

    /// What Stripe does at a subscription's renewal: invoice the next period and charge the
    /// customer's default card. localstripe has no clock, so the tests play it.
    pub async fn renew(&self, customer: &str, subscription: &str) -> Value {
        let invoice = self.post("/v1/invoices", &[("customer", customer), ("subscription", subscription)]).await;
        let id = invoice["id"].as_str().unwrap();
        let resp = self.http.post(format!("{}/v1/invoices/{id}/pay", self.url())).bearer_auth(SECRET_KEY).send().await.unwrap();
        resp.json().await.unwrap_or(Value::Null)
    }

    /// A call to the Stripe API, form-encoded as Stripe takes it; the answer's JSON.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        success(self.http.post(format!("{}{path}", self.url())).bearer_auth(SECRET_KEY).form(form), "POST", path).await
    }
}

/// The JSON of a successful answer; anything else fails the test with what localstripe said.
async fn success(request: reqwest::RequestBuilder, method: &str, path: &str) -> Value {
    let resp = request.send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
