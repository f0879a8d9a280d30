//! What matrixhost takes from Stripe: signed webhook events.
//!
//! Stripe signs each webhook request with the endpoint's signing secret. The `Stripe-Signature`
//! header carries the time of signing (`t=`, Unix seconds) and one or more `v1=` signatures,
//! each the hex HMAC-SHA256 of `"{t}.{raw body}"`; more than one while a secret is rolled. A
//! request is taken only when one `v1` signature matches (compared in constant time) and `t` is
//! within five minutes of now, so a captured request cannot be replayed later; a replay within
//! those minutes is caught by the event id (`domain::stripe_events`).

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far the signing time may be from now, either way (what Stripe's own libraries allow).
pub const TOLERANCE_SECONDS: i64 = 300;

/// The webhook endpoint's signing secret (`whsec_...`). Never printed.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// From the text of the secret file; surrounding whitespace (a trailing newline) is not part
    /// of it.
    pub fn from_text(text: &str) -> anyhow::Result<SigningSecret> {
        let secret = text.trim();
        anyhow::ensure!(!secret.is_empty(), "the Stripe webhook signing secret is empty");
        Ok(SigningSecret(secret.as_bytes().to_vec()))
    }

    /// The `v1` signature of `payload` signed at `timestamp` (what Stripe computes).
    pub fn sign(&self, timestamp: i64, payload: &[u8]) -> String {
        hex::encode(self.mac(timestamp, payload))
    }

    fn mac(&self, timestamp: i64, payload: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// Why a webhook request was refused. The messages name the header, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp (t=)")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    #[error("no v1 signature in the Stripe-Signature header matches the request body")]
    Mismatch,
    #[error("the request was signed {0} seconds away from now; at most {TOLERANCE_SECONDS} are allowed")]
    OutsideTolerance(i64),
}

/// Checks a webhook request's `Stripe-Signature` header against its raw body.
pub fn verify(secret: &SigningSecret, header: Option<&str>, payload: &[u8], now: DateTime<Utc>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", signature)) => signatures.push(signature),
            // Other schemes (v0, test-mode extras) are not trusted.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let expected = secret.mac(timestamp, payload);
    let matches = signatures.iter().filter_map(|s| hex::decode(s).ok()).any(|given| bool::from(given.ct_eq(&expected)));
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let skew = now.timestamp() - timestamp;
    if skew.abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::OutsideTolerance(skew));
    }
    Ok(())
}

/// The part of a Stripe event matrixhost reads. The rest of the payload (names, addresses) is
/// neither kept nor logged (R13).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// When Stripe created the event (Unix seconds): orders events that arrive out of order.
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: EventObject,
}

/// Missing fields are `None`: only invoices carry the last seven.
#[derive(Debug, Clone, Deserialize)]
pub struct EventObject {
    pub id: Option<String>,
    /// On invoices: the subscription the invoice is for.
    pub subscription: Option<String>,
    /// On invoices: its customer, state and amounts (US cents), and when it was made (`created`;
    /// older API versions say `date`).
    pub customer: Option<String>,
    pub status: Option<String>,
    pub total: Option<i64>,
    pub amount_due: Option<i64>,
    pub amount_paid: Option<i64>,
    pub currency: Option<String>,
    pub created: Option<i64>,
    pub date: Option<i64>,
}

impl Event {
    pub fn parse(payload: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.created, 0).unwrap_or(DateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid","created":1764633600,"data":{"object":{"id":"in_1","subscription":"sub_1"}}}"#;

    fn secret() -> SigningSecret {
        SigningSecret::from_text("whsec_test_secret\n").unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_633_600, 0).unwrap()
    }

    /// Stripe's documented example: HMAC-SHA256 over "{t}.{payload}", hex.
    #[test]
    fn the_signature_is_stripes_scheme() {
        let t = now().timestamp();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test_secret").unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(BODY);
        assert_eq!(secret().sign(t, BODY), hex::encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn a_good_signature_within_five_minutes_passes() {
        let t = now().timestamp() - 299;
        let header = format!("t={t},v1={}", secret().sign(t, BODY));
        assert_eq!(verify(&secret(), Some(&header), BODY, now()), Ok(()));
        // One of several v1 signatures (a secret being rolled), in any order, with a v0 ignored.
        let header = format!("t={t},v0=00ff,v1={},v1={}", "ab".repeat(32), secret().sign(t, BODY));
        assert_eq!(verify(&secret(), Some(&header), BODY, now()), Ok(()));
    }

    #[test]
    fn forged_stale_and_malformed_signatures_are_refused() {
        let t = now().timestamp();
        let forged = SigningSecret::from_text("whsec_attacker").unwrap().sign(t, BODY);
        assert_eq!(verify(&secret(), Some(&format!("t={t},v1={forged}")), BODY, now()), Err(SignatureError::Mismatch));
        // The body changed after signing.
        let good = secret().sign(t, BODY);
        let tampered = String::from_utf8(BODY.to_vec()).unwrap().replace("invoice.paid", "invoice.payment_failed");
        assert_eq!(verify(&secret(), Some(&format!("t={t},v1={good}")), tampered.as_bytes(), now()), Err(SignatureError::Mismatch));
        // The timestamp changed after signing.
        assert_eq!(verify(&secret(), Some(&format!("t={},v1={good}", t + 1)), BODY, now()), Err(SignatureError::Mismatch));
        // A captured request replayed later: its signature is right, its time is not.
        let old = t - 301;
        let header = format!("t={old},v1={}", secret().sign(old, BODY));
        assert_eq!(verify(&secret(), Some(&header), BODY, now()), Err(SignatureError::OutsideTolerance(301)));
        let future = t + 600;
        let header = format!("t={future},v1={}", secret().sign(future, BODY));
        assert_eq!(verify(&secret(), Some(&header), BODY, now()), Err(SignatureError::OutsideTolerance(-600)));
        assert_eq!(verify(&secret(), None, BODY, now()), Err(SignatureError::Missing));
        assert_eq!(verify(&secret(), Some(&format!("v1={good}")), BODY, now()), Err(SignatureError::NoTimestamp));
        assert_eq!(verify(&secret(), Some(&format!("t={t}")), BODY, now()), Err(SignatureError::NoSignature));
        assert_eq!(verify(&secret(), Some(&format!("t={t},v1=not-hex")), BODY, now()), Err(SignatureError::Mismatch));
    }

    #[test]
    fn the_secret_never_shows() {
        assert_eq!(format!("{:?}", secret()), "SigningSecret(<redacted>)");
        for e in [SignatureError::Mismatch, SignatureError::OutsideTolerance(400)] {
            assert!(!e.to_string().contains("whsec"));
        }
        assert!(SigningSecret::from_text(" \n").is_err());
    }

    #[test]
    fn events_parse_what_matrixhost_reads() {
        let e = Event::parse(BODY).unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("evt_1", "invoice.paid"));
        assert_eq!(e.data.object.subscription.as_deref(), Some("sub_1"));
        assert_eq!(e.created_at(), now());
    }
}
