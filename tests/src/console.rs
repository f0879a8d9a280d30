//! A cookie-keeping HTTP client for the console's forms, as a browser without JavaScript
//! would use them: it reads the CSRF token from each page it loads and sends it back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};

use crate::TestServer;

/// One answer of the console.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a 303 points.
    pub fn location(&self) -> Option<String> {
        self.headers.get("location").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// The error shown next to `field`, if any.
    pub fn field_error(&self, field: &str) -> Option<String> {
        let marker = format!("id=\"{field}-error\">");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find("</p>")? + start;
        Some(self.body[start..end].replace("<span class=\"visually-hidden\">Error: </span>", ""))
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }
}

/// A browser session against one server.
#[derive(Clone)]
pub struct Browser {
    base: Url,
    jar: Arc<Jar>,
    client: reqwest::Client,
    csrf: Arc<Mutex<String>>,
}

impl Browser {
    pub fn new(server: &TestServer) -> Browser {
        Self::at(&server.base_url(), "matrixhost-tests browser")
    }

    pub fn at(base: &str, user_agent: &str) -> Browser {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .no_proxy()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Browser { base: Url::parse(base).expect("a base URL"), jar, client, csrf: Arc::default() }
    }

    fn remember_csrf(&self, body: &str) {
        let marker = "name=\"csrf\" value=\"";
        if let Some(start) = body.find(marker).map(|i| i + marker.len()) {
            if let Some(end) = body[start..].find('"') {
                *self.csrf.lock().unwrap() = body[start..start + end].to_owned();
            }
        }
    }

    async fn read(&self, resp: reqwest::Response) -> Page {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        self.remember_csrf(&body);
        Page { status, headers, body }
    }

    fn url(&self, path: &str) -> Url {
        if path.starts_with("http") { Url::parse(path).expect("a URL") } else { self.base.join(path).expect("a path") }
    }

    pub async fn get(&self, path: &str) -> Page {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        self.read(resp).await
    }

    /// The CSRF token the console's forms carry for this browser: the value of its CSRF
    /// cookie (each page renders it into its forms), or that of the last page read.
    pub fn csrf(&self) -> String {
        self.cookie("mh_csrf").unwrap_or_else(|| self.csrf.lock().unwrap().clone())
    }

    /// Posts a form with the current CSRF token (unless `fields` has its own `csrf`).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            form.push(("csrf".into(), self.csrf()));
        }
        let resp = self.client.post(self.url(path)).form(&form).send().await.expect("POST");
        self.read(resp).await
    }

    /// Loads `path` (for its CSRF token), then posts the form to it.
    pub async fn submit(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.get(path).await;
        self.post(path, fields).await
    }

    /// The value of a cookie the browser holds.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let header = self.jar.cookies(&self.base)?;
        header.to_str().ok()?.split("; ").find_map(|c| c.strip_prefix(&format!("{name}=")).map(str::to_owned))
    }

    /// Replaces a cookie (e.g. with a forged or an old session).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.add_cookie_str(&format!("{name}={value}; Path=/"), &self.base);
    }

    /// Signs up with a password and both attestations.
    pub async fn sign_up(&self, email: &str, organization: &str, password: &str) -> Page {
        self.submit(
            "/console/signup",
            &[("email", email), ("full_name", "Ada Operator"), ("organization", organization), ("password", password), ("age_confirmed", "yes"), ("terms_accepted", "yes")],
        )
        .await
    }

    pub async fn log_in(&self, email: &str, password: &str) -> Page {
        self.submit("/console/login", &[("email", email), ("password", password)]).await
    }

    /// Follows a mailed link the way a person does: open it, press its button.
    pub async fn follow_link(&self, link: &str, extra: &[(&str, &str)]) -> Page {
        let opened = self.get(link).await;
        assert_eq!(opened.status, StatusCode::OK, "{link}: {}", opened.body);
        let path = self.url(link).path().to_owned();
        let token = crate::mail::token_of(link);
        let mut fields = vec![("token", token.as_str())];
        fields.extend_from_slice(extra);
        self.post(&path, &fields).await
    }
}

/// A reserved user's invitation to `server_name` accepted as the person would: the link from the
/// mail in the server's dev Maildir (`--dev` without a relay), then `password` chosen on its page.
pub async fn accept_invitation(server: &TestServer, email: &str, server_name: &str, password: &str) {
    use crate::mail::{link_to, token_of, wait_for_mail};
    let maildir = server.state_dir().join("api/maildir");
    let mail = wait_for_mail(&maildir, email, &format!("Your Matrix account on {server_name}"), 0).await;
    let link = link_to(&mail.text, "/console/invite");
    let browser = Browser::new(server);
    let page = browser.get(&link).await;
    assert_eq!(page.status, StatusCode::OK, "the invitation of {email} (Terraform waited for the account): {}", page.body);
    let set = browser.post("/console/invite", &[("token", &token_of(&link)), ("password", password)]).await;
    assert_eq!(set.status, StatusCode::OK, "choosing the password of {email}: {}", set.body);
}
