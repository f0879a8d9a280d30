-- Billing through Stripe (R10-R13). R13: only the processor's ids, invoice and subscription
-- states and amounts, and a card's brand and last four digits are kept; never a card number.

-- One per organization: its Stripe customer, the card on file, the billing contact.
CREATE TABLE billing_profiles (
    org_id TEXT PRIMARY KEY REFERENCES organizations(id),
    stripe_customer_id TEXT UNIQUE,
    payment_method_id TEXT,
    card_brand TEXT,
    card_last4 TEXT,
    contact_name TEXT,
    contact_email TEXT,
    updated_at TEXT NOT NULL
);

-- R13: every change to the billing contact: who, when, the old value and the new.
CREATE TABLE billing_contact_changes (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    field TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT
);
CREATE INDEX billing_contact_changes_by_org ON billing_contact_changes (org_id, changed_at);

-- What the Stripe subscription bills at its next renewal: the plan (tier and period) and the
-- quantity (the tier's MAU plus Additional Users).
ALTER TABLE billing_plans ADD COLUMN stripe_plan_id TEXT;
ALTER TABLE billing_plans ADD COLUMN stripe_quantity BIGINT;

-- Invoices as Stripe reports them (state and amounts in US cents).
CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    stripe_subscription_id TEXT,
    status TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    amount_due_cents BIGINT NOT NULL,
    amount_paid_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX invoices_by_org ON invoices (org_id, created_at);

-- R13: links to an invoice: 256-bit random tokens, only their SHA-256 kept, each expiring.
CREATE TABLE invoice_links (
    token_hash TEXT PRIMARY KEY,
    invoice_id TEXT NOT NULL REFERENCES invoices(id),
    org_id TEXT NOT NULL REFERENCES organizations(id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX invoice_links_expiry ON invoice_links (expires_at);
