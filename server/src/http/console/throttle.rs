//! Throttling of the console's guessable and mail-sending forms: failed log-ins per account
//! and per address, and sign-ups and reset mails per address. Counts live in memory, in a
//! sliding window; a restart forgives them, which costs an attacker a restart they cannot cause.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many events a key may have in a window.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub events: usize,
    pub window: Duration,
}

/// Failed log-ins per account: 5 in 15 minutes.
pub const LOGIN_PER_ACCOUNT: Limit = Limit { events: 5, window: Duration::from_secs(15 * 60) };
/// Failed log-ins per client address: 20 in 15 minutes.
pub const LOGIN_PER_IP: Limit = Limit { events: 20, window: Duration::from_secs(15 * 60) };
/// Sign-ups and reset requests per client address: 10 an hour.
pub const MAIL_PER_IP: Limit = Limit { events: 10, window: Duration::from_secs(3600) };
/// Reset mails per address: 3 an hour.
pub const RESET_PER_ACCOUNT: Limit = Limit { events: 3, window: Duration::from_secs(3600) };

#[derive(Debug, Default)]
pub struct Throttle(Mutex<HashMap<String, Vec<Instant>>>);

impl Throttle {
    /// `Err(wait)` when `key` already used up `limit`.
    pub fn check(&self, key: &str, limit: Limit) -> Result<(), Duration> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let Some(events) = all.get_mut(key) else { return Ok(()) };
        events.retain(|t| now.duration_since(*t) < limit.window);
        if events.len() < limit.events {
            return Ok(());
        }
        Err(limit.window.saturating_sub(now.duration_since(events[0])))
    }

    pub fn record(&self, key: &str) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Old keys go when the map grows, so a spray of addresses cannot fill memory.
        if all.len() > 100_000 {
            let now = Instant::now();
            all.retain(|_, events| events.last().is_some_and(|t| now.duration_since(*t) < Duration::from_secs(3600)));
        }
        all.entry(key.to_owned()).or_default().push(Instant::now());
    }

    pub fn clear(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_after_its_limit_and_others_are_not() {
        let t = Throttle::default();
        let limit = Limit { events: 2, window: Duration::from_secs(60) };
        t.record("a");
        assert!(t.check("a", limit).is_ok());
        t.record("a");
        let wait = t.check("a", limit).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(t.check("b", limit).is_ok());
        t.clear("a");
        assert!(t.check("a", limit).is_ok());
    }
}
