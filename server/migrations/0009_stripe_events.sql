-- Stripe's webhook events, each handled once (Stripe delivers at least once). R13: only the
-- event's id, type, time and the id of its object are kept, never the payload.
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    object_id TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX stripe_events_received ON stripe_events (received_at);

-- The Stripe subscription a billing plan is, and the creation time of the last payment event
-- applied to it: an older event that arrives later changes nothing.
ALTER TABLE billing_plans ADD COLUMN stripe_subscription_id TEXT;
ALTER TABLE billing_plans ADD COLUMN payment_event_at TEXT;
CREATE INDEX billing_plans_stripe_subscription ON billing_plans (stripe_subscription_id);
