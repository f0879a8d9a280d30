//! Operator actions that are not part of the customer API. They act on the database; the
//! running `matrixhostd serve` carries them out (the reconciler within its interval, the
//! backup worker at once).

use anyhow::Context;
use matrixhost_api::{Backup, Email, OrgName, Restore};

use crate::domain::{backups, billing_plans, homeservers, orgs};
use crate::platform::Platform;

pub async fn create_org(p: &Platform, name: &str, email: &str, verified: bool) -> anyhow::Result<orgs::Org> {
    let name = OrgName::parse(name).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    Ok(orgs::create_org(&p.db, &name, &email, verified, p.clock.now()).await?)
}

/// R12: blocks every login on the homeserver with `reason` shown to users.
pub async fn block_homeserver(p: &Platform, id: &str, reason: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!reason.trim().is_empty(), "a block needs a reason users can read");
    homeservers::set_operator_block(&p.db, id, Some(reason)).await.with_context(|| format!("homeserver {id}"))
}

pub async fn unblock_homeserver(p: &Platform, id: &str) -> anyhow::Result<()> {
    homeservers::set_operator_block(&p.db, id, None).await.with_context(|| format!("homeserver {id}"))
}

/// R12: records a payment's outcome until the payment processor does (test builds only).
pub async fn set_payment_failed(p: &Platform, billing_plan_id: &str, failed: bool) -> anyhow::Result<()> {
    billing_plans::set_payment_failed(&p.db, billing_plan_id, failed).await.with_context(|| format!("billing plan {billing_plan_id}"))
}

/// `matrixhostd backup take`: queues an on-demand backup for the serving matrixhostd.
pub async fn take_backup(p: &Platform, homeserver_id: &str) -> anyhow::Result<Backup> {
    let org = backups::org_of_homeserver(&p.db, homeserver_id).await?.with_context(|| format!("no homeserver {homeserver_id}"))?;
    let mut tx = p.db.begin().await?;
    let backup = backups::request_backup(&mut tx, &org, homeserver_id, p.clock.now()).await?;
    tx.commit().await?;
    Ok(backup)
}

/// `matrixhostd backup restore`: queues a restore for the serving matrixhostd.
pub async fn restore_backup(p: &Platform, backup_id: &str) -> anyhow::Result<Restore> {
    let homeserver_id = backups::homeserver_of_backup(&p.db, backup_id).await?.with_context(|| format!("no backup {backup_id}"))?;
    let org = backups::org_of_homeserver(&p.db, &homeserver_id).await?.with_context(|| format!("backup {backup_id} belongs to a deleted homeserver"))?;
    let mut tx = p.db.begin().await?;
    let restore = backups::request_restore(&mut tx, &org, &homeserver_id, backup_id, "operator", p.clock.now()).await?;
    tx.commit().await?;
    Ok(restore)
}

pub async fn load_backup(p: &Platform, id: &str) -> anyhow::Result<Option<Backup>> {
    let mut tx = p.db.begin().await?;
    Ok(backups::load_backup(&mut tx, id).await?)
}

pub async fn load_restore(p: &Platform, id: &str) -> anyhow::Result<Option<Restore>> {
    let mut tx = p.db.begin().await?;
    Ok(backups::load_restore(&mut tx, id).await?)
}
