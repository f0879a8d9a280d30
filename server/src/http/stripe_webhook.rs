//! `POST /v1/stripe/webhook`: Stripe's signed events. Authenticated by the signature, not by a
//! token: the raw body is checked against `Stripe-Signature` before it is parsed, and a request
//! whose signature does not verify is unauthenticated (401).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use matrixhost_api::{ErrorCode, StripeEventOutcome, StripeEventReceipt};

use super::{App, AppError, AppResult};
use crate::domain::stripe_events;
use crate::stripe::{self, Event, SignatureError};

pub(super) async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> AppResult<Json<StripeEventReceipt>> {
    let p = &app.platform;
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let refused = |e: SignatureError| {
        tracing::warn!(error = %e, "refused a Stripe webhook");
        AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidSignature, e.to_string()).with_field("Stripe-Signature")
    };
    // Unsigned is malformed whether or not this server takes webhooks.
    let header = header.ok_or_else(|| refused(SignatureError::Missing))?;
    let Some(secret) = &p.settings.stripe_webhook_secret else {
        return Err(AppError::not_found("route"));
    };
    // Freshness is about the network, so the wall clock, never the test clock.
    stripe::verify(secret, Some(header), &body, chrono::Utc::now()).map_err(refused)?;
    let event = Event::parse(&body).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, format!("not a Stripe event: {e}")))?;
    let outcome = stripe_events::handle(&p.db, &event, p.clock.now()).await?;
    tracing::info!(event_id = %event.id, event_type = %event.kind, outcome = outcome.as_str(), "Stripe event");
    if outcome == StripeEventOutcome::Applied {
        // R12: the reconciler blocks or unblocks the homeserver now.
        p.changed();
    }
    Ok(Json(StripeEventReceipt { event_id: event.id, outcome }))
}
