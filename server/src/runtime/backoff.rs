//! Failed starts are retried with growing pauses. A homeserver that cannot start (a damaged
//! volume, or a tenant that sabotages its own Synapse) then costs the host a start every few
//! minutes instead of every pass, and its customer gets one event per failure streak, not one
//! every few seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// The failure streak of each homeserver that last failed to start.
#[derive(Debug, Default)]
pub struct StartBackoff {
    streaks: Mutex<HashMap<String, Streak>>,
}

#[derive(Debug)]
struct Streak {
    /// The spec that failed; a new one (the customer changed something) is tried at once.
    fingerprint: String,
    failures: u32,
    not_before: Instant,
}

impl StartBackoff {
    /// Whether a start of the spec `fingerprint` may be tried at `now`.
    pub fn may_start(&self, id: &str, fingerprint: &str, now: Instant) -> bool {
        let streaks = self.streaks.lock().unwrap_or_else(|e| e.into_inner());
        streaks.get(id).is_none_or(|s| s.fingerprint != fingerprint || now >= s.not_before)
    }

    /// Records a failed start; returns whether it began a streak (and so deserves an event).
    pub fn failed(&self, id: &str, fingerprint: &str, now: Instant) -> bool {
        let mut streaks = self.streaks.lock().unwrap_or_else(|e| e.into_inner());
        let streak = streaks.entry(id.to_owned()).or_insert(Streak { fingerprint: fingerprint.to_owned(), failures: 0, not_before: now });
        if streak.fingerprint != fingerprint {
            *streak = Streak { fingerprint: fingerprint.to_owned(), failures: 0, not_before: now };
        }
        streak.failures += 1;
        streak.not_before = now + pause(streak.failures);
        streak.failures == 1
    }

    pub fn succeeded(&self, id: &str) {
        self.streaks.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// 5 s after the first failure, doubling, at most 5 minutes.
fn pause(failures: u32) -> Duration {
    FIRST_PAUSE.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=10).map(|n| pause(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
        assert_eq!(pause(u32::MAX), MAX_PAUSE);
    }

    #[test]
    fn a_streak_waits_its_pause_and_a_new_spec_or_a_success_ends_it() {
        let b = StartBackoff::default();
        let t0 = Instant::now();
        assert!(b.may_start("hs_a", "f1", t0));
        assert!(b.failed("hs_a", "f1", t0), "the first failure begins a streak");
        assert!(!b.may_start("hs_a", "f1", t0 + Duration::from_secs(4)));
        assert!(b.may_start("hs_a", "f1", t0 + Duration::from_secs(5)));
        assert!(!b.failed("hs_a", "f1", t0 + Duration::from_secs(5)), "the same streak");
        assert!(!b.may_start("hs_a", "f1", t0 + Duration::from_secs(14)));
        // Another homeserver is not affected; a changed spec is tried at once.
        assert!(b.may_start("hs_b", "f1", t0));
        assert!(b.may_start("hs_a", "f2", t0 + Duration::from_secs(6)));
        assert!(b.failed("hs_a", "f2", t0 + Duration::from_secs(6)), "a new spec begins a new streak");
        b.succeeded("hs_a");
        assert!(b.may_start("hs_a", "f2", t0 + Duration::from_secs(7)));
    }
}
