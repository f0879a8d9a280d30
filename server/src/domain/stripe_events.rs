//! Stripe's webhook events: each one recorded and handled once, and what a payment event means
//! for the billing plan that is the event's subscription (R12: a failed payment blocks the
//! homeserver, a paid invoice lifts the block).

use chrono::{DateTime, Utc};
use matrixhost_api::StripeEventOutcome as Outcome;

use super::billing_plans::{self, PaymentRecorded};
use super::invoices::{self, Recorded};
use super::DomainResult;
use crate::db::{ts, Db, Tx};
use crate::stripe::Event;

/// Records `event` and acts on it, in one transaction, once per event id.
pub async fn handle(db: &Db, event: &Event, now: DateTime<Utc>) -> DomainResult<Outcome> {
    let mut tx = db.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO stripe_events (id, type, created_at, received_at, object_id, outcome) VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(ts(event.created_at()))
    .bind(ts(now))
    .bind(&event.data.object.id)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        return Ok(Outcome::Duplicate);
    }
    // R13: an invoice's state and amounts are kept, whatever the event about it.
    let recorded = match (event.kind.starts_with("invoice."), invoices::Observed::from_event(&event.data.object)) {
        (true, Some(invoice)) => invoices::record(&mut tx, &invoice, now).await?,
        _ => Recorded::NotOurs,
    };
    let outcome = match event.kind.as_str() {
        // R12. A failure reported of an invoice that has been paid since (say on the billing
        // page, before the failure's event was delivered) blocks nothing.
        "invoice.payment_failed" if recorded == Recorded::Stale => Outcome::Stale,
        "invoice.payment_failed" => payment(&mut tx, event, true).await?,
        // `invoice.paid` is Stripe's; `invoice.payment_succeeded` also comes from older API
        // versions and from localstripe.
        "invoice.paid" | "invoice.payment_succeeded" => payment(&mut tx, event, false).await?,
        _ => match recorded {
            Recorded::Kept => Outcome::Applied,
            Recorded::Stale => Outcome::Stale,
            Recorded::NotOurs => Outcome::Ignored,
        },
    };
    sqlx::query("UPDATE stripe_events SET outcome = $1 WHERE id = $2").bind(outcome.as_str()).bind(&event.id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn payment(tx: &mut Tx<'_>, event: &Event, failed: bool) -> DomainResult<Outcome> {
    let Some(subscription) = &event.data.object.subscription else { return Ok(Outcome::Ignored) };
    Ok(match billing_plans::record_payment_of_subscription(tx, subscription, failed, Some(event.created_at())).await? {
        PaymentRecorded::Applied => Outcome::Applied,
        PaymentRecorded::Stale => Outcome::Stale,
        PaymentRecorded::UnknownSubscription => Outcome::UnknownSubscription,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db_with_plan() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await.unwrap();
        let t = "2026-12-01T00:00:00Z";
        sqlx::query("INSERT INTO organizations (id, name, email, email_verified, created_at) VALUES ('org_1', 'acme', 'it@acme.example', 1, $1)").bind(t).execute(&db).await.unwrap();
        sqlx::query(
            "INSERT INTO billing_plans (id, org_id, plan, active_plan, billing_period, additional_users, status, anniversary_anchor, current_period_start, current_period_end, created_at, updated_at, version, stripe_subscription_id) \
             VALUES ('bp_1', 'org_1', 'silver', 'silver', 'monthly', 0, 'active', $1, $1, '2027-01-01T00:00:00Z', $1, $1, 1, 'sub_1')",
        )
        .bind(t)
        .execute(&db)
        .await
        .unwrap();
        (dir, db)
    }

    fn event(id: &str, kind: &str, created: i64, subscription: &str) -> Event {
        Event::parse(format!(r#"{{"id":"{id}","type":"{kind}","created":{created},"data":{{"object":{{"id":"in_{id}","subscription":"{subscription}"}}}}}}"#).as_bytes()).unwrap()
    }

    async fn status(db: &Db) -> String {
        sqlx::query_scalar("SELECT status FROM billing_plans WHERE id = 'bp_1'").fetch_one(db).await.unwrap()
    }

    /// R12 through Stripe's events: failed blocks (past_due), paid lifts it; a redelivered event
    /// does nothing twice; an older event that arrives late changes nothing.
    #[tokio::test]
    async fn r12_payment_events_apply_once_and_in_order() {
        let (_dir, db) = db_with_plan().await;
        let now = Utc::now();
        let t0 = 1_764_633_600;
        assert_eq!(handle(&db, &event("evt_1", "invoice.payment_failed", t0, "sub_1"), now).await.unwrap(), Outcome::Applied);
        assert_eq!(status(&db).await, "past_due");
        assert_eq!(handle(&db, &event("evt_2", "invoice.paid", t0 + 60, "sub_1"), now).await.unwrap(), Outcome::Applied);
        assert_eq!(status(&db).await, "active");
        // Stripe retries a delivery it did not see answered: the same id is a duplicate.
        assert_eq!(handle(&db, &event("evt_1", "invoice.payment_failed", t0, "sub_1"), now).await.unwrap(), Outcome::Duplicate);
        assert_eq!(status(&db).await, "active");
        // A failure from before the payment, delivered late (another id), is stale.
        assert_eq!(handle(&db, &event("evt_0", "invoice.payment_failed", t0 - 60, "sub_1"), now).await.unwrap(), Outcome::Stale);
        assert_eq!(status(&db).await, "active");
        assert_eq!(handle(&db, &event("evt_3", "invoice.paid", t0 + 120, "sub_other"), now).await.unwrap(), Outcome::UnknownSubscription);
        assert_eq!(handle(&db, &event("evt_4", "customer.updated", t0 + 120, "sub_1"), now).await.unwrap(), Outcome::Ignored);
        // Every event is recorded with its outcome, and nothing of its payload beyond the ids.
        let recorded: Vec<(String, String)> = sqlx::query_as("SELECT id, outcome FROM stripe_events ORDER BY id").fetch_all(&db).await.unwrap();
        assert_eq!(
            recorded,
            [("evt_0", "stale"), ("evt_1", "applied"), ("evt_2", "applied"), ("evt_3", "unknown_subscription"), ("evt_4", "ignored")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .to_vec()
        );
    }

    fn invoice_event(id: &str, kind: &str, status: &str, amount_paid: i64) -> Event {
        let object = format!(r#"{{"id":"in_1","customer":"cus_1","subscription":"sub_1","status":"{status}","total":5000,"amount_due":5000,"amount_paid":{amount_paid},"currency":"usd","created":1764633600}}"#);
        Event::parse(format!(r#"{{"id":"{id}","type":"{kind}","created":1764633600,"data":{{"object":{object}}}}}"#).as_bytes()).unwrap()
    }

    /// R13, out of order: events about one invoice may arrive in any order (all in the same
    /// second, as Stripe's often are). What is kept of it never goes back a stage, and (R12) a
    /// failure reported of an invoice that is paid since blocks nothing.
    #[tokio::test]
    async fn an_invoice_never_goes_back_to_an_earlier_stage() {
        let (_dir, db) = db_with_plan().await;
        sqlx::query("INSERT INTO billing_profiles (org_id, stripe_customer_id, updated_at) VALUES ('org_1', 'cus_1', '2026-12-01T00:00:00Z')").execute(&db).await.unwrap();
        let kept = || async { sqlx::query_as::<_, (String, i64)>("SELECT status, amount_paid_cents FROM invoices WHERE id = 'in_1'").fetch_one(&db).await.unwrap() };
        let now = Utc::now();
        assert_eq!(handle(&db, &invoice_event("evt_a", "invoice.finalized", "open", 0), now).await.unwrap(), Outcome::Applied);
        assert_eq!(handle(&db, &invoice_event("evt_b", "invoice.paid", "paid", 5000), now).await.unwrap(), Outcome::Applied);
        assert_eq!(kept().await, ("paid".to_owned(), 5000));
        // The invoice's creation and finalization, delivered late.
        assert_eq!(handle(&db, &invoice_event("evt_c", "invoice.created", "draft", 0), now).await.unwrap(), Outcome::Stale);
        assert_eq!(handle(&db, &invoice_event("evt_d", "invoice.finalized", "open", 0), now).await.unwrap(), Outcome::Stale);
        assert_eq!(kept().await, ("paid".to_owned(), 5000));
        // Within a stage the newest word counts (a draft's amounts change as items are added).
        assert_eq!(handle(&db, &invoice_event("evt_e", "invoice.updated", "paid", 5000), now).await.unwrap(), Outcome::Applied);
        // A failure of the (since paid) invoice, delivered late, blocks nothing.
        let late_failure = invoice_event("evt_g", "invoice.payment_failed", "open", 0);
        assert_eq!(handle(&db, &late_failure, now).await.unwrap(), Outcome::Stale);
        assert_eq!(status(&db).await, "active");
        // Another customer's invoice is not ours to keep.
        let foreign = Event::parse(br#"{"id":"evt_f","type":"invoice.created","created":1764633600,"data":{"object":{"id":"in_2","customer":"cus_other","status":"draft","total":1,"amount_due":1,"amount_paid":0,"currency":"usd","created":1764633600}}}"#).unwrap();
        assert_eq!(handle(&db, &foreign, now).await.unwrap(), Outcome::Ignored);
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invoices").fetch_one(&db).await.unwrap();
        assert_eq!(count, 1);
    }
}
