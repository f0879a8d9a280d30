//! Operator actions that are not part of the customer API: blocking a homeserver and recording
//! a payment's outcome (R12). The running reconciler applies them within its interval.

use anyhow::Context;

use crate::db::Db;

/// R12: blocks every login on the homeserver with `reason` shown to users.
pub async fn block_homeserver(db: &Db, id: &str, reason: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!reason.trim().is_empty(), "a block needs a reason users can read");
    let done = sqlx::query("UPDATE homeservers SET blocked_reason = $1, version = version + 1 WHERE id = $2")
        .bind(reason)
        .bind(id)
        .execute(db)
        .await?;
    anyhow::ensure!(done.rows_affected() == 1, "no homeserver with id {id}");
    Ok(())
}

pub async fn unblock_homeserver(db: &Db, id: &str) -> anyhow::Result<()> {
    let done = sqlx::query("UPDATE homeservers SET blocked_reason = NULL, version = version + 1 WHERE id = $1").bind(id).execute(db).await?;
    anyhow::ensure!(done.rows_affected() == 1, "no homeserver with id {id}");
    Ok(())
}

/// R12: a failed payment blocks the subscription's homeserver until it is settled.
pub async fn set_payment_status(db: &Db, billing_plan_id: &str, failed: bool) -> anyhow::Result<()> {
    let status = if failed { "past_due" } else { "active" };
    let done = sqlx::query("UPDATE billing_plans SET status = $1, version = version + 1 WHERE id = $2")
        .bind(status)
        .bind(billing_plan_id)
        .execute(db)
        .await
        .context("cannot record the payment status")?;
    anyhow::ensure!(done.rows_affected() == 1, "no billing plan with id {billing_plan_id}");
    Ok(())
}
