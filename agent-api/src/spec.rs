//! What a homeserver runs: the control plane decides it, the agent renders it into Synapse's
//! config and starts it in the homeserver's sandbox.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How users may register (R9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    InviteOnly,
    Open,
    EmailDomains,
}

/// The per-homeserver secrets written into its config.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynapseSecrets {
    pub registration_shared_secret: String,
    pub macaroon_secret_key: String,
    pub form_secret: String,
}

impl SynapseSecrets {
    /// Three fresh 32-byte random secrets, hex-encoded.
    pub fn generate() -> Self {
        let hex32 = || hex::encode(rand::random::<[u8; 32]>());
        SynapseSecrets { registration_shared_secret: hex32(), macaroon_secret_key: hex32(), form_secret: hex32() }
    }
}

impl fmt::Debug for SynapseSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SynapseSecrets(***)")
    }
}

/// The privacy notice (R19): a consent template and the version derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyNotice {
    pub version: String,
    pub html: String,
}

/// Everything that decides a homeserver's Synapse configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynapseSpec {
    pub server_name: String,
    /// Where clients reach it through the platform's ingress, e.g. `http://127.0.0.1:18005/`.
    pub public_base_url: String,
    /// With federation off the sandbox has no network at all.
    pub federation_enabled: bool,
    pub registration: RegistrationMode,
    /// With [`RegistrationMode::EmailDomains`]: the whitelisted domains.
    pub allowed_email_domains: Vec<String>,
    pub guest_access: bool,
    pub encryption_by_default: bool,
    /// R5/R8/R10: the cap Synapse enforces.
    pub mau_cap: u32,
    /// R6: days before a new account counts.
    pub mau_trial_days: u32,
    /// R8: `mau_limit_reserved_threepids`.
    pub reserved_emails: Vec<String>,
    /// R12: when set, every request is refused with this message.
    pub blocked_message: Option<String>,
    pub privacy_notice: PrivacyNotice,
    /// Given to users in resource-limit errors (e.g. `mailto:it@acme.example`).
    pub admin_contact: Option<String>,
    pub secrets: SynapseSecrets,
}

impl SynapseSpec {
    /// A digest of the whole spec: the same spec always gives the same fingerprint, any change
    /// a different one. A homeserver runs what its fingerprint says.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).expect("a spec always serialises");
        hex::encode(Sha256::digest(&json))
    }
}

/// R5: the resources a homeserver may use, from its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_mb: u32,
    pub cpu_millicores: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SynapseSpec {
        SynapseSpec {
            server_name: "chat.acme.example".into(),
            public_base_url: "http://127.0.0.1:18000/".into(),
            federation_enabled: false,
            registration: RegistrationMode::InviteOnly,
            allowed_email_domains: vec![],
            guest_access: false,
            encryption_by_default: true,
            mau_cap: 11,
            mau_trial_days: 2,
            reserved_emails: vec![],
            blocked_message: None,
            privacy_notice: PrivacyNotice { version: "v1".into(), html: "<p>x</p>".into() },
            admin_contact: None,
            secrets: SynapseSecrets::generate(),
        }
    }

    #[test]
    fn fingerprints_follow_the_spec() {
        let a = spec();
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        let mut b = a.clone();
        b.mau_cap = 12;
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn secrets_never_print() {
        let s = spec();
        let shown = format!("{s:?}");
        assert!(!shown.contains(&s.secrets.form_secret) && !shown.contains(&s.secrets.registration_shared_secret));
    }
}
