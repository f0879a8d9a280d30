//! Domain newtypes. Each one is parsed in exactly one place (its `parse` function) and both the
//! server and the provider build them through it, so a rule lives in one function.
//!
//! Parsing normalises where the value has a canonical form (emails and domains are lower-cased)
//! and refuses everything else with a [`RuleError`] that names the rule it enforces.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A value broke a product rule or a syntax rule. The message names the rule (e.g. `R1`) when a
/// product rule is at stake; the caller adds the field (attribute path or JSON path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuleError {
    pub message: String,
}

impl RuleError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError::new(message))
}

/// Declares a string newtype: serde goes through `parse`, the JSON schema carries the pattern
/// and the description, and the value is only ever built by `parse`.
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, pattern = $pattern:expr, description = $desc:expr) => {
        string_newtype!($(#[$meta])* $name, pattern = $pattern, description = $desc, max_length = None);
    };
    ($(#[$meta:meta])* $name:ident, pattern = $pattern:expr, description = $desc:expr, max_length = $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = RuleError;
            fn try_from(value: String) -> Result<Self, RuleError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = RuleError;
            fn from_str(s: &str) -> Result<Self, RuleError> {
                Self::parse(s)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let pattern: Option<&str> = $pattern;
                let max_length: Option<u32> = $max;
                let mut schema = match pattern {
                    Some(p) => json_schema!({ "type": "string", "pattern": p, "description": $desc }),
                    None => json_schema!({ "type": "string", "description": $desc }),
                };
                if let Some(max) = max_length {
                    schema.insert("maxLength".into(), max.into());
                }
                schema
            }
        }
    };
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A lower-case DNS name with at least two labels (`example.com`), whose last label (the top-level
/// domain) starts with a letter, as every real one does.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(is_dns_label)
        && name.rsplit('.').next().is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// [`is_dns_name`] as a pattern (lower case), and the same in any case for the inputs that are
/// normalised to lower case.
const DNS_NAME_PATTERN: &str = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$";
const ANY_CASE_DNS_NAME_PATTERN: &str = "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$";

fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

string_newtype!(
    /// A region code such as `us-east-1`. R1: only US regions can be named at all; whether a
    /// US region is available is the catalog's business (see `Catalog::available_region`).
    RegionCode,
    pattern = Some("^us-[a-z]+-[0-9]{1,2}$"),
    description = "Region code. R1: homeservers are hosted only in US regions (us-*)."
);

impl RegionCode {
    // R1
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let parts: Vec<&str> = s.split('-').collect();
        let well_formed = parts.len() == 3
            && parts[0].len() == 2
            && parts[0].bytes().all(|b| b.is_ascii_lowercase())
            && !parts[1].is_empty()
            && parts[1].bytes().all(|b| b.is_ascii_lowercase())
            && (1..=2).contains(&parts[2].len())
            && parts[2].bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return err(format!(
                "`{s}` is not a region code; expected the form `us-east-1`"
            ));
        }
        if parts[0] != "us" {
            return err(format!(
                "R1: `{s}` is outside the US; matrixhost hosts homeservers only in US regions (for example us-east-1, us-east-2, us-west-1, us-west-2)"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// The name of a homeserver inside an organization: a DNS label.
    HomeserverName,
    pattern = Some("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"),
    description = "Homeserver name: a lower-case DNS label (a-z, 0-9, '-'), 1-63 characters, starting with a letter."
);

impl HomeserverName {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        if !is_dns_label(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return err(format!(
                "`{s}` is not a valid name; use a lower-case DNS label: a-z, 0-9 and '-', 1-63 characters, starting with a letter and not ending with '-'"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// An organization's name: same shape as a homeserver name, since it appears in server names.
    OrgName,
    pattern = Some("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"),
    description = "Organization name: a lower-case DNS label."
);

impl OrgName {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        HomeserverName::parse(s).map(|n| Self(n.0))
    }
}

string_newtype!(
    /// A Matrix server name (the part after `:` in `@alice:example.com`). Lower-case DNS name,
    /// no port: hosted homeservers are reached through the platform.
    ServerName,
    pattern = Some(DNS_NAME_PATTERN),
    description = "Matrix server name: a lower-case DNS name with at least two labels, e.g. chat.example.com.",
    max_length = Some(253)
);

impl ServerName {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        if !is_dns_name(s) {
            return err(format!(
                "`{s}` is not a valid server name; use a lower-case DNS name with at least two labels, e.g. chat.example.com"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// An email address, normalised to lower case so that comparisons and uniqueness hold.
    Email,
    pattern = Some("^[!-?A-~]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"),
    description = "Email address: 1-64 visible ASCII characters other than `@`, then `@` and a DNS name. Normalised to lower case.",
    max_length = Some(254)
);

impl Email {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let lower = s.to_ascii_lowercase();
        let valid = match lower.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && local.len() <= 64 && local.bytes().all(|b| b.is_ascii_graphic() && b != b'@') && is_dns_name(domain)
            }
            None => false,
        };
        if !valid || lower.len() > 254 {
            return err(format!("`{s}` is not a valid email address"));
        }
        Ok(Self(lower))
    }

    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

string_newtype!(
    /// An email domain for registration whitelists (R9), normalised to lower case.
    EmailDomain,
    pattern = Some(ANY_CASE_DNS_NAME_PATTERN),
    description = "Email domain such as mycompany.com. Normalised to lower case.",
    max_length = Some(253)
);

impl EmailDomain {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let lower = s.to_ascii_lowercase();
        if !is_dns_name(&lower) {
            return err(format!(
                "`{s}` is not an email domain; use a DNS name such as mycompany.com"
            ));
        }
        Ok(Self(lower))
    }
}

string_newtype!(
    /// A Matrix user localpart (`alice` in `@alice:example.com`), as Synapse accepts it.
    Localpart,
    pattern = Some("^[a-z0-9._=/+-]{1,64}$"),
    description = "Matrix localpart: 1-64 characters of a-z, 0-9, '.', '_', '=', '-', '/', '+'."
);

impl Localpart {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=/+-".contains(&b);
        if s.is_empty() || s.len() > 64 || !s.bytes().all(allowed) {
            return err(format!(
                "`{s}` is not a valid Matrix localpart; use 1-64 characters of a-z, 0-9, '.', '_', '=', '-', '/', '+' (lower case only)"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// A plan tier key from the catalog, e.g. `nickel`. Whether the tier exists is the
    /// catalog's business (`Catalog::plan`).
    PlanTier,
    pattern = Some("^[a-z][a-z0-9-]{1,31}$"),
    description = "Plan tier key from the plans catalog, e.g. nickel, silver, gold, platinum."
);

impl PlanTier {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let ok = (2..=32).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return err(format!(
                "`{s}` is not a plan tier; use a tier key from the plans catalog such as `silver`"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// A UTC wall-clock time `HH:MM` (backup windows, R4).
    WindowTime,
    pattern = Some("^([01][0-9]|2[0-3]):[0-5][0-9]$"),
    description = "A UTC time of day, HH:MM (24-hour)."
);

impl WindowTime {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let ok = s.len() == 5
            && s.as_bytes()[2] == b':'
            && s[..2].parse::<u8>().is_ok_and(|h| h < 24 && s[..2].bytes().all(|b| b.is_ascii_digit()))
            && s[3..].parse::<u8>().is_ok_and(|m| m < 60 && s[3..].bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return err(format!("`{s}` is not a UTC time; use HH:MM, 00:00 to 23:59"));
        }
        Ok(Self(s.to_owned()))
    }

    /// Minutes after midnight UTC.
    pub fn minutes(&self) -> u32 {
        let h: u32 = self.0[..2].parse().unwrap_or(0);
        let m: u32 = self.0[3..].parse().unwrap_or(0);
        h * 60 + m
    }
}

impl Default for WindowTime {
    fn default() -> Self {
        Self("03:00".into())
    }
}

string_newtype!(
    /// The legal entity that acts as data controller in a homeserver's privacy notice (R19).
    EntityName,
    pattern = Some(NOT_BLANK_TEXT_PATTERN),
    description = "Legal name of the customer entity, 1-200 characters, not blank, without control characters (surrounding spaces are dropped).",
    max_length = Some(200)
);

/// Text with something other than white space in it and no control characters (Unicode Cc).
const NOT_BLANK_TEXT_PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$";

impl EntityName {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let t = s.trim();
        if t.is_empty() || s.chars().count() > 200 || has_control_chars(s) {
            return err("must be 1-200 characters without control characters");
        }
        Ok(Self(t.to_owned()))
    }
}

string_newtype!(
    /// A user's display name.
    DisplayName,
    pattern = Some(NOT_BLANK_TEXT_PATTERN),
    description = "Display name, 1-256 characters, not blank, without control characters.",
    max_length = Some(256)
);

impl DisplayName {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        if s.trim().is_empty() || s.chars().count() > 256 || has_control_chars(s) {
            return err("must be 1-256 characters, not blank, without control characters");
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// The payment processor's id for a payment method (R13: we keep the processor's id only,
    /// never card data).
    PaymentMethodId,
    pattern = Some("^pm_[A-Za-z0-9_]{1,64}$"),
    description = "Payment processor (Stripe) payment-method id, e.g. pm_1Nx... R13: card data never reaches matrixhost."
);

impl PaymentMethodId {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let rest = s.strip_prefix("pm_").unwrap_or("");
        if rest.is_empty() || rest.len() > 64 || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return err(format!(
                "R13: `{}` is not a payment processor id (pm_...); card numbers are never sent to matrixhost",
                redact_if_digits(s)
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// Never echo something that looks like a card number back into an error message (R13).
fn redact_if_digits(s: &str) -> Cow<'_, str> {
    if s.bytes().filter(u8::is_ascii_digit).count() >= 8 {
        Cow::Borrowed("(redacted)")
    } else {
        Cow::Borrowed(s)
    }
}

/// A password given once to create an account. Never serialised in responses and never printed.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct InitialPassword(String);

impl InitialPassword {
    pub const MIN_LEN: usize = 12;

    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let n = s.chars().count();
        if !(Self::MIN_LEN..=1024).contains(&n) {
            // The message never contains the password itself.
            return err(format!(
                "must be {}-1024 characters (got {n})",
                Self::MIN_LEN
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InitialPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitialPassword(***)")
    }
}

impl TryFrom<String> for InitialPassword {
    type Error = RuleError;
    fn try_from(value: String) -> Result<Self, RuleError> {
        Self::parse(&value)
    }
}

impl From<InitialPassword> for String {
    fn from(value: InitialPassword) -> String {
        value.0
    }
}

impl JsonSchema for InitialPassword {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("InitialPassword")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string", "format": "password", "minLength": 12, "maxLength": 1024, "writeOnly": true,
            "description": "Initial password for the account. Write-only: never returned, never logged."
        })
    }
}

/// Declares a bounded integer newtype.
macro_rules! bounded_u32 {
    ($(#[$meta:meta])* $name:ident, min = $min:expr, max = $max:expr, default = $default:expr, description = $desc:expr, rule = $rule:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "u32")]
        pub struct $name(u32);

        impl $name {
            pub const MIN: u32 = $min;
            pub const MAX: u32 = $max;

            pub fn parse(n: i64) -> Result<Self, RuleError> {
                if n < i64::from(Self::MIN) || n > i64::from(Self::MAX) {
                    return err(format!("{}{} is out of range; allowed {}-{}", $rule, n, Self::MIN, Self::MAX));
                }
                Ok(Self(n as u32))
            }

            pub fn get(self) -> u32 {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self($default)
            }
        }

        impl TryFrom<i64> for $name {
            type Error = RuleError;
            fn try_from(n: i64) -> Result<Self, RuleError> {
                Self::parse(n)
            }
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "integer", "format": "int32", "minimum": $min, "maximum": $max, "default": $default, "description": $desc })
            }
        }
    };
}

bounded_u32!(
    /// Days a backup is kept (R4). The hosting terms promise 30; shorter and longer are allowed
    /// within bounds.
    RetentionDays, min = 7, max = 365, default = 30,
    description = "Days each backup is kept. R4: default 30 (the promised rolling retention), allowed 7-365.",
    rule = "R4: retention_days "
);

bounded_u32!(
    /// Size of a homeserver's encrypted volume. The plan's storage limit is checked by
    /// `Plan::check_volume_size`.
    VolumeSizeGb, min = 1, max = 16384, default = 10,
    description = "Volume size in GB; at most the plan's storage limit.",
    rule = "volume size "
);

bounded_u32!(
    /// Additional Users bought on top of the plan's MAU (R10).
    AdditionalUsers, min = 0, max = 1_000_000, default = 0,
    description = "R10: Additional Users raise the MAU cap (not the resources), charged at the plan's per-MAU price.",
    rule = "R10: additional_users "
);

/// R2: volumes are always encrypted. The only value this type can hold is `true`; `false` is
/// refused while parsing, so an unencrypted volume cannot even be described.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "bool", into = "bool")]
pub struct Encrypted(());

impl Encrypted {
    pub const YES: Encrypted = Encrypted(());

    // R2
    pub fn parse(value: bool) -> Result<Self, RuleError> {
        if !value {
            return err(
                "R2: every customer-data volume is encrypted at rest; `encrypted = false` is not allowed",
            );
        }
        Ok(Self::YES)
    }
}

impl Default for Encrypted {
    fn default() -> Self {
        Self::YES
    }
}

impl TryFrom<bool> for Encrypted {
    type Error = RuleError;
    fn try_from(value: bool) -> Result<Self, RuleError> {
        Self::parse(value)
    }
}

impl From<Encrypted> for bool {
    fn from(_: Encrypted) -> bool {
        true
    }
}

impl JsonSchema for Encrypted {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Encrypted")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "boolean", "enum": [true], "default": true,
            "description": "R2: always true; an unencrypted volume is refused." })
    }
}

/// Declares a string enum with serde names, a schema and a `parse` that lists the choices.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? } default = $default:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Result<Self, RuleError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => err(format!("`{other}` is not one of: {}", Self::ALL.join(", "))),
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::$default
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// How often a subscription is paid in advance (R11).
    BillingPeriod { Monthly = "monthly", Annual = "annual" } default = Monthly
);

string_enum!(
    /// Who may register on a homeserver (R9).
    Registration { InviteOnly = "invite_only", Open = "open", EmailDomains = "email_domains" } default = InviteOnly
);

string_enum!(
    /// How often backups are taken. R4 promises daily backups; daily is the only schedule.
    BackupSchedule { Daily = "daily" } default = Daily
);

string_enum!(
    /// R5: support tiers by plan.
    SupportTier { BestEffort = "best_effort", Prioritised = "prioritised", NextBusinessDay = "next_business_day" } default = BestEffort
);

/// R9: who may register, with the email-domain whitelist normalised (lower case, sorted,
/// de-duplicated) so that the same policy always reads back the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationPolicy {
    pub mode: Registration,
    pub allowed_email_domains: Vec<EmailDomain>,
}

impl RegistrationPolicy {
    // R9
    pub fn new(mode: Registration, domains: Vec<EmailDomain>) -> Result<Self, RuleError> {
        let mut domains = domains;
        domains.sort();
        domains.dedup();
        match (mode, domains.is_empty()) {
            (Registration::EmailDomains, true) => err(
                "R9: registration = email_domains needs at least one domain in allowed_email_domains",
            ),
            (Registration::InviteOnly | Registration::Open, false) => err(format!(
                "R9: allowed_email_domains is only used with registration = email_domains (registration is {mode})"
            )),
            _ => Ok(Self { mode, allowed_email_domains: domains }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1_region_must_be_us() {
        assert!(RegionCode::parse("us-east-1").is_ok());
        assert!(RegionCode::parse("us-west-2").is_ok());
        let e = RegionCode::parse("eu-west-1").unwrap_err();
        assert!(e.message.starts_with("R1:"), "{e}");
        assert!(RegionCode::parse("US-EAST-1").is_err());
        assert!(RegionCode::parse("us-east").is_err());
        assert!(RegionCode::parse("").is_err());
    }

    #[test]
    fn r2_encrypted_false_is_refused() {
        assert!(Encrypted::parse(true).is_ok());
        assert!(Encrypted::parse(false).unwrap_err().message.starts_with("R2:"));
        let v: Result<Encrypted, _> = serde_json::from_str("false");
        assert!(v.unwrap_err().to_string().contains("R2"));
    }

    #[test]
    fn r4_retention_bounds_and_default() {
        assert_eq!(RetentionDays::default().get(), 30);
        assert!(RetentionDays::parse(7).is_ok());
        assert!(RetentionDays::parse(365).is_ok());
        assert!(RetentionDays::parse(6).unwrap_err().message.contains("R4"));
        assert!(RetentionDays::parse(366).is_err());
        assert!(RetentionDays::parse(-1).is_err());
    }

    #[test]
    fn window_time_is_strict_hh_mm() {
        assert_eq!(WindowTime::parse("03:00").unwrap().minutes(), 180);
        assert_eq!(WindowTime::parse("23:59").unwrap().minutes(), 1439);
        for bad in ["24:00", "3:00", "03:60", "0300", "aa:bb", "+1:00", "03:0 "] {
            assert!(WindowTime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(HomeserverName::parse("staff-chat").is_ok());
        for bad in ["", "-a", "a-", "Staff", "a_b", "1abc", &"a".repeat(64)] {
            assert!(HomeserverName::parse(bad).is_err(), "{bad}");
        }
        assert!(ServerName::parse("chat.example.com").is_ok());
        for bad in ["localhost", "chat.example.com:8448", "Chat.example.com", "a..b", "1.2.3.4"] {
            assert!(ServerName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_normalise_to_lower_case() {
        assert_eq!(Email::parse("Alice@Corp.COM").unwrap().as_str(), "alice@corp.com");
        assert_eq!(Email::parse("alice@corp.com").unwrap().domain(), "corp.com");
        for bad in ["alice", "@corp.com", "alice@", "alice@corp", "a b@corp.com", "a@b@corp.com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn localparts_follow_synapse() {
        assert!(Localpart::parse("alice.smith").is_ok());
        for bad in ["", "Alice", "al ice", "al:ice", &"a".repeat(65)] {
            assert!(Localpart::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn r9_email_domains_need_a_domain_and_are_normalised() {
        let d = |s| EmailDomain::parse(s).unwrap();
        let p = RegistrationPolicy::new(
            Registration::EmailDomains,
            vec![d("b.com"), d("A.com"), d("a.com")],
        )
        .unwrap();
        let got: Vec<_> = p.allowed_email_domains.iter().map(|d| d.as_str()).collect();
        assert_eq!(got, ["a.com", "b.com"]);
        assert!(RegistrationPolicy::new(Registration::EmailDomains, vec![]).unwrap_err().message.contains("R9"));
        assert!(RegistrationPolicy::new(Registration::Open, vec![d("a.com")]).is_err());
        assert!(RegistrationPolicy::new(Registration::InviteOnly, vec![]).is_ok());
    }

    #[test]
    fn r13_payment_method_is_a_processor_id_and_card_numbers_are_not_echoed() {
        assert!(PaymentMethodId::parse("pm_1NxAbC").is_ok());
        let e = PaymentMethodId::parse("4242424242424242").unwrap_err();
        assert!(!e.message.contains("4242"), "{e}");
        assert!(e.message.contains("R13"));
    }

    #[test]
    fn initial_password_never_prints() {
        let p = InitialPassword::parse("correct horse battery").unwrap();
        assert_eq!(format!("{p:?}"), "InitialPassword(***)");
        let e = InitialPassword::parse("short").unwrap_err();
        assert!(!e.message.contains("short"));
    }

    #[test]
    fn enums_list_their_choices() {
        let e = BillingPeriod::parse("weekly").unwrap_err();
        assert!(e.message.contains("monthly, annual"));
        assert_eq!(Registration::parse("email_domains").unwrap(), Registration::EmailDomains);
        let bad: Result<BackupSchedule, _> = serde_json::from_str("\"hourly\"");
        assert!(bad.is_err());
    }
}
