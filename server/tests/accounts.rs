//! Customer accounts through the console (R14-R18, R20, R21), against the real matrixhostd and
//! a real SMTP server (aiosmtpd): every rule, with its bad inputs.

mod common;

use common::*;
use matrixhost_tests::backups::advance_clock;
use matrixhost_tests::console::{Browser, Page};
use matrixhost_tests::mail::{link_to, read_maildir, token_of, wait_for_mail, SmtpServer};

const PASSWORD: &str = "plum harbour ninety";
const NEW_PASSWORD: &str = "quiet lantern forty";

async fn start_with_mail(backend: Backend) -> (TestServer, SmtpServer) {
    let smtp = SmtpServer::start().await;
    let server = builder(backend).args(["--test-clock", "--smtp-url", &smtp.url()]).start().await;
    (server, smtp)
}

fn redirect(page: &Page) -> String {
    assert_eq!(page.status, 303, "expected a redirect, got {}:\n{}", page.status, page.body);
    page.location().unwrap()
}

/// Signs up, verifies through the mailed link and logs in.
async fn verified_customer(server: &TestServer, smtp: &SmtpServer, email: &str, org: &str) -> Browser {
    let b = Browser::new(server);
    assert_eq!(redirect(&b.sign_up(email, org, PASSWORD).await), "/console/signup/sent");
    let mail = wait_for_mail(&smtp.maildir(), email, "Verify your email", 0).await;
    assert_eq!(redirect(&b.follow_link(&link_to(&mail.text, "/console/verify"), &[]).await), "/console/login?notice=verified");
    assert_eq!(redirect(&b.log_in(email, PASSWORD).await), "/console");
    b
}

/// Creates an API token in the console and returns its secret (shown once).
async fn console_token(b: &Browser, name: &str, days: &str) -> String {
    let page = b.submit("/console/tokens", &[("name", name), ("expires_in_days", days)]).await;
    assert_eq!(page.status, 201, "{}", page.body);
    let start = page.body.find("id=\"new-token\">").expect("the new token is shown") + "id=\"new-token\">".len();
    page.body[start..start + 67].to_owned()
}

fn api(server: &TestServer, token: &str) -> Client {
    server.client().with_token(token)
}

async fn r15_sign_up_then_verify_before_subscribing(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = Browser::new(&server);
    let form = b.get("/console/signup").await;
    assert!(form.body.contains("I am at least 16 years old") && form.body.contains("customer terms (version"), "R20, R21 on the form");
    assert_eq!(redirect(&b.sign_up("ops@acme.example", "acme", PASSWORD).await), "/console/signup/sent");
    let mail = wait_for_mail(&smtp.maildir(), "ops@acme.example", "Verify your email", 0).await;
    assert!(!mail.text.is_empty() && mail.html.contains("<a href="), "plain text and HTML");
    let link = link_to(&mail.text, "/console/verify");
    assert!(mail.html.contains(&link.replace('&', "&amp;")));

    // Unverified: the console says so, and the API refuses a subscription (R15).
    assert_eq!(redirect(&b.log_in("ops@acme.example", PASSWORD).await), "/console");
    assert!(b.get("/console").await.body.contains("is not verified yet"));
    let token = console_token(&b, "terraform", "30").await;
    let refused = api(&server, &token).post("/v1/billing-plans", &json!({ "plan": "nickel" })).await;
    assert_api_error(&refused, 403, None, None);

    // The link opens a page; the button verifies. Logged in, it lands on the console.
    assert_eq!(redirect(&b.follow_link(&link, &[]).await), "/console?notice=verified");
    expect_status(&api(&server, &token).post("/v1/billing-plans", &json!({ "plan": "nickel" })).await, 201);
    assert!(!b.get("/console").await.body.contains("is not verified yet"));

    // It works once.
    let again = b.follow_link(&link, &[]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("expired, was already used, or is not one we sent"));
}
both_backends!(r15_sign_up_then_verify_before_subscribing);

async fn sign_up_names_every_field_at_fault_and_creates_nothing(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = Browser::new(&server);
    let page = b.submit("/console/signup", &[("email", "not-an-address"), ("organization", "Bad Name!"), ("password", "short")]).await;
    assert_eq!(page.status, 422);
    assert!(page.field_error("email").unwrap().contains("not a valid email address"));
    assert!(page.field_error("organization").unwrap().contains("lower-case DNS label"));
    assert!(page.field_error("password").unwrap().contains("at least 12 characters (R14)"));
    assert!(page.field_error("full_name").is_some());
    assert!(page.field_error("age_confirmed").unwrap().contains("at least 16") && page.field_error("age_confirmed").unwrap().contains("R21"));
    assert!(page.field_error("terms_accepted").unwrap().contains("R20"));
    assert!(page.body.contains("aria-invalid=\"true\"") && page.body.contains("aria-describedby=\"email-hint email-error\""), "errors are tied to their fields");
    assert!(page.body.contains("value=\"not-an-address\""), "what was typed stays, except the password");

    // A well-known password, and each attestation left out on its own.
    let breached = b.submit("/console/signup", &[("email", "a@acme.example"), ("full_name", "A"), ("organization", "acme"), ("password", "password1234"), ("age_confirmed", "yes"), ("terms_accepted", "yes")]).await;
    assert!(breached.field_error("password").unwrap().contains("well-known"));
    let no_age = b.submit("/console/signup", &[("email", "a@acme.example"), ("full_name", "A"), ("organization", "acme"), ("password", PASSWORD), ("terms_accepted", "yes")]).await;
    assert_eq!(no_age.status, 422);
    assert!(no_age.field_error("age_confirmed").is_some() && no_age.field_error("terms_accepted").is_none());
    let no_terms = b.submit("/console/signup", &[("email", "a@acme.example"), ("full_name", "A"), ("organization", "acme"), ("password", PASSWORD), ("age_confirmed", "yes")]).await;
    assert!(no_terms.field_error("terms_accepted").is_some());

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(read_maildir(&smtp.maildir()).is_empty(), "no mail for a refused sign-up");
    assert_eq!(b.log_in("a@acme.example", PASSWORD).await.status, 401, "no account was made");
    // The organization name is still free.
    assert_eq!(redirect(&b.sign_up("a@acme.example", "acme", PASSWORD).await), "/console/signup/sent");
}
both_backends!(sign_up_names_every_field_at_fault_and_creates_nothing);

async fn answers_never_reveal_whether_an_account_exists(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let owner = verified_customer(&server, &smtp, "owner@acme.example", "acme").await;
    drop(owner);
    let stranger = Browser::new(&server);

    // Sign-up with a known address: the same answer; the owner is told by mail, no org is made.
    assert_eq!(redirect(&stranger.sign_up("owner@acme.example", "acme-two", PASSWORD).await), "/console/signup/sent");
    let told = wait_for_mail(&smtp.maildir(), "owner@acme.example", "Someone tried to sign up", 0).await;
    assert!(!told.text.contains("token="), "that mail carries no link that grants anything");
    assert_eq!(redirect(&stranger.sign_up("new@acme.example", "acme-two", PASSWORD).await), "/console/signup/sent", "acme-two was not taken");

    // Log-in: an unknown address and a wrong password look the same.
    let unknown = stranger.log_in("nobody@acme.example", PASSWORD).await;
    let wrong = stranger.log_in("owner@acme.example", "wrong password here").await;
    assert_eq!((unknown.status.as_u16(), wrong.status.as_u16()), (401, 401));
    let message = |p: &Page| p.body[p.body.find("error-summary").unwrap()..].split("</div>").next().unwrap().to_owned();
    assert_eq!(message(&unknown), message(&wrong));

    // Reset: the same page either way; only the account's address gets mail.
    let for_unknown = stranger.submit("/console/reset", &[("email", "nobody@acme.example")]).await;
    let for_known = stranger.submit("/console/reset", &[("email", "owner@acme.example")]).await;
    assert_eq!(redirect(&for_unknown), "/console/reset/sent");
    assert_eq!(redirect(&for_known), "/console/reset/sent");
    wait_for_mail(&smtp.maildir(), "owner@acme.example", "Reset your matrixhost password", 0).await;
    assert!(read_maildir(&smtp.maildir()).iter().all(|m| !m.to.contains("nobody@")));
}
both_backends!(answers_never_reveal_whether_an_account_exists);

async fn r15_verification_links_expire_work_once_and_cannot_be_forged(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = Browser::new(&server);
    b.sign_up("ops@acme.example", "acme", PASSWORD).await;
    let first = link_to(&wait_for_mail(&smtp.maildir(), "ops@acme.example", "Verify", 0).await.text, "/console/verify");

    // Forged: a token we never sent, and one a character off.
    let forged = b.submit("/console/verify", &[("token", &"ab".repeat(32))]).await;
    assert_eq!(forged.status, 400);
    let mut off = token_of(&first);
    off.replace_range(0..1, if off.starts_with('a') { "b" } else { "a" });
    assert_eq!(b.submit("/console/verify", &[("token", &off)]).await.status, 400);

    // Expired after 24 hours.
    advance_clock(&server.client(), 24 * 3600 + 60).await;
    assert_eq!(b.follow_link(&first, &[]).await.status, 400);

    // A new link replaces the old one.
    b.log_in("ops@acme.example", PASSWORD).await;
    b.get("/console").await;
    assert_eq!(redirect(&b.post("/console/verify/resend", &[]).await), "/console?notice=verification-sent");
    let second = link_to(&wait_for_mail(&smtp.maildir(), "ops@acme.example", "Verify", 1).await.text, "/console/verify");
    assert_ne!(first, second);
    assert_eq!(redirect(&b.follow_link(&second, &[]).await), "/console?notice=verified");
    assert_eq!(b.follow_link(&second, &[]).await.status, 400, "used");
}
both_backends!(r15_verification_links_expire_work_once_and_cannot_be_forged);

async fn r14_passwords_are_argon2id_with_a_pepper_outside_the_database_and_never_logged(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let token = console_token(&b, "ci", "30").await;
    let db = server.database_bytes();
    let text = String::from_utf8_lossy(&db);
    let start = text.find("$argon2id$").expect("an argon2id hash in the accounts row");
    let hash: String = text[start..].chars().take_while(|c| c.is_ascii_graphic()).collect();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "argon2id with OWASP's parameters: {hash}");
    let parts: Vec<&str> = hash.split('$').collect();
    assert!(parts.len() == 6 && parts[4].len() >= 22, "a salt of 128 bits or more: {hash}");

    let pepper = std::fs::read_to_string(server.state_dir().join("api/password-pepper.key")).unwrap();
    let pepper = pepper.trim();
    assert_eq!(pepper.len(), 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(server.state_dir().join("api/password-pepper.key")).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the pepper is private to the service");
    for secret in [PASSWORD, pepper, &token, &token[3..]] {
        assert!(!contains_bytes(&db, secret), "the database must not hold `{}…`", &secret[..6]);
        assert!(!server.log().contains(secret), "the log must not hold `{}…`", &secret[..6]);
    }
    // Nor the one-time link's token.
    let link_token = token_of(&link_to(&wait_for_mail(&smtp.maildir(), "ops@acme.example", "Verify", 0).await.text, "/console/verify"));
    assert!(!contains_bytes(&db, &link_token) && !server.log().contains(&link_token));
}
both_backends!(r14_passwords_are_argon2id_with_a_pepper_outside_the_database_and_never_logged);

async fn log_ins_are_throttled_per_account_and_per_address(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let attacker = Browser::new(&server);
    for _ in 0..5 {
        assert_eq!(attacker.log_in("ops@acme.example", "wrong password here").await.status, 401);
    }
    // The right password no longer helps for a while, and the answer says why.
    let held = attacker.log_in("ops@acme.example", PASSWORD).await;
    assert_eq!(held.status, 429);
    assert!(held.body.contains("Too many failed log-ins"));
    // Unknown addresses are counted the same way (no difference to learn from).
    for _ in 0..5 {
        attacker.log_in("ghost@acme.example", "wrong password here").await;
    }
    assert_eq!(attacker.log_in("ghost@acme.example", PASSWORD).await.status, 429);
    // Per address: spraying many accounts from one client hits its own limit.
    for i in 0..10 {
        attacker.log_in(&format!("spray{i}@acme.example"), "wrong password here").await;
    }
    assert_eq!(attacker.log_in("fresh@acme.example", "whatever it is").await.status, 429);
}
both_backends!(log_ins_are_throttled_per_account_and_per_address);

async fn every_form_needs_its_csrf_token_and_cookies_are_locked_down(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    for (path, fields) in [
        ("/console/tokens", vec![("name", "evil"), ("expires_in_days", "30")]),
        ("/console/account/name", vec![("full_name", "Mallory")]),
        ("/console/sessions/end-all", vec![]),
        ("/console/logout", vec![]),
        ("/console/login", vec![("email", "ops@acme.example"), ("password", PASSWORD)]),
        ("/console/signup", vec![("email", "x@acme.example")]),
    ] {
        for csrf in ["", "0000000000000000000000000000000000000000000000000000000000000000"] {
            let mut f = fields.clone();
            f.push(("csrf", csrf));
            let page = b.post(path, &f).await;
            assert_eq!(page.status, 403, "{path} with csrf `{csrf}`");
            assert!(page.body.contains("Nothing was changed"));
        }
    }
    let account = b.get("/console/account").await;
    assert_eq!(account.status, 200, "still logged in");
    // Every label points at exactly one field.
    let ids: Vec<&str> = account.body.match_indices(" id=\"").map(|(i, _)| account.body[i + 5..].split('"').next().unwrap()).collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate ids on the account page: {ids:?}");
    for target in account.body.match_indices("<label for=\"").map(|(i, _)| account.body[i + 12..].split('"').next().unwrap()) {
        assert!(ids.contains(&target), "a label for a missing field `{target}`");
    }
    assert!(account.body.contains("Ada Operator"), "the name was not changed");
    assert!(b.get("/console/tokens").await.body.contains("No tokens yet"));

    // Cookie flags: HttpOnly and SameSite=Lax; no Secure over plain HTTP.
    let fresh = Browser::new(&server);
    let login = fresh.log_in("ops@acme.example", PASSWORD).await;
    let session = login.set_cookies().into_iter().find(|c| c.starts_with("mh_session=")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Path=/") && !session.contains("Secure"), "{session}");
    assert_eq!(account.headers["cache-control"], "no-store");
    assert_eq!(account.headers["referrer-policy"], "no-referrer");
    assert_eq!(account.headers["x-frame-options"], "DENY");

    // Behind HTTPS, Secure too.
    let https = builder(backend).args(["--smtp-url", &smtp.url(), "--public-url", "https://console.example"]).start().await;
    let page = Browser::new(&https).get("/console/login").await;
    let csrf = page.set_cookies().into_iter().find(|c| c.starts_with("mh_csrf=")).expect("a CSRF cookie");
    assert!(csrf.contains("Secure") && csrf.contains("HttpOnly"), "{csrf}");
}
both_backends!(every_form_needs_its_csrf_token_and_cookies_are_locked_down);

async fn r16_sessions_are_listed_ended_and_signed_with_rotating_keys(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let laptop = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let phone = Browser::at(&server.base_url(), "phone browser");
    assert_eq!(redirect(&phone.log_in("ops@acme.example", PASSWORD).await), "/console");
    let list = laptop.get("/console/account").await;
    assert!(list.body.contains("matrixhost-tests browser (this session)") && list.body.contains("phone browser"), "both sessions listed");

    // A cookie with its MAC changed, or signed by a key we never made, is no session.
    let cookie = laptop.cookie("mh_session").unwrap();
    let forger = Browser::new(&server);
    let mut bad_mac = cookie.clone();
    let last = bad_mac.pop().unwrap();
    bad_mac.push(if last == '0' { '1' } else { '0' });
    for forged in [bad_mac, format!("sk_madeup.{}", cookie.split_once('.').unwrap().1)] {
        forger.set_cookie("mh_session", &forged);
        assert_eq!(redirect(&forger.get("/console").await), "/console/login");
    }

    // A day later a new key signs: an active session's cookie is re-signed with it.
    advance_clock(&server.client(), 25 * 3600).await;
    let page = laptop.get("/console").await;
    assert_eq!(page.status, 200);
    let resigned = laptop.cookie("mh_session").unwrap();
    assert_ne!(resigned.split('.').next(), cookie.split('.').next(), "signed with the newer key");
    assert_eq!(resigned.split('.').nth(1), cookie.split('.').nth(1), "the same session");

    // The operator retires every older key: sessions signed with them end at once.
    server.cli_ok(&["session-keys", "rotate", "--retire-old"]).await;
    assert_eq!(redirect(&phone.get("/console").await), "/console/login", "the phone's cookie was signed by a retired key");
    assert_eq!(redirect(&laptop.get("/console").await), "/console/login");
    let fresh = Browser::new(&server);
    assert_eq!(redirect(&fresh.log_in("ops@acme.example", PASSWORD).await), "/console", "the new key signs new sessions");

    // Log out everywhere.
    let other = Browser::new(&server);
    other.log_in("ops@acme.example", PASSWORD).await;
    fresh.get("/console/account").await;
    assert_eq!(redirect(&fresh.post("/console/sessions/end-all", &[]).await), "/console/login?notice=logged-out-everywhere");
    assert_eq!(redirect(&other.get("/console").await), "/console/login");
}
both_backends!(r16_sessions_are_listed_ended_and_signed_with_rotating_keys);

async fn r16_a_password_reset_uses_a_short_lived_link_and_ends_every_session(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let laptop = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let phone = Browser::new(&server);
    phone.log_in("ops@acme.example", PASSWORD).await;
    let anon = Browser::new(&server);

    anon.submit("/console/reset", &[("email", "ops@acme.example")]).await;
    let expired = link_to(&wait_for_mail(&smtp.maildir(), "ops@acme.example", "Reset your", 0).await.text, "/console/reset/confirm");
    advance_clock(&server.client(), 3600 + 60).await;
    assert_eq!(anon.get(&expired).await.status, 400, "a reset link lasts an hour");

    anon.submit("/console/reset", &[("email", "ops@acme.example")]).await;
    let link = link_to(&wait_for_mail(&smtp.maildir(), "ops@acme.example", "Reset your", 1).await.text, "/console/reset/confirm");
    let weak = anon.follow_link(&link, &[("password", "short")]).await;
    assert_eq!(weak.status, 422);
    assert!(weak.field_error("password").unwrap().contains("12 characters"));
    assert_eq!(redirect(&anon.follow_link(&link, &[("password", NEW_PASSWORD)]).await), "/console/login?notice=password-reset", "a refused password left the link usable");
    assert_eq!(anon.get(&link).await.status, 400, "used once");
    assert_eq!(anon.post("/console/reset/confirm", &[("token", &token_of(&link)), ("password", "another fine password")]).await.status, 400);

    for b in [&laptop, &phone] {
        assert_eq!(redirect(&b.get("/console").await), "/console/login", "every session ended");
    }
    wait_for_mail(&smtp.maildir(), "ops@acme.example", "password was changed", 0).await;
    assert_eq!(anon.log_in("ops@acme.example", PASSWORD).await.status, 401);
    assert_eq!(redirect(&anon.log_in("ops@acme.example", NEW_PASSWORD).await), "/console");
}
both_backends!(r16_a_password_reset_uses_a_short_lived_link_and_ends_every_session);

async fn r16_an_email_change_is_confirmed_at_the_new_address_and_announced_at_the_old(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let wrong = b.submit("/console/account/email", &[("new_email", "it@acme.example"), ("current_password", "not my password")]).await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.field_error("email-current_password").is_some());
    let bad = b.submit("/console/account/email", &[("new_email", "nope"), ("current_password", PASSWORD)]).await;
    assert!(bad.field_error("new_email").unwrap().contains("not a valid email address"));

    let sent = b.submit("/console/account/email", &[("new_email", "it@acme.example"), ("current_password", PASSWORD)]).await;
    assert_eq!(redirect(&sent), "/console/account?notice=email-sent");
    let notice = wait_for_mail(&smtp.maildir(), "ops@acme.example", "change of your matrixhost email address was requested", 0).await;
    assert!(notice.text.contains("it@acme.example") && !notice.text.contains("token="));
    let confirm = link_to(&wait_for_mail(&smtp.maildir(), "it@acme.example", "Confirm your new email", 0).await.text, "/console/email/confirm");
    assert_eq!(Browser::new(&server).log_in("it@acme.example", PASSWORD).await.status, 401, "nothing changes before the confirmation");

    advance_clock(&server.client(), 30 * 60).await;
    assert_eq!(redirect(&b.follow_link(&confirm, &[]).await), "/console/account?notice=email-changed");
    wait_for_mail(&smtp.maildir(), "ops@acme.example", "email address was changed", 0).await;
    assert_eq!(b.get(&confirm).await.status, 400, "used once");
    assert_eq!(Browser::new(&server).log_in("ops@acme.example", PASSWORD).await.status, 401);
    assert_eq!(redirect(&Browser::new(&server).log_in("it@acme.example", PASSWORD).await), "/console");
}
both_backends!(r16_an_email_change_is_confirmed_at_the_new_address_and_announced_at_the_old);

async fn console_tokens_are_shown_once_stored_hashed_expire_and_revoke(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let bad = b.submit("/console/tokens", &[("name", ""), ("expires_in_days", "30")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.field_error("name").is_some());
    let odd = b.submit("/console/tokens", &[("name", "x"), ("expires_in_days", "12")]).await;
    assert!(odd.field_error("expires_in_days").is_some());

    let weekly = console_token(&b, "weekly job", "7").await;
    let forever = console_token(&b, "terraform ci", "0").await;
    let list = b.get("/console/tokens").await;
    assert!(list.body.contains("weekly job") && list.body.contains("terraform ci"));
    assert!(!list.body.contains(&weekly) && !list.body.contains(&forever), "shown only once");
    assert!(!contains_bytes(&server.database_bytes(), &weekly[3..]), "stored as a hash");
    for t in [&weekly, &forever] {
        expect_status(&api(&server, t).get("/v1/billing-plans").await, 200);
    }

    advance_clock(&server.client(), 8 * 86_400).await;
    assert_api_error(&api(&server, &weekly).get("/v1/billing-plans").await, 401, None, None);
    expect_status(&api(&server, &forever).get("/v1/billing-plans").await, 200);
    // The console session idled out meanwhile (3 days).
    assert_eq!(redirect(&b.get("/console/tokens").await), "/console/login");
    b.log_in("ops@acme.example", PASSWORD).await;
    assert!(b.get("/console/tokens").await.body.contains("expired"));

    let page = b.get("/console/tokens").await;
    let ids: Vec<String> = page.body.match_indices("action=\"/console/tokens/").map(|(i, _)| page.body[i + 24..].split('/').next().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "only the active token can be revoked: {ids:?}");
    assert_eq!(redirect(&b.post(&format!("/console/tokens/{}/revoke", ids[0]), &[]).await), "/console/tokens?notice=revoked");
    assert_api_error(&api(&server, &forever).get("/v1/billing-plans").await, 401, None, None);
    // Another organization's token id is not found.
    let other = verified_customer(&server, &smtp, "ops@other.example", "other").await;
    other.get("/console/tokens").await;
    assert_eq!(other.post(&format!("/console/tokens/{}/revoke", ids[0]), &[]).await.status, 404);
}
both_backends!(console_tokens_are_shown_once_stored_hashed_expire_and_revoke);

/// R17: the access log keeps the caller's IP address 30 days, then deletes it.
async fn r17_access_log_ips_are_deleted_after_30_days(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let token = console_token(&b, "ci", "0").await;
    expect_status(&api(&server, &token).get("/v1/billing-plans").await, 200);
    // Entries are written in batches, within a second or so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let before = loop {
        let export: Value = serde_json::from_str(&b.get("/console/account/export").await.body).unwrap();
        let log = export["access_log"].as_array().unwrap().clone();
        if log.iter().any(|e| e["path"] == "/v1/billing-plans" && e["ip"] == "127.0.0.1" && e["status"] == 200) {
            break log.len();
        }
        assert!(std::time::Instant::now() < deadline, "no access-log entry for the API call: {log:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };

    advance_clock(&server.client(), 29 * 86_400).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let b = Browser::new(&server);
    b.log_in("ops@acme.example", PASSWORD).await;
    let export: Value = serde_json::from_str(&b.get("/console/account/export").await.body).unwrap();
    assert!(export["access_log"].as_array().unwrap().len() >= before, "29 days: still kept");

    advance_clock(&server.client(), 2 * 86_400).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let export: Value = serde_json::from_str(&b.get("/console/account/export").await.body).unwrap();
        let entries = export["access_log"].as_array().unwrap();
        if entries.iter().all(|e| e["path"] != "/v1/billing-plans") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "entries older than 30 days remain: {entries:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(server.log().contains("R17: deleted access-log entries older than 30 days"));
}
both_backends!(r17_access_log_ips_are_deleted_after_30_days);

/// R18: download everything, correct it, and erase it after a grace period that can be
/// cancelled.
async fn r18_export_correct_and_erase_the_account(backend: Backend) {
    let (server, smtp) = start_with_mail(backend).await;
    let b = verified_customer(&server, &smtp, "ops@acme.example", "acme").await;
    let token = console_token(&b, "terraform", "0").await;
    let c = api(&server, &token);
    let plan = create_billing_plan(&c, "nickel").await;
    expect_status(&c.post("/v1/homeservers", &homeserver_body("chat", &id(&plan))).await, 201);

    let bad = b.submit("/console/account/name", &[("full_name", "")]).await;
    assert!(bad.field_error("full_name").is_some());
    assert_eq!(redirect(&b.submit("/console/account/name", &[("full_name", "Ada Lovelace")]).await), "/console/account?notice=name-saved");

    let download = b.get("/console/account/export").await;
    assert_eq!(download.headers["content-type"], "application/json");
    assert!(download.headers["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let export: Value = serde_json::from_str(&download.body).unwrap();
    assert_eq!(export["account"]["email"], "ops@acme.example");
    assert_eq!(export["account"]["full_name"], "Ada Lovelace", "the correction shows");
    assert!(export["account"]["terms_version"].is_string() && export["account"]["age_confirmed_at"].is_string(), "R20, R21 records");
    assert_eq!(export["organization"]["name"], "acme");
    assert_eq!(export["billing_plans"][0]["plan"], "nickel");
    assert_eq!(export["homeservers"][0]["name"], "chat");
    assert_eq!(export["homeservers"][0]["dc_admin_email"], "dpo@example.com");
    assert_eq!(export["api_tokens"][0]["description"], "terraform");
    assert!(export["mail"].as_array().unwrap().iter().any(|m| m["subject"].as_str().unwrap().contains("Verify")));
    assert!(!download.body.contains(&token[3..]) && !download.body.contains("argon2"), "no secrets in the export");

    // Erasure needs the organization's name and the password.
    let wrong = b.submit("/console/account/delete", &[("confirm", "acme"), ("current_password", "nope nope nope")]).await;
    assert!(wrong.field_error("delete-current_password").is_some());
    let typo = b.submit("/console/account/delete", &[("confirm", "acne"), ("current_password", PASSWORD)]).await;
    assert!(typo.field_error("confirm").unwrap().contains("acme"));
    assert_eq!(redirect(&b.submit("/console/account/delete", &[("confirm", "acme"), ("current_password", PASSWORD)]).await), "/console/account?notice=deletion-scheduled");
    wait_for_mail(&smtp.maildir(), "ops@acme.example", "will be deleted", 0).await;
    assert_eq!(redirect(&b.submit("/console/account/delete/cancel", &[]).await), "/console/account?notice=deletion-cancelled");
    wait_for_mail(&smtp.maildir(), "ops@acme.example", "will not be deleted", 0).await;
    advance_clock(&server.client(), 8 * 86_400).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    expect_status(&c.get("/v1/homeservers").await, 200);
    b.log_in("ops@acme.example", PASSWORD).await;

    // Again, and this time the grace period passes.
    b.submit("/console/account/delete", &[("confirm", "acme"), ("current_password", PASSWORD)]).await;
    assert!(b.get("/console").await.body.contains("scheduled for erasure"));
    advance_clock(&server.client(), 7 * 86_400 + 60).await;
    wait_for_mail(&smtp.maildir(), "ops@acme.example", "account was deleted", 0).await;
    assert_api_error(&c.get("/v1/homeservers").await, 401, None, None);
    assert_eq!(redirect(&b.get("/console").await), "/console/login");
    assert_eq!(Browser::new(&server).log_in("ops@acme.example", PASSWORD).await.status, 401);
    let db = server.database_bytes();
    for trace in ["ops@acme.example", "Ada Lovelace", "dpo@example.com"] {
        assert!(!contains_bytes(&db, trace), "`{trace}` is still in the database");
    }
    // The address and the name are free again.
    assert_eq!(redirect(&Browser::new(&server).sign_up("ops@acme.example", "acme", PASSWORD).await), "/console/signup/sent");
}
both_backends!(r18_export_correct_and_erase_the_account);

/// Mail queued while the relay is down goes out once it is back; nothing is lost.
async fn mail_waits_in_the_outbox_while_the_relay_is_down(backend: Backend) {
    let port = free_port();
    let server = builder(backend).args(["--test-clock", "--smtp-url", &format!("smtp://127.0.0.1:{port}")]).start().await;
    let b = Browser::new(&server);
    assert_eq!(redirect(&b.sign_up("ops@acme.example", "acme", PASSWORD).await), "/console/signup/sent", "sign-up works with the relay down");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !server.log().contains("mail not sent; it stays in the outbox") {
        assert!(std::time::Instant::now() < deadline, "no failed attempt logged:\n{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let smtp = SmtpServer::start_on(port).await;
    advance_clock(&server.client(), 60).await;
    let mail = wait_for_mail(&smtp.maildir(), "ops@acme.example", "Verify", 0).await;
    assert_eq!(redirect(&b.follow_link(&link_to(&mail.text, "/console/verify"), &[]).await), "/console/login?notice=verified");
}
both_backends!(mail_waits_in_the_outbox_while_the_relay_is_down);
