//! What matrixhost asks of Stripe: its REST API, form-encoded, with the secret key.
//!
//! Why not the `async-stripe` crate (0.41, tried against localstripe 1.15.10, the emulator the
//! tests run): customers, payment methods, setup intents and invoice items worked, but creating
//! a subscription failed to deserialize (`billing_cycle_anchor: null` where its type wants an
//! integer) and listing invoices failed too (`charge` matched no variant of its `Expandable`).
//! Subscriptions and invoices are the heart of billing, so matrixhost calls Stripe's REST API
//! through reqwest, with typed structs that hold exactly the fields it reads. localstripe also
//! has no Prices: subscription items name a `plan`, which Stripe still accepts.
//!
//! Only ids, amounts, states and a card's brand and last four digits are read back (R13).

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Stripe's secret API key (`sk_...`). Never printed.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn from_text(text: &str) -> anyhow::Result<SecretKey> {
        let key = text.trim();
        anyhow::ensure!(key.starts_with("sk_") || key.starts_with("rk_"), "the Stripe secret key must start with sk_ (or rk_ for a restricted key)");
        Ok(SecretKey(key.to_owned()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A refusal or failure from Stripe. `message` is Stripe's text for people ("Your card was
/// declined."); it never holds the key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StripeError {
    /// The HTTP status; 0 when Stripe could not be reached.
    pub status: u16,
    /// Stripe's error code, e.g. `card_declined`.
    pub code: Option<String>,
    pub message: String,
}

impl StripeError {
    /// A card refused the charge or the attachment (HTTP 402 from Stripe).
    pub fn is_card_error(&self) -> bool {
        self.status == 402
    }

    pub fn unreachable(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

pub type StripeResult<T> = Result<T, StripeError>;

/// Form fields in Stripe's bracket notation, in order.
#[derive(Debug, Default, Clone)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn new() -> Form {
        Form::default()
    }

    pub fn set(mut self, key: impl Into<String>, value: impl ToString) -> Form {
        self.0.push((key.into(), value.to_string()));
        self
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SetupIntent {
    pub id: String,
    pub client_secret: String,
    pub status: String,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    pub customer: Option<String>,
    pub card: Option<CardDetails>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CardDetails {
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    pub latest_invoice: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    /// `None` for the upcoming invoice, which is not stored yet.
    pub id: Option<String>,
    pub customer: String,
    pub subscription: Option<String>,
    pub status: String,
    pub total: i64,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub created: Option<i64>,
    pub date: Option<i64>,
    pub lines: InvoiceLines,
}

impl Invoice {
    /// When the invoice was made (Stripe's `created`; older API versions call it `date`).
    pub fn created_unix(&self) -> i64 {
        self.created.or(self.date).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLines {
    pub data: Vec<InvoiceLine>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLine {
    pub description: Option<String>,
    pub amount: i64,
    pub quantity: Option<i64>,
    pub period: Option<Period>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceItem {
    pub id: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    code: Option<String>,
}

/// The client: one per process.
#[derive(Clone)]
pub struct StripeApi {
    http: reqwest::Client,
    base: String,
    key: SecretKey,
}

impl fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeApi").field("base", &self.base).finish_non_exhaustive()
    }
}

impl StripeApi {
    pub fn new(base: &str, key: SecretKey) -> anyhow::Result<StripeApi> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
        Ok(StripeApi { http, base: base.trim_end_matches('/').to_owned(), key })
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, what: &str) -> StripeResult<T> {
        let response = request.bearer_auth(&self.key.0).send().await.map_err(|e| {
            tracing::warn!(error = %e.without_url(), what, "the payment processor is unreachable");
            StripeError { status: 0, code: None, message: "the payment processor could not be reached".into() }
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|_| StripeError { status: 0, code: None, message: "the payment processor's answer was cut off".into() })?;
        if !(200..300).contains(&status) {
            let detail = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|b| b.error);
            let (message, code) = match detail {
                Some(d) => (d.message.unwrap_or_else(|| format!("refused with HTTP {status}")), d.code),
                None => (format!("refused with HTTP {status}"), None),
            };
            tracing::info!(status, code = code.as_deref().unwrap_or(""), what, "the payment processor refused a request");
            return Err(StripeError { status, code, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            tracing::error!(error = %e, what, "the payment processor's answer did not parse");
            StripeError { status: 502, code: None, message: format!("the payment processor's answer to {what} did not parse") }
        })
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, form: Form) -> StripeResult<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).form(&form.0), path).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> StripeResult<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query), path).await
    }

    async fn delete(&self, path: &str) -> StripeResult<serde_json::Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)), path).await
    }

    /// Makes sure a recurring per-unit plan with this id exists (the catalog's tiers, R5).
    pub async fn ensure_plan(&self, id: &str, name: &str, unit_amount_cents: i64, interval: &str) -> StripeResult<()> {
        match self.get::<serde_json::Value>(&format!("/v1/plans/{id}"), &[]).await {
            Ok(_) => return Ok(()),
            Err(e) if e.status == 404 => {}
            Err(e) => return Err(e),
        }
        let form = Form::new()
            .set("id", id)
            .set("amount", unit_amount_cents)
            .set("currency", "usd")
            .set("interval", interval)
            .set("product[name]", name);
        self.post::<serde_json::Value>("/v1/plans", form).await.map(|_| ())
    }

    pub async fn create_customer(&self, org_id: &str, email: &str) -> StripeResult<Customer> {
        self.post("/v1/customers", Form::new().set("email", email).set("metadata[org_id]", org_id)).await
    }

    /// R18: the customer and what Stripe holds under it (cards, subscriptions) go.
    pub async fn delete_customer(&self, customer: &str) -> StripeResult<()> {
        self.delete(&format!("/v1/customers/{customer}")).await.map(|_| ())
    }

    pub async fn update_customer_email(&self, customer: &str, email: &str) -> StripeResult<()> {
        self.post::<Customer>(&format!("/v1/customers/{customer}"), Form::new().set("email", email)).await.map(|_| ())
    }

    pub async fn create_setup_intent(&self, customer: &str) -> StripeResult<SetupIntent> {
        self.post("/v1/setup_intents", Form::new().set("customer", customer).set("usage", "off_session")).await
    }

    pub async fn setup_intent(&self, id: &str) -> StripeResult<SetupIntent> {
        self.get(&format!("/v1/setup_intents/{id}"), &[]).await
    }

    pub async fn payment_method(&self, id: &str) -> StripeResult<PaymentMethod> {
        self.get(&format!("/v1/payment_methods/{id}"), &[]).await
    }

    pub async fn attach_payment_method(&self, id: &str, customer: &str) -> StripeResult<PaymentMethod> {
        self.post(&format!("/v1/payment_methods/{id}/attach"), Form::new().set("customer", customer)).await
    }

    pub async fn set_default_payment_method(&self, customer: &str, payment_method: &str) -> StripeResult<()> {
        let form = Form::new().set("invoice_settings[default_payment_method]", payment_method);
        self.post::<Customer>(&format!("/v1/customers/{customer}"), form).await.map(|_| ())
    }

    /// A subscription of `quantity` units of `plan`. Without `trial_end`, its first period is
    /// invoiced and charged now (in advance); a refused charge fails the call and leaves no
    /// subscription. With `trial_end`, the first charge is at that time.
    pub async fn create_subscription(&self, customer: &str, plan: &str, quantity: u32, billing_plan_id: &str, trial_end: Option<i64>) -> StripeResult<Subscription> {
        let mut form = Form::new()
            .set("customer", customer)
            .set("items[0][plan]", plan)
            .set("items[0][quantity]", quantity)
            .set("metadata[billing_plan_id]", billing_plan_id);
        form = match trial_end {
            Some(at) => form.set("trial_end", at),
            None => form.set("payment_behavior", "error_if_incomplete"),
        };
        self.post("/v1/subscriptions", form).await
    }

    pub async fn cancel_subscription(&self, id: &str) -> StripeResult<()> {
        self.delete(&format!("/v1/subscriptions/{id}")).await.map(|_| ())
    }

    /// A one-off amount (negative: a credit) that the customer's next invoice settles. The
    /// description names the time it is for (Stripe's `period[...]` and localstripe's
    /// `period_start` differ, so neither is sent).
    pub async fn create_invoice_item(&self, customer: &str, amount_cents: i64, description: &str) -> StripeResult<InvoiceItem> {
        let form = Form::new().set("customer", customer).set("amount", amount_cents).set("currency", "usd").set("description", description);
        self.post("/v1/invoiceitems", form).await
    }

    pub async fn delete_invoice_item(&self, id: &str) -> StripeResult<()> {
        self.delete(&format!("/v1/invoiceitems/{id}")).await.map(|_| ())
    }

    pub async fn invoice(&self, id: &str) -> StripeResult<Invoice> {
        self.get(&format!("/v1/invoices/{id}"), &[]).await
    }

    /// Charges an open invoice now with the customer's default card.
    pub async fn pay_invoice(&self, id: &str) -> StripeResult<Invoice> {
        self.post(&format!("/v1/invoices/{id}/pay"), Form::new()).await
    }

    /// What the subscription's next renewal will charge, pending credits included.
    pub async fn upcoming_invoice(&self, customer: &str, subscription: &str) -> StripeResult<Invoice> {
        self.get("/v1/invoices/upcoming", &[("customer", customer), ("subscription", subscription)]).await
    }
}
