//! Diagnostics the provider emits. They are built field by field (never through
//! `Diagnostic::new`, which would capture a backtrace when `RUST_BACKTRACE` is set), carry the
//! attribute path when there is one, and never contain the API token.

use std::borrow::Cow;

use tf_provider::{AttributePath, AttributePathStep, Diagnostic, Diagnostics};

use crate::client::ApiFailure;

/// An attribute path from a dotted name: `volume.size_gb`, `timeouts.0.create` (a number is a
/// list index).
pub fn path(dotted: &str) -> AttributePath {
    let mut p = AttributePath::root();
    for part in dotted.split('.').filter(|s| !s.is_empty()) {
        match part.parse::<i64>() {
            Ok(i) => p.add_step(AttributePathStep::Index(i)),
            Err(_) => p.add_step(AttributePathStep::Attribute(Cow::Owned(part.to_owned()))),
        };
    }
    p
}

fn push(diags: &mut Diagnostics, warning: bool, summary: String, detail: String, attribute: AttributePath) {
    let d = Diagnostic { summary: scrub(summary).into(), detail: scrub(detail).into(), attribute };
    if warning {
        diags.add_warning(d);
    } else {
        diags.add_error(d);
    }
}

/// An error on an attribute.
pub fn error(diags: &mut Diagnostics, attribute: AttributePath, summary: impl Into<String>, detail: impl Into<String>) {
    push(diags, false, summary.into(), detail.into(), attribute);
}

/// An error on the resource as a whole.
pub fn root_error(diags: &mut Diagnostics, summary: impl Into<String>, detail: impl Into<String>) {
    push(diags, false, summary.into(), detail.into(), AttributePath::root());
}

/// A warning on the resource as a whole.
pub fn root_warning(diags: &mut Diagnostics, summary: impl Into<String>, detail: impl Into<String>) {
    push(diags, true, summary.into(), detail.into(), AttributePath::root());
}

/// A value that breaks a rule, found while planning: "Invalid <attr>" with the rule's message.
pub fn invalid(diags: &mut Diagnostics, dotted: &str, message: impl Into<String>) {
    error(diags, path(dotted), format!("Invalid {}", display_name(dotted)), message);
}

fn display_name(dotted: &str) -> String {
    dotted.split('.').filter(|p| p.parse::<i64>().is_err()).collect::<Vec<_>>().join(".")
}

/// Maps the API's JSON path (`volume.encrypted`, `allowed_email_domains[1]`) onto the
/// Terraform attribute path. Set indices are dropped (a set has no index); a path that does
/// not start with one of `known` top-level attributes maps to the resource itself.
pub fn api_field_path(field: Option<&str>, known: &[&str]) -> AttributePath {
    let Some(field) = field else { return AttributePath::root() };
    let clean: String = {
        let mut out = String::new();
        let mut depth = 0;
        for c in field.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    let first = clean.split('.').next().unwrap_or("");
    if !known.contains(&first) {
        return AttributePath::root();
    }
    let mut p = AttributePath::root();
    for part in clean.split('.').filter(|s| !s.is_empty()) {
        p.add_step(AttributePathStep::Attribute(Cow::Owned(part.to_owned())));
    }
    p
}

/// Reports a failed API call: `summary` says what the provider was doing ("Cannot create
/// homeserver"), the detail carries the server's message, status, code and request id, and the
/// attribute is the API error's field mapped onto the schema.
pub fn api_error(diags: &mut Diagnostics, summary: impl Into<String>, failure: &ApiFailure, known: &[&str]) {
    let attribute = api_field_path(failure.field(), known);
    error(diags, attribute, summary, failure.to_string());
}

/// The token must never reach a diagnostic. Every message passes through here; the token the
/// provider was configured with (if any) is replaced.
pub fn scrub(text: String) -> String {
    match crate::client::secret_for_scrubbing() {
        Some(secret) if secret.len() >= 8 && text.contains(secret.as_str()) => text.replace(secret.as_str(), "(redacted)"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_map_to_attributes() {
        let known = ["volume", "allowed_email_domains", "region"];
        assert_eq!(api_field_path(Some("volume.encrypted"), &known), path("volume.encrypted"));
        assert_eq!(api_field_path(Some("allowed_email_domains[1]"), &known), path("allowed_email_domains"));
        assert_eq!(api_field_path(Some("If-Match"), &known), AttributePath::root());
        assert_eq!(api_field_path(None, &known), AttributePath::root());
    }

    #[test]
    fn dotted_paths_with_indices() {
        let p = path("timeouts.0.create");
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.steps[1], AttributePathStep::Index(0));
        assert_eq!(display_name("timeouts.0.create"), "timeouts.create");
    }
}
