//! The housekeeping worker: sends queued mail, deletes access-log entries past their 30 days
//! (R17), rotates the session signing keys (R16), prunes ended sessions and used links, and
//! carries out account erasures that are due (R18). It also writes the access log, in batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::access_log::{self, Entry};
use crate::domain::{account_links, accounts, backups, homeservers, idempotency_keys, invoices, outbox, sessions};
use crate::platform::Platform;

/// How often the worker looks even when nothing wakes it.
const INTERVAL: Duration = Duration::from_secs(10);

/// A full round every `INTERVAL`; woken in between (mail was queued), only the mail goes out,
/// so a burst of creates does not also bring a burst of pruning queries.
pub async fn run(platform: Arc<Platform>) {
    let mut next_round = tokio::time::Instant::now();
    loop {
        let outcome = if platform.take_full_housekeeping() || tokio::time::Instant::now() >= next_round {
            next_round = tokio::time::Instant::now() + INTERVAL;
            round(&platform).await
        } else {
            send_mail(&platform).await
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "housekeeping failed; retrying on the next round");
        }
        tokio::select! {
            _ = platform.housekeeping_woken() => {}
            _ = tokio::time::sleep_until(next_round) => {}
        }
    }
}

async fn round(p: &Platform) -> anyhow::Result<()> {
    let now = p.clock.now();
    send_mail(p).await?;
    let pruned = access_log::prune(&p.db, now).await?;
    if pruned > 0 {
        tracing::info!(entries = pruned, "R17: deleted access-log entries older than 30 days");
    }
    idempotency_keys::prune(&p.db, now).await?;
    sessions::rotate_keys(&p.db, &p.sealer, now).await?;
    sessions::prune(&p.db, now).await?;
    account_links::prune(&p.db, now).await?;
    invoices::prune_links(&p.db, now).await?;
    let mut erased = false;
    for account in accounts::due_for_erasure(&p.db, now).await? {
        match erase(p, &account).await {
            Ok(done) => erased |= done,
            Err(e) => tracing::warn!(account_id = %account.id, error = %e, "account erasure did not finish; it continues on the next round"),
        }
    }
    // The farewell mail of an erasure is queued during this round.
    send_mail(p).await?;
    if erased && p.settings.database_url.is_none() {
        // R18: SQLite keeps old page images in its write-ahead log until a checkpoint.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&p.db).await?;
    }
    Ok(())
}

/// Sends what is due, in batches. A failure keeps the message for a later attempt, with a
/// growing pause.
async fn send_mail(p: &Platform) -> anyhow::Result<()> {
    loop {
        let due = outbox::due(&p.db, &p.sealer, p.clock.now(), 100).await?;
        let mut sent = Vec::with_capacity(due.len());
        for queued in &due {
            match p.mail.send(&p.settings.mail_from, &queued.mail).await {
                Ok(()) => {
                    tracing::info!(mail_id = %queued.id, subject = %queued.mail.subject, "mail sent");
                    sent.push(queued.id.clone());
                }
                Err(e) => {
                    tracing::warn!(mail_id = %queued.id, attempts = queued.attempts + 1, error = %e, "mail not sent; it stays in the outbox");
                    outbox::mark_failed(&p.db, queued, "the mail relay did not take the message", p.clock.now()).await?;
                }
            }
        }
        outbox::mark_sent(&p.db, &sent, p.clock.now()).await?;
        // A full batch that all went out: there may be more.
        if due.len() < 100 || sent.len() < due.len() {
            return Ok(());
        }
    }
}

/// R18: homeservers first (the runtime tears them down), then backups, then the records once
/// nothing else is left. Each round does what it can; the next one goes on. True once the
/// records are gone.
async fn erase(p: &Platform, account: &accounts::Account) -> anyhow::Result<bool> {
    let now = p.clock.now();
    let mut started = false;
    for id in homeservers::ids_of_org(&p.db, &account.org_id).await? {
        let mut tx = p.db.begin().await?;
        homeservers::lift_deletion_protection(&mut tx, &id).await?;
        homeservers::delete(&mut tx, &account.org_id, &id, None, p.hosts_homeservers(), now).await?;
        tx.commit().await?;
        started = true;
    }
    if started {
        p.changed();
    }
    for backup in backups::erasable_of_org(&p.db, &account.org_id, now).await? {
        crate::backup::delete_backup(p, &backup).await?;
    }
    // The processor's customer goes too (with it its subscriptions and cards); invoices Stripe
    // must keep for the law stay with Stripe.
    if let Some(stripe) = &p.stripe {
        let mut tx = p.db.begin().await?;
        let profile = crate::domain::billing_profiles::get(&mut tx, &account.org_id).await?;
        drop(tx);
        if let Some(customer) = profile.stripe_customer_id {
            if let Err(e) = stripe.delete_customer(&customer).await {
                anyhow::ensure!(e.status == 404, "could not delete the organization's payment processor customer: {e}");
            }
        }
    }
    Ok(accounts::erase_records(&p.db, &p.sealer, account, now).await?)
}

/// How long the access-log writer gathers entries before one write: a busy API costs a few
/// commits a second, not one per request (SQLite has one writer).
const ACCESS_LOG_FLUSH: Duration = Duration::from_millis(500);

/// Receives access-log entries from the HTTP edge and writes them in batches.
pub async fn write_access_log(platform: Arc<Platform>, mut entries: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(1024);
    while entries.recv_many(&mut batch, 1024).await > 0 {
        tokio::time::sleep(ACCESS_LOG_FLUSH).await;
        while batch.len() < 8192 {
            match entries.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        if let Err(e) = access_log::insert_batch(&platform.db, &batch).await {
            tracing::warn!(error = %e, entries = batch.len(), "could not write access-log entries");
        }
        batch.clear();
    }
}
