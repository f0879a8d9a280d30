//! The control plane's clock. Production reads the system clock; a server started with
//! `--test-clock` can be moved forward through the API so tests run days in seconds.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, DurationRound, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    /// Seconds added to the system clock; only ever non-zero with a test clock.
    offset_seconds: AtomicI64,
    adjustable: bool,
}

impl Clock {
    pub fn system() -> Self {
        Self { offset_seconds: AtomicI64::new(0), adjustable: false }
    }

    pub fn adjustable() -> Self {
        Self { offset_seconds: AtomicI64::new(0), adjustable: true }
    }

    pub fn is_adjustable(&self) -> bool {
        self.adjustable
    }

    /// Now, to the second (the precision the store keeps).
    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now() + Duration::seconds(self.offset_seconds.load(Ordering::SeqCst));
        now.duration_trunc(Duration::seconds(1)).unwrap_or(now)
    }

    /// Moves a test clock forward. Time never goes backwards.
    pub fn advance(&self, seconds: i64) -> Result<DateTime<Utc>, &'static str> {
        if !self.adjustable {
            return Err("the clock is the system clock; start matrixhostd with --test-clock to move it");
        }
        if seconds < 0 {
            return Err("the clock only moves forward");
        }
        self.offset_seconds.fetch_add(seconds, Ordering::SeqCst);
        Ok(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_test_clock_moves_and_only_forward() {
        assert!(Clock::system().advance(10).is_err());
        let c = Clock::adjustable();
        let before = c.now();
        let after = c.advance(86_400 * 40).unwrap();
        assert!(after - before >= Duration::days(40));
        assert!(c.advance(-1).is_err());
    }
}
