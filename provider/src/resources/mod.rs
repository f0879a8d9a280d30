//! The managed resources.

pub mod backup_policy;
pub mod billing_plan;
pub mod homeserver;
pub mod managed;
pub mod reserved_user;

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use matrixhost_api::{ApplyStatus, BillingPlan, ReservedUser, RuleError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tf_provider::Diagnostics;

use crate::client::Client;
use crate::diag;
use crate::values::{Value, VB, VN, VS};

/// What the provider keeps next to the state: the resource's optimistic-concurrency version,
/// sent back as `If-Match` on updates.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Private {
    pub version: Option<i64>,
}

/// Private state as `tf-provider` hands it over (empty bytes are null).
pub type PrivateState = Value<Private>;

pub fn private(version: i64) -> PrivateState {
    Value::Value(Private { version: Some(version) })
}

pub fn version_of(p: &PrivateState) -> Option<i64> {
    p.as_ref_option().and_then(|p| p.version)
}

/// A time as the state shows it (RFC 3339, UTC).
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn opt_ts(t: Option<DateTime<Utc>>) -> VS {
    match t {
        Some(t) => Value::Value(ts(t)),
        None => Value::Null,
    }
}

/// A parse result as a diagnostic: "Invalid <attr>" with the rule's message.
fn checked<T>(diags: &mut Diagnostics, attr: &str, parsed: Result<T, RuleError>) -> Option<T> {
    parsed.map_err(|e| diag::invalid(diags, attr, e.message)).ok()
}

/// Checks a known string attribute with a domain parser.
/// Unknown and null values pass (unknown is checked again at apply, when it is known).
pub fn check_str<T>(diags: &mut Diagnostics, attr: &str, v: &VS, parse: impl Fn(&str) -> Result<T, RuleError>) -> Option<T> {
    let parsed = parse(v.as_ref_option()?);
    checked(diags, attr, parsed)
}

/// Checks a known number attribute: it must be a whole number, then pass `parse`.
pub fn check_int<T>(diags: &mut Diagnostics, attr: &str, v: &VN, parse: impl Fn(i64) -> Result<T, RuleError>) -> Option<T> {
    let n = v.as_ref_option()?;
    let Some(i) = n.as_i64() else {
        diag::invalid(diags, attr, format!("{n} is not a whole number"));
        return None;
    };
    checked(diags, attr, parse(i))
}

/// Checks a known bool attribute with a domain parser.
pub fn check_bool<T>(diags: &mut Diagnostics, attr: &str, v: &VB, parse: impl Fn(bool) -> Result<T, RuleError>) -> Option<T> {
    let parsed = parse(*v.as_ref_option()?);
    checked(diags, attr, parsed)
}

/// At apply every input is known; a value still unknown here is a provider bug, reported
/// rather than panicking.
pub fn known<T: Clone>(diags: &mut Diagnostics, attr: &str, v: &Value<T>) -> Option<T> {
    match v {
        Value::Value(t) => Some(t.clone()),
        Value::Null => {
            diag::invalid(diags, attr, "a value is required");
            None
        }
        Value::Unknown => {
            diag::invalid(diags, attr, "the value is still unknown at apply time");
            None
        }
    }
}

/// Marks `v` unknown (a computed value the apply will decide).
pub fn unknown<T>(v: &mut Value<T>) {
    *v = Value::Unknown;
}

/// Whether a planned value differs from the prior one (unknown counts as different).
pub fn differs<T: PartialEq>(planned: &Value<T>, prior: &Value<T>) -> bool {
    planned.is_unknown() || planned != prior
}

/// Splits an import id `a/b` at the first `/`.
pub fn split_import_id(id: &str) -> Option<(&str, &str)> {
    let (a, b) = id.split_once('/')?;
    (!a.trim().is_empty() && !b.trim().is_empty()).then_some((a.trim(), b.trim()))
}

/// The error for an import id that names nothing.
pub fn import_not_found(diags: &mut Diagnostics, noun: &str, what: &str, id: &str) {
    diag::root_error(diags, format!("Cannot import {noun}"), format!("No {what} `{id}` exists in this organization."));
}

/// Path segment escaping for ids in URLs.
pub fn seg(id: &str) -> String {
    crate::client::escape(id)
}

/// How often a long operation polls.
pub fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(5) {
        Duration::from_millis(500)
    } else if elapsed < Duration::from_secs(60) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    }
}

/// An object the homeserver puts into effect, with the API's word on how far it got.
pub trait Applied {
    fn apply_status(&self) -> ApplyStatus;
    fn apply_error(&self) -> Option<&str>;
}

impl Applied for ReservedUser {
    fn apply_status(&self) -> ApplyStatus {
        self.apply_status
    }
    fn apply_error(&self) -> Option<&str> {
        self.apply_error.as_deref()
    }
}

impl Applied for BillingPlan {
    fn apply_status(&self) -> ApplyStatus {
        self.apply_status
    }
    fn apply_error(&self) -> Option<&str> {
        self.apply_error.as_deref()
    }
}

/// How long a create or update waits for the homeserver to apply it.
pub const APPLY_WAIT_LIMIT: Duration = Duration::from_secs(20 * 60);

/// An apply means the change is in effect: polls `path` until the homeserver has applied
/// `current` (as the API answered the write). Returns the latest object either way; a failure
/// or a timeout is an error diagnostic, since the object exists and belongs in the state.
pub async fn wait_applied<T: Applied + DeserializeOwned>(diags: &mut Diagnostics, client: &Client, path: &str, what: &str, mut current: T, limit: Duration) -> T {
    let started = Instant::now();
    loop {
        match current.apply_status() {
            ApplyStatus::Applied => return current,
            ApplyStatus::Failed => {
                let why = current.apply_error().unwrap_or("the homeserver did not say why");
                diag::root_error(diags, format!("The homeserver did not apply the {what}"), format!("{why}."));
                return current;
            }
            ApplyStatus::Pending => {}
        }
        if started.elapsed() >= limit {
            diag::root_error(
                diags,
                format!("The homeserver did not apply the {what} in time"),
                format!("It was still pending after {}s; the change is recorded and the homeserver applies it when it can.", limit.as_secs()),
            );
            return current;
        }
        let pause = if started.elapsed() < Duration::from_secs(2) { Duration::from_millis(200) } else { poll_interval(started.elapsed()) };
        tokio::time::sleep(pause).await;
        match client.get::<T>(path).await {
            Ok(next) => current = next,
            Err(e) => {
                diag::api_error(diags, format!("Cannot read the {what} while waiting for the homeserver"), &e, &[]);
                return current;
            }
        }
    }
}
