//! What a request carries besides its body: the `If-Match` and `Idempotency-Key` headers and the
//! page token of a list. Each has one parser here, used by the server, and one pattern, put in
//! the OpenAPI document, that accepts exactly what the parser accepts.

use crate::domain::RuleError;

/// `If-Match`: `*`, or a resource version, bare or quoted, optionally weak (`W/"3"`).
pub const IF_MATCH_PATTERN: &str = r#"^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#;

/// `None` for `*` (any version).
pub fn parse_if_match(text: &str) -> Result<Option<i64>, RuleError> {
    let bad = || RuleError::new("If-Match must be `*` or a resource version such as \"3\"");
    if text == "*" {
        return Ok(None);
    }
    let unweak = text.strip_prefix("W/").unwrap_or(text);
    let bare = match unweak.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or_else(bad)?,
        // W/ only comes with a quoted version.
        None if unweak.len() != text.len() => return Err(bad()),
        None => unweak,
    };
    if bare.is_empty() || bare.len() > 18 || !bare.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    bare.parse().map(Some).map_err(|_| bad())
}

/// `Idempotency-Key`: 1-200 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,200}$";

pub fn parse_idempotency_key(text: &str) -> Result<String, RuleError> {
    if text.is_empty() || text.len() > 200 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RuleError::new("Idempotency-Key must be 1-200 visible ASCII characters"));
    }
    Ok(text.to_owned())
}

/// A page token: opaque to clients (inside, the last id of the previous page), so any token of
/// this shape is a valid place to continue from.
pub const PAGE_TOKEN_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

pub fn parse_page_token(text: &str) -> Result<String, RuleError> {
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(RuleError::new("page_token must be the `next_page_token` of a previous page"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_versions_and_star_only() {
        assert_eq!(parse_if_match("*").unwrap(), None);
        for ok in ["3", "\"3\"", "W/\"3\"", "000000000000000042"] {
            assert!(parse_if_match(ok).unwrap().is_some(), "{ok}");
        }
        for bad in ["", "W/3", "\"3", "3\"", "+3", "-1", "3.0", " 3", "1234567890123456789", "W/\"\"", "**"] {
            assert!(parse_if_match(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_tokens() {
        assert!(parse_idempotency_key("k-1!~").is_ok());
        for bad in ["", "a b", "é", &"k".repeat(201)] {
            assert!(parse_idempotency_key(bad).is_err(), "{bad}");
        }
        assert!(parse_page_token("hs_abc-9").is_ok());
        for bad in ["", "a/b", "a.b", &"t".repeat(65)] {
            assert!(parse_page_token(bad).is_err(), "{bad}");
        }
    }
}
