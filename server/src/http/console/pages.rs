//! The console's markup: one layout, and form parts that keep every field labelled, its error
//! next to it (and announced), and the page usable without JavaScript.

use std::collections::HashMap;

use maud::{html, Markup, DOCTYPE};

use crate::domain::DomainError;

/// Errors of one form, by field; `""` holds the form's general error.
#[derive(Debug, Default, Clone)]
pub struct FormErrors(pub HashMap<String, String>);

impl FormErrors {
    pub fn general(message: impl Into<String>) -> Self {
        let mut e = Self::default();
        e.0.insert(String::new(), message.into());
        e
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// Domain errors, each put next to its field. Anything unexpected becomes a general
    /// error with the request id, never its detail.
    pub fn from_domain(errors: Vec<DomainError>) -> Self {
        let mut out = Self::default();
        for e in errors {
            let (field, message) = match &e {
                DomainError::Invalid { field, message, .. } | DomainError::Conflict { field: Some(field), message, .. } => (field.clone(), message.clone()),
                DomainError::Conflict { message, .. } | DomainError::Forbidden { message, .. } => (String::new(), message.clone()),
                DomainError::NotFound(what) => (String::new(), format!("{what} not found")),
                DomainError::Missing { field, message } | DomainError::Payment { field, message, .. } => (field.clone(), message.clone()),
                DomainError::PaymentProcessor(message) => (String::new(), message.clone()),
                DomainError::Database(_) | DomainError::Internal(_) => {
                    tracing::error!(error = %e, "console request failed");
                    (String::new(), format!("Something went wrong on our side; try again (ref {}).", super::super::request_id()))
                }
            };
            // The field's own name is already its label.
            let message = message.strip_prefix(&format!("{field}: ")).unwrap_or(&message).to_owned();
            out.0.entry(field).or_insert(message);
        }
        out
    }
}

/// Who is looking at the page, for the navigation.
pub struct Viewer<'a> {
    pub email: Option<&'a str>,
    pub csrf: &'a str,
}

pub fn layout(title: &str, viewer: &Viewer<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · matrixhost" }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a href="/console" { strong { "matrixhost" } }
                        @if let Some(email) = viewer.email {
                            a href="/console" { "Homeservers" }
                            a href="/console/tokens" { "API tokens" }
                            a href="/console/billing" { "Billing" }
                            a href="/console/account" { "Account" }
                            span class="who" { (email) }
                            form method="post" action="/console/logout" class="inline" {
                                (csrf_field(viewer.csrf))
                                button type="submit" { "Log out" }
                            }
                        } @else {
                            a href="/console/login" { "Log in" }
                            a href="/console/signup" { "Sign up" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// The form's general error, announced to screen readers.
pub fn form_error(errors: &FormErrors) -> Markup {
    html! {
        @if let Some(message) = errors.get("") {
            div class="error-summary" role="alert" { p { (message) } }
        } @else if !errors.is_empty() {
            div class="error-summary" role="alert" { p { "Please correct the fields marked below." } }
        }
    }
}

/// What every new-password field says (R14's rules, in `domain::passwords`).
pub const NEW_PASSWORD_HINT: &str = "At least 12 characters. Well-known passwords are refused.";

/// What a [`NewPasswordForm`] posts.
#[derive(Debug, Default, serde::Deserialize)]
pub struct NewPasswordPost {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub password: String,
}

/// A form that carries a one-time link's `token` and asks for a new password: a reset, an
/// invitation.
pub struct NewPasswordForm<'a> {
    pub action: &'a str,
    pub token: &'a str,
    pub label: &'a str,
    pub button: &'a str,
}

impl NewPasswordForm<'_> {
    pub fn render(&self, csrf: &str, errors: &FormErrors) -> Markup {
        html! {
            (form_error(errors))
            form method="post" action=(self.action) novalidate {
                (csrf_field(csrf))
                input type="hidden" name="token" value=(self.token);
                (field("password", self.label, "password", "", "new-password", Some(NEW_PASSWORD_HINT), errors))
                button type="submit" { (self.button) }
            }
        }
    }
}

/// A labelled input with its hint and its error, tied together for assistive technology.
pub fn field(name: &str, label: &str, kind: &str, value: &str, autocomplete: &str, hint: Option<&str>, errors: &FormErrors) -> Markup {
    field_with_id(name, name, label, kind, value, autocomplete, hint, errors)
}

/// [`field`] with its own element id, for a page with several forms that share field names.
#[allow(clippy::too_many_arguments)]
pub fn field_with_id(id: &str, name: &str, label: &str, kind: &str, value: &str, autocomplete: &str, hint: Option<&str>, errors: &FormErrors) -> Markup {
    let error = errors.get(name);
    let described = match (hint.is_some(), error.is_some()) {
        (true, true) => format!("{id}-hint {id}-error"),
        (true, false) => format!("{id}-hint"),
        (false, true) => format!("{id}-error"),
        (false, false) => String::new(),
    };
    html! {
        div class={ "field" @if error.is_some() { " has-error" } } {
            label for=(id) { (label) }
            @if let Some(hint) = hint { p class="hint" id={ (id) "-hint" } { (hint) } }
            @if let Some(error) = error { p class="field-error" id={ (id) "-error" } { span class="visually-hidden" { "Error: " } (error) } }
            input id=(id) name=(name) type=(kind) value=(value) autocomplete=(autocomplete)
                aria-invalid=[error.map(|_| "true")] aria-describedby=[(!described.is_empty()).then_some(described.as_str())];
        }
    }
}

pub fn checkbox(name: &str, label: Markup, checked: bool, errors: &FormErrors) -> Markup {
    let error = errors.get(name);
    html! {
        div class={ "field checkbox" @if error.is_some() { " has-error" } } {
            @if let Some(error) = error { p class="field-error" id={ (name) "-error" } { span class="visually-hidden" { "Error: " } (error) } }
            input id=(name) name=(name) type="checkbox" value="yes" checked[checked]
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| format!("{name}-error"))];
            label for=(name) { (label) }
        }
    }
}

/// A notice at the top of a page (after a redirect).
pub fn notice(text: &str) -> Markup {
    html! { div class="notice" role="status" { p { (text) } } }
}

/// A horizontal gauge as SVG, with its numbers in text for those who cannot see it.
pub fn gauge(label: &str, used: f64, limit: f64, text: &str) -> Markup {
    let share = if limit > 0.0 { (used / limit).clamp(0.0, 1.0) } else { 0.0 };
    let width = (share * 300.0).round();
    let colour = if share >= 0.9 { "#b3261e" } else if share >= 0.75 { "#b26a00" } else { "#1b6e3a" };
    html! {
        figure class="gauge" {
            figcaption { (label) ": " (text) }
            svg width="300" height="18" viewBox="0 0 300 18" role="img" aria-label={ (label) ": " (text) } {
                rect x="0" y="0" width="300" height="18" fill="#e6e6e6" {}
                rect x="0" y="0" width=(width) height="18" fill=(colour) {}
            }
        }
    }
}

pub const STYLE: &str = r#"
:root { font-family: system-ui, sans-serif; color: #1a1a1a; background: #fff; }
body { margin: 0; }
header { background: #12355b; }
nav { display: flex; gap: 1.2em; align-items: center; padding: .7em 1.5em; flex-wrap: wrap; }
nav a, nav .who { color: #fff; }
nav .who { margin-left: auto; opacity: .85; }
main { max-width: 52em; padding: 1em 1.5em 3em; }
main:focus { outline: none; }
a:focus, input:focus, button:focus { outline: 3px solid #ffbf47; outline-offset: 1px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1em; top: 1em; background: #fff; padding: .4em; }
.field { margin: 1em 0; display: flex; flex-direction: column; gap: .25em; max-width: 30em; }
.field.checkbox { flex-direction: row; flex-wrap: wrap; align-items: center; gap: .5em; }
.field.checkbox .field-error { flex-basis: 100%; }
.field input[type=text], .field input[type=email], .field input[type=password], .field input[type=number] { padding: .45em; font-size: 1em; border: 2px solid #555; }
.has-error input { border-color: #b3261e; }
.field-error { color: #b3261e; font-weight: 600; margin: 0; }
.hint { color: #555; margin: 0; font-size: .92em; }
.error-summary { border: 3px solid #b3261e; padding: .2em 1em; margin: 1em 0; }
.notice { border-left: 6px solid #1b6e3a; background: #eef7f0; padding: .2em 1em; margin: 1em 0; }
.warning { border-left: 6px solid #b26a00; background: #fff5e6; padding: .2em 1em; margin: 1em 0; }
button { font-size: 1em; padding: .45em 1em; background: #12355b; color: #fff; border: 0; cursor: pointer; }
button.danger { background: #b3261e; }
form.inline { display: inline; }
.card-element { padding: .5em; border: 1px solid #767676; border-radius: 4px; margin: .5em 0; }
.card-element input { margin-right: .4em; }
nav form.inline button { background: transparent; border: 1px solid #fff; padding: .2em .7em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
.secret { font-family: monospace; background: #f3f3f3; padding: .6em; word-break: break-all; border: 1px dashed #555; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
figure.gauge { margin: 1em 0; }
"#;
