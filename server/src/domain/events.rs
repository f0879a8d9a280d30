//! Homeserver events (R12, R24): what happened to a homeserver that its owner should know, in
//! the platform's own words. Table `homeserver_events`.

use chrono::{DateTime, Utc};
use matrixhost_api::{HomeserverEvent, HomeserverEventKind};

use super::{homeservers, DomainError, DomainResult, PageRequest};
use crate::db::{ts, Db, RowExt};

/// Ids sort by time: `ev_` + milliseconds since 1970 (13 digits) + a random tail, so the keyset
/// order of the list is the order things happened.
fn event_id(at: DateTime<Utc>) -> String {
    format!("ev_{:013}{}", at.timestamp_millis().max(0), crate::ids::random_suffix())
}

pub async fn record(db: &Db, homeserver_id: &str, kind: HomeserverEventKind, message: &str, reference: Option<&str>, now: DateTime<Utc>) -> DomainResult<()> {
    let org_id: Option<String> = sqlx::query_scalar("SELECT org_id FROM homeservers WHERE id = $1").bind(homeserver_id).fetch_optional(db).await?;
    let Some(org_id) = org_id else { return Ok(()) };
    sqlx::query("INSERT INTO homeserver_events (id, org_id, homeserver_id, kind, message, reference, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        // The id orders by the real time (the injectable clock counts whole seconds).
        .bind(event_id(Utc::now()))
        .bind(&org_id)
        .bind(homeserver_id)
        .bind(kind.as_str())
        .bind(message)
        .bind(reference)
        .bind(ts(now))
        .execute(db)
        .await?;
    tracing::info!(homeserver_id, kind = kind.as_str(), reference, "homeserver event: {message}");
    Ok(())
}

pub async fn list(db: &Db, org_id: &str, homeserver_id: &str, page: PageRequest<'_>) -> DomainResult<Vec<HomeserverEvent>> {
    let mut tx = db.begin().await?;
    homeservers::load_or_404(&mut tx, org_id, homeserver_id).await?;
    let rows = sqlx::query(
        "SELECT id, homeserver_id, kind, message, reference, occurred_at FROM homeserver_events \
         WHERE homeserver_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(homeserver_id)
    .bind(org_id)
    .bind(page.after)
    .bind(page.fetch)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HomeserverEvent {
                id: r.text("id")?,
                homeserver_id: r.text("homeserver_id")?,
                kind: HomeserverEventKind::parse(&r.text("kind")?).ok_or_else(|| DomainError::internal("unknown event kind"))?,
                message: r.text("message")?,
                reference: r.opt_text("reference")?,
                occurred_at: r.time("occurred_at")?,
            })
        })
        .collect()
}
