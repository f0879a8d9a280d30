//! Billing plans as Stripe subscriptions, against localstripe (R10-R13): payment in advance,
//! an upgrade's prorated charge, Additional Users charged in full and credited pro rata, a
//! downgrade at the anniversary, a refused card, and a failed renewal that blocks until paid.
//! Every amount is computed here independently and compared with what Stripe invoiced.

use chrono::{DateTime, Utc};
use matrixhost_tests::backups::{advance_clock, server_now};
use matrixhost_tests::console::Browser;
use matrixhost_tests::mail::{link_to, wait_for_mail, SmtpServer};
use matrixhost_tests::stripe::{LocalStripe, CARD_CHARGES_FAIL, CARD_DECLINED, CARD_OK};
use matrixhost_tests::{assert_api_error, expect_status, timestamp, workspace_bin, Backend, TestServer, Value};
use serde_json::json;

const DAY: i64 = 86_400;

/// localstripe and a matrixhostd (with a test clock) billing through it, its webhook registered.
async fn billing_server() -> (LocalStripe, tempfile::TempDir, TestServer) {
    let stripe = LocalStripe::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = stripe.server_args(dir.path());
    args.push("--test-clock".into());
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).args(args).start().await;
    stripe.register_webhook("matrixhost", &server.url("/v1/stripe/webhook"), matrixhost_tests::stripe::WEBHOOK_SECRET).await;
    (stripe, dir, server)
}

/// Pro rata, rounded to the nearest cent: written here again on purpose, not imported.
fn pro_rata(amount: i64, remaining: i64, whole: i64) -> i64 {
    ((amount as f64) * (remaining as f64) / (whole as f64)).round() as i64
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_seconds()
}

fn lines(invoice: &Value) -> Vec<(String, i64)> {
    invoice["lines"]["data"].as_array().unwrap().iter().map(|l| (l["description"].as_str().unwrap_or("").to_owned(), l["amount"].as_i64().unwrap())).collect()
}

async fn put_plan(server: &TestServer, id: &str, body: Value) -> Value {
    let resp = server.client().put(&format!("/v1/billing-plans/{id}"), &body).await;
    assert_eq!(resp.0.as_u16(), 200, "{:?}\n--- server log ---\n{}", resp.2, server.log());
    resp.2
}

/// The invoices made since the last call (localstripe dates them by its own clock, to the second,
/// so their order in its list is not the order they were made in).
struct InvoiceWatch {
    customer: String,
    seen: Vec<String>,
}

impl InvoiceWatch {
    async fn new_ones(&mut self, stripe: &LocalStripe) -> Vec<Value> {
        let fresh: Vec<Value> = stripe.invoices(&self.customer).await.into_iter().filter(|i| !self.seen.iter().any(|s| i["id"] == s.as_str())).collect();
        self.seen.extend(fresh.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        fresh
    }
}

/// The customer's only live subscription at the processor.
async fn live_subscription(stripe: &LocalStripe, customer: &str) -> Value {
    let list = stripe.get("/v1/subscriptions", &[("customer", customer)]).await;
    let live: Vec<&Value> = list["data"].as_array().unwrap().iter().filter(|s| s["status"] != "canceled").collect();
    assert_eq!(live.len(), 1, "one live subscription per billing plan: {list}");
    live[0].clone()
}

#[tokio::test]
async fn r10_r11_upgrades_additional_users_and_downgrades_charge_and_credit_exact_amounts() {
    let (stripe, _keys, server) = billing_server().await;
    let client = server.client();

    // R11: paid in advance, so no card, no plan.
    let resp = client.post("/v1/billing-plans", &json!({"plan": "nickel"})).await;
    let message = assert_api_error(&resp, 402, Some("payment_required"), Some("payment_method_id"));
    assert!(message.contains("/console/billing"), "says where to add a card: {message}");

    // A card the issuer refuses: a clear error, and nothing is created.
    let declined = stripe.card(CARD_DECLINED).await;
    let resp = client.post("/v1/billing-plans", &json!({"plan": "nickel", "payment_method_id": declined})).await;
    let message = assert_api_error(&resp, 402, Some("payment_failed"), Some("payment_method_id"));
    assert!(message.contains("declined") && message.contains("Nothing was changed"), "{message}");
    let listed: Value = expect_status(&client.get("/v1/billing-plans").await, 200);
    assert_eq!(listed["items"], json!([]), "nothing half-created");

    // Nickel: 10 MAU + 2 Additional Users at $5.00 a month, paid now for the first month.
    let card = stripe.card(CARD_OK).await;
    let created: Value = expect_status(&client.post("/v1/billing-plans", &json!({"plan": "nickel", "additional_users": 2, "payment_method_id": card})).await, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["card"], json!({"brand": "visa", "last4": "4242"}), "R13: brand and last four only");
    let customer = stripe.only_customer().await;
    let mut watch = InvoiceWatch { customer: customer.clone(), seen: vec![] };
    let invoices = watch.new_ones(&stripe).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!((invoices[0]["status"].as_str(), invoices[0]["total"].as_i64()), (Some("paid"), Some(12 * 500)), "{}", invoices[0]);
    let sub = live_subscription(&stripe, &customer).await;
    assert_eq!((sub["plan"]["id"].as_str(), sub["quantity"].as_i64()), (Some("mh_nickel_monthly"), Some(12)));

    // Ten days on, an upgrade to Silver (50 MAU at $4.00): a new month starts now at 52 × $4.00,
    // and the unused part of Nickel's month is credited on the same invoice.
    advance_clock(&client, 10 * DAY).await;
    let (start, end) = (timestamp(&created["current_period_start"]), timestamp(&created["current_period_end"]));
    let upgraded = put_plan(&server, &id, json!({"plan": "silver", "additional_users": 2})).await;
    let at = timestamp(&upgraded["current_period_start"]);
    assert_eq!(upgraded["active_plan"], "silver", "R11: at once");
    let credit = pro_rata(12 * 500, seconds(at, end), seconds(start, end));
    assert!((3900..=4200).contains(&credit), "about two thirds of $60 are unused: {credit}");
    let invoices = watch.new_ones(&stripe).await;
    assert_eq!(invoices.len(), 1);
    let upgrade = &invoices[0];
    assert_eq!(upgrade["status"], "paid");
    assert_eq!(upgrade["total"].as_i64(), Some(52 * 400 - credit), "{upgrade}");
    assert!(lines(upgrade).iter().any(|(d, a)| d.starts_with("Unused time on Nickel × 12") && *a == -credit), "{:?}", lines(upgrade));

    // Five days on, three more Additional Users: charged in full, a new month at 55 × $4.00, the
    // unused part of the month just bought credited.
    advance_clock(&client, 5 * DAY).await;
    let (start, end) = (at, timestamp(&upgraded["current_period_end"]));
    let more = put_plan(&server, &id, json!({"plan": "silver", "additional_users": 5})).await;
    let at = timestamp(&more["current_period_start"]);
    assert_eq!(more["mau_cap"], 55);
    let credit = pro_rata(52 * 400, seconds(at, end), seconds(start, end));
    let invoices = watch.new_ones(&stripe).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["total"].as_i64(), Some(55 * 400 - credit), "{}", invoices[2]);

    // Six days on, four of them removed: no charge now; their unused time is credited pro rata
    // and settled with the next invoice (R10, R11).
    advance_clock(&client, 6 * DAY).await;
    let (start, end) = (at, timestamp(&more["current_period_end"]));
    let fewer = put_plan(&server, &id, json!({"plan": "silver", "additional_users": 1})).await;
    let at = timestamp(&fewer["updated_at"]);
    assert_eq!(fewer["current_period_start"], more["current_period_start"], "the period stays");
    let removed_credit = pro_rata(4 * 400, seconds(at, end), seconds(start, end));
    assert!((1150..=1400).contains(&removed_credit), "about four fifths of a month of 4 × $4.00: {removed_credit}");
    assert!(watch.new_ones(&stripe).await.is_empty(), "nothing charged now");

    // A downgrade to Nickel waits for the anniversary (R11): nothing now, Silver stays in force.
    let downgraded = put_plan(&server, &id, json!({"plan": "nickel", "additional_users": 1})).await;
    assert_eq!((downgraded["active_plan"].as_str(), downgraded["pending_plan"].as_str()), (Some("silver"), Some("nickel")));
    assert_eq!(downgraded["pending_change_at"], more["current_period_end"]);
    assert!(watch.new_ones(&stripe).await.is_empty(), "a downgrade charges nothing now");
    let sub = live_subscription(&stripe, &customer).await;
    assert_eq!((sub["plan"]["id"].as_str(), sub["quantity"].as_i64()), (Some("mh_nickel_monthly"), Some(11)), "the renewal bills Nickel × 11");

    // The renewal (Stripe's clock; the test plays it): Nickel × 11, less the removed users' credit.
    let renewal = stripe.renew(&customer, sub["id"].as_str().unwrap()).await;
    assert_eq!(renewal["status"], "paid", "{renewal}");
    assert_eq!(renewal["total"].as_i64(), Some(11 * 500 - removed_credit), "{renewal}");
    assert!(lines(&renewal).iter().any(|(d, a)| d.starts_with("Unused time on 4 Additional Users (Silver)") && *a == -removed_credit), "{:?}", lines(&renewal));

    // At the anniversary, Nickel is in force.
    let to_anniversary = seconds(server_now(&client).await, timestamp(&downgraded["pending_change_at"]));
    advance_clock(&client, to_anniversary + 60).await;
    let after: Value = expect_status(&client.get(&format!("/v1/billing-plans/{id}")).await, 200);
    assert_eq!((after["active_plan"].as_str(), after["mau_cap"].as_i64()), (Some("nickel"), Some(11)));
    assert!(after["pending_plan"].is_null());

    // Someone else's card (attached to another Stripe customer) is as good as unknown here.
    let stranger = stripe.post("/v1/customers", &[("email", "mallory@evil.example")]).await;
    let theirs = stripe.card(CARD_OK).await;
    stripe.post(&format!("/v1/payment_methods/{theirs}/attach"), &[("customer", stranger["id"].as_str().unwrap())]).await;
    let resp = server.client().put(&format!("/v1/billing-plans/{id}"), &json!({"plan": "nickel", "additional_users": 1, "payment_method_id": theirs})).await;
    assert_api_error(&resp, 404, Some("not_found"), Some("payment_method_id"));
    let unchanged: Value = expect_status(&client.get(&format!("/v1/billing-plans/{id}")).await, 200);
    assert_eq!(unchanged["card"]["last4"], "4242");

    // Deleting the plan ends the subscription: no renewal is charged for it.
    expect_status(&client.delete(&format!("/v1/billing-plans/{id}")).await, 204);
    let list = stripe.get("/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await;
    assert!(list["data"].as_array().unwrap().iter().all(|s| s["status"] == "canceled"), "{list}");
    // R13: the card number never reached matrixhost's log.
    assert!(!server.log().contains(CARD_OK) && !server.log().contains("424242"), "{}", server.log());
}

/// R12: a renewal that cannot be collected makes the plan `past_due` (Stripe's webhook); paying
/// the open invoice with another card makes it `active` again.
#[tokio::test]
async fn r12_a_failed_renewal_is_past_due_until_paid() {
    let (stripe, _keys, server) = billing_server().await;
    let client = server.client();
    // This card pays nothing: creating a plan with it fails at the first charge.
    let failing = stripe.card(CARD_CHARGES_FAIL).await;
    let resp = client.post("/v1/billing-plans", &json!({"plan": "silver", "payment_method_id": failing})).await;
    assert_api_error(&resp, 402, Some("payment_failed"), Some("payment_method_id"));
    assert!(expect_status(&client.get("/v1/billing-plans").await, 200)["items"].as_array().unwrap().is_empty());

    let card = stripe.card(CARD_OK).await;
    let plan: Value = expect_status(&client.post("/v1/billing-plans", &json!({"plan": "silver", "payment_method_id": card})).await, 201);
    let id = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["status"], "active");
    let customer = stripe.only_customer().await;
    let sub = live_subscription(&stripe, &customer).await;

    // The renewal is debited from an account that bounces the debit.
    let bouncing = stripe.bouncing_debit().await;
    stripe.post(&format!("/v1/payment_methods/{bouncing}/attach"), &[("customer", &customer)]).await;
    stripe.post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", &bouncing)]).await;
    let renewal = stripe.renew(&customer, sub["id"].as_str().unwrap()).await;
    assert_ne!(renewal["status"], "paid", "{renewal}");
    let past_due = wait_for_status(&server, &id, "past_due").await;
    assert_eq!(past_due["active_plan"], "silver");

    // While it is unpaid, the plan does not change (the open invoice belongs to this subscription).
    let resp = server.client().put(&format!("/v1/billing-plans/{id}"), &json!({"plan": "gold"})).await;
    let message = assert_api_error(&resp, 402, Some("payment_required"), Some("plan"));
    assert!(message.contains("R12") && message.contains("/console/billing"), "{message}");

    // Paying: a working card, then the open invoice is charged.
    let good = stripe.card(CARD_OK).await;
    let resp = put_plan(&server, &id, json!({"plan": "silver", "payment_method_id": good})).await;
    assert_eq!(resp["card"]["last4"], "4242");
    let open = stripe.invoices(&customer).await.into_iter().find(|i| i["status"] == "open" && i["subscription"] == sub["id"]).expect("the unpaid renewal");
    stripe.post(&format!("/v1/invoices/{}/pay", open["id"].as_str().unwrap()), &[]).await;
    wait_for_status(&server, &id, "active").await;
}

async fn wait_for_status(server: &TestServer, id: &str, status: &str) -> Value {
    let client = server.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let plan: Value = expect_status(&client.get(&format!("/v1/billing-plans/{id}")).await, 200);
        if plan["status"] == status {
            return plan;
        }
        assert!(std::time::Instant::now() < deadline, "billing plan never became {status}: {plan}\n--- server log ---\n{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Signs up through the console, verifies through the mailed link and logs in.
async fn customer(server: &TestServer, smtp: &SmtpServer, email: &str, org: &str) -> Browser {
    let b = Browser::new(server);
    assert_eq!(b.sign_up(email, org, "harbour lights ninety").await.status, 303);
    let mail = wait_for_mail(&smtp.maildir(), email, "Verify your email", 0).await;
    assert_eq!(b.follow_link(&link_to(&mail.text, "/console/verify"), &[]).await.status, 303);
    assert_eq!(b.log_in(email, "harbour lights ninety").await.status, 303);
    b
}

/// As the attacker, with a console session of another organization: the victim's invoices can
/// be neither paid nor linked, the victim's card form (its SetupIntent) cannot be redeemed, and
/// the victim's billing contact is not theirs to change. What the victim sees stays the same.
#[tokio::test]
async fn another_organization_can_touch_no_part_of_a_customers_billing() {
    let smtp = SmtpServer::start().await;
    let stripe = LocalStripe::start().await;
    let keys = tempfile::tempdir().unwrap();
    let mut args = stripe.server_args(keys.path());
    args.extend(["--smtp-url".to_owned(), smtp.url()]);
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).args(args).start().await;
    let victim = customer(&server, &smtp, "it@victim.example", "victim").await;
    let mallory = customer(&server, &smtp, "m@evil.example", "evil").await;

    // The victim has a card (through the API, as a Terraform user may) and a paid plan.
    let page = victim.submit("/console/tokens", &[("name", "tf"), ("expires_in_days", "30")]).await;
    let token = page.body.split("mh_").nth(1).map(|rest| format!("mh_{}", &rest[..64])).expect("the new token");
    let api = server.client().with_token(&token);
    let card = stripe.card(CARD_OK).await;
    let plan: Value = expect_status(&api.post("/v1/billing-plans", &json!({"plan": "nickel", "payment_method_id": card})).await, 201);
    let billing = victim.get("/console/billing").await;
    let invoice_id = billing.body.split("/console/billing/invoices/").nth(1).and_then(|rest| rest.split('/').next()).expect("the victim's invoice").to_owned();
    assert!(!billing.body.contains("_secret_"), "the page carries no SetupIntent: the form asks for one when sent");
    let intent = victim.post("/console/billing/card/intent", &[]).await;
    assert_eq!(intent.status, 200, "{}", intent.body);
    assert_eq!(intent.headers["cache-control"], "no-store");
    let client_secret: Value = serde_json::from_str(&intent.body).unwrap();
    let setup_intent = client_secret["client_secret"].as_str().and_then(|s| s.split("_secret_").next()).expect("the victim's card form").to_owned();
    assert!(setup_intent.starts_with("seti_"), "{setup_intent}");

    // Mallory knows (or guesses) the ids. Viewing the billing page makes no Stripe customer.
    mallory.get("/console/billing").await;
    let victims = stripe.only_customer().await;
    let forged = mallory.post("/console/billing/card/intent", &[("csrf", "forged")]).await;
    assert_eq!(forged.status, 403, "a card form without the CSRF token");
    let pay = mallory.post(&format!("/console/billing/invoices/{invoice_id}/pay"), &[]).await;
    assert_eq!(pay.status, 422, "paying someone else's invoice: {}", pay.body);
    assert!(pay.body.contains("invoice not found"), "{}", pay.body);
    let link = mallory.post(&format!("/console/billing/invoices/{invoice_id}/link"), &[]).await;
    assert_eq!(link.status, 404, "a link to someone else's invoice");
    // The victim's SetupIntent, confirmed with Mallory's card, is not Mallory's to redeem.
    let theirs = stripe.card(CARD_OK).await;
    stripe.post(&format!("/v1/setup_intents/{setup_intent}/confirm"), &[("payment_method", &theirs)]).await;
    let redeemed = mallory.post("/console/billing/card", &[("setup_intent", &setup_intent)]).await;
    assert_eq!(redeemed.status, 422, "{}", redeemed.body);
    assert!(redeemed.body.contains("the card form expired"), "{}", redeemed.body);
    assert!(!mallory.get("/console/billing").await.body.contains("ending in"), "Mallory got no card");
    // An account that has not verified its email address gets no card form (R15).
    let unverified = Browser::new(&server);
    assert_eq!(unverified.sign_up("new@elsewhere.example", "elsewhere", "harbour lights ninety").await.status, 303);
    assert_eq!(unverified.log_in("new@elsewhere.example", "harbour lights ninety").await.status, 303);
    assert!(!unverified.get("/console/billing").await.body.contains("card-form"));
    let refused = unverified.post("/console/billing/card/intent", &[]).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("verify your email address first (R15)"), "{}", refused.body);
    assert_eq!(stripe.only_customer().await, victims, "none of these attempts made a Stripe customer");
    // Without the CSRF token a form does nothing, even for the victim's own session.
    let forged = victim.post("/console/billing/contact", &[("csrf", "forged"), ("contact_name", "Mallory"), ("contact_email", "m@evil.example")]).await;
    assert_eq!(forged.status, 403);

    let after = victim.get("/console/billing").await.body;
    assert!(after.contains("visa card ending in 4242") && !after.contains("m@evil.example"), "{after}");
    let still: Value = expect_status(&api.get(&format!("/v1/billing-plans/{}", plan["id"].as_str().unwrap())).await, 200);
    assert_eq!(still["status"], "active");
}
