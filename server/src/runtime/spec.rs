//! What a homeserver should run: its settings as the API holds them, turned into the spec the
//! node agent renders into Synapse's config.

use matrixhost_agent_api::{Limits, PrivacyNotice, RegistrationMode, SynapseSecrets, SynapseSpec};
use matrixhost_api::Registration;
use matrixhost_seal::Sealer;

use super::privacy_notice;
use crate::domain::runtime::Target;

/// The processor named in every privacy notice (R19).
pub const PROCESSOR: &str = "matrixhost";
/// The service account the control plane uses for Synapse's admin API.
pub const SERVICE_LOCALPART: &str = "matrixhost-service";

pub fn service_email(server_name: &str) -> String {
    format!("{SERVICE_LOCALPART}@{server_name}")
}

fn secrets_context(id: &str) -> String {
    format!("synapse-secrets:{id}")
}

pub fn admin_token_context(id: &str) -> String {
    format!("service-token:{id}")
}

/// Fresh Synapse secrets for a new homeserver, sealed to it.
pub fn seal_new_secrets(sealer: &Sealer, id: &str) -> anyhow::Result<String> {
    let json = serde_json::to_vec(&SynapseSecrets::generate())?;
    Ok(sealer.seal(&zeroize::Zeroizing::new(json), &secrets_context(id))?)
}

pub fn open_secrets(sealer: &Sealer, id: &str, sealed: &str) -> anyhow::Result<SynapseSecrets> {
    let plain = sealer.open(sealed, &secrets_context(id))?;
    Ok(serde_json::from_slice(&plain)?)
}

/// R19: the privacy notice naming the customer as controller and us as processor.
pub fn notice(target: &Target) -> PrivacyNotice {
    let hs = &target.homeserver;
    let html = privacy_notice::render(&privacy_notice::NoticeInput {
        entity_name: hs.data_controller.entity_name.as_str(),
        admin_email: hs.data_controller.admin_email.as_str(),
        server_name: hs.server_name.as_str(),
        processor_name: PROCESSOR,
    });
    PrivacyNotice { version: privacy_notice::version_of(&html), html }
}

/// R5: the plan's memory and CPU.
pub fn limits(target: &Target) -> Limits {
    Limits { memory_mb: target.plan.limits.memory_mb, cpu_millicores: target.plan.limits.cpu_millicores }
}

pub fn limits_text(l: Limits) -> String {
    format!("{}/{}", l.memory_mb, l.cpu_millicores)
}

/// The spec for `target`, reachable at `client_url`, blocked with `blocked` (R12) if set.
pub fn build(target: &Target, client_url: &str, secrets: SynapseSecrets, blocked: Option<String>, mau_trial_days: u32) -> SynapseSpec {
    let hs = &target.homeserver;
    let mut reserved_emails: Vec<String> = target.reserved.iter().map(|r| r.email.clone()).collect();
    // The service account holds one extra reserved slot, so the customer's cap is unchanged.
    reserved_emails.push(service_email(hs.server_name.as_str()));
    SynapseSpec {
        server_name: hs.server_name.to_string(),
        public_base_url: format!("{client_url}/"),
        federation_enabled: hs.federation_enabled,
        registration: match hs.registration {
            Registration::InviteOnly => RegistrationMode::InviteOnly,
            Registration::Open => RegistrationMode::Open,
            Registration::EmailDomains => RegistrationMode::EmailDomains,
        },
        allowed_email_domains: hs.allowed_email_domains.iter().map(|d| d.to_string()).collect(),
        guest_access: hs.guest_access,
        encryption_by_default: hs.encryption_by_default,
        mau_cap: target.mau_cap + 1,
        mau_trial_days,
        reserved_emails,
        blocked_message: blocked,
        privacy_notice: notice(target),
        admin_contact: Some(format!("mailto:{}", hs.data_controller.admin_email)),
        secrets,
    }
}
