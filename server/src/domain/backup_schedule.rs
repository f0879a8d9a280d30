//! When backups run (R4): one per UTC day in each policy's window, one catch-up after an
//! outage, retries after a failure, and retention. [`plan`] is the whole rule as a pure
//! function: the worker uses it to decide, and the policy API uses it for `next_backup_at`.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use matrixhost_api::WindowTime;

/// A failed scheduled backup is tried again this much later...
pub const RETRY_AFTER: Duration = Duration::minutes(15);
/// ...up to this many attempts per day; after that the next day's window.
pub const MAX_ATTEMPTS_PER_DAY: usize = 3;
/// How far back the scheduler looks at earlier attempts (more than one day).
pub const LOOKBACK: Duration = Duration::days(2);

/// A scheduled backup as the scheduler remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub failed: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What the scheduler should do now for one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub due: bool,
    /// When the next scheduled backup is due (`now` when due now).
    pub next_at: DateTime<Utc>,
}

/// The most recent window start at or before `now`.
pub fn window_start_before(now: DateTime<Utc>, window: &WindowTime) -> DateTime<Utc> {
    let minutes = window.minutes();
    let time = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).expect("a parsed window is a valid time");
    let today = now.date_naive().and_time(time).and_utc();
    if today <= now {
        today
    } else {
        today - Duration::days(1)
    }
}

/// R4: the daily schedule.
///
/// * A policy takes effect at its first window after it was created.
/// * Each UTC day has one backup, started at the window start. If `matrixhostd` was down then,
///   it is started as soon as it is back: once, however many days were missed.
/// * A running or completed backup since the last window start means nothing is due until the
///   next window start.
/// * A failed one is retried after [`RETRY_AFTER`], at most [`MAX_ATTEMPTS_PER_DAY`] times.
pub fn plan(window: &WindowTime, created_at: DateTime<Utc>, attempts: &[Attempt], now: DateTime<Utc>) -> Plan {
    let start = window_start_before(now, window);
    let next_window = start + Duration::days(1);
    if start < created_at {
        return Plan { due: false, next_at: next_window };
    }
    let today: Vec<&Attempt> = attempts.iter().filter(|a| a.started_at >= start).collect();
    if today.iter().any(|a| !a.failed) {
        return Plan { due: false, next_at: next_window };
    }
    if today.len() >= MAX_ATTEMPTS_PER_DAY {
        return Plan { due: false, next_at: next_window };
    }
    let last_failure = today.iter().map(|a| a.finished_at.unwrap_or(a.started_at)).max();
    match last_failure {
        Some(at) if at + RETRY_AFTER > now => Plan { due: false, next_at: at + RETRY_AFTER },
        _ => Plan { due: true, next_at: now },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, h, m, 0).unwrap()
    }

    fn ok(t: DateTime<Utc>) -> Attempt {
        Attempt { failed: false, started_at: t, finished_at: Some(t + Duration::minutes(2)) }
    }

    fn failed(t: DateTime<Utc>) -> Attempt {
        Attempt { failed: true, started_at: t, finished_at: Some(t + Duration::minutes(1)) }
    }

    // R4
    #[test]
    fn r4_a_new_policy_starts_at_its_next_window() {
        let w = WindowTime::parse("03:00").unwrap();
        let created = at(10, 10, 0);
        assert_eq!(plan(&w, created, &[], created), Plan { due: false, next_at: at(11, 3, 0) });
        assert_eq!(plan(&w, created, &[], at(11, 2, 59)), Plan { due: false, next_at: at(11, 3, 0) });
        assert_eq!(plan(&w, created, &[], at(11, 3, 0)), Plan { due: true, next_at: at(11, 3, 0) });
        // Created just before the window: today's window counts.
        let created = at(10, 2, 30);
        assert!(plan(&w, created, &[], at(10, 3, 0)).due);
    }

    // R4
    #[test]
    fn r4_one_backup_per_day() {
        let w = WindowTime::parse("03:00").unwrap();
        let created = at(1, 0, 0);
        let done = [ok(at(10, 3, 0))];
        assert_eq!(plan(&w, created, &done, at(10, 3, 1)), Plan { due: false, next_at: at(11, 3, 0) });
        assert_eq!(plan(&w, created, &done, at(10, 23, 59)), Plan { due: false, next_at: at(11, 3, 0) });
        assert!(plan(&w, created, &done, at(11, 3, 0)).due);
        // A running backup counts as today's.
        let running = [Attempt { failed: false, started_at: at(11, 3, 0), finished_at: None }];
        assert!(!plan(&w, created, &running, at(11, 3, 5)).due);
    }

    // R4
    #[test]
    fn r4_after_an_outage_one_catch_up_not_one_per_missed_day() {
        let w = WindowTime::parse("03:00").unwrap();
        let created = at(1, 0, 0);
        // Last backup on the 5th; back on the 9th at noon: one backup is due now...
        let history = vec![ok(at(5, 3, 0))];
        assert_eq!(plan(&w, created, &history, at(9, 12, 0)), Plan { due: true, next_at: at(9, 12, 0) });
        // ...and once it runs, nothing more until the 10th's window.
        let mut history = history;
        history.push(ok(at(9, 12, 0)));
        assert_eq!(plan(&w, created, &history, at(9, 12, 1)), Plan { due: false, next_at: at(10, 3, 0) });
        assert_eq!(plan(&w, created, &history, at(9, 23, 0)), Plan { due: false, next_at: at(10, 3, 0) });
    }

    // R4
    #[test]
    fn r4_failures_are_retried_a_few_times_then_wait_for_the_next_day() {
        let w = WindowTime::parse("03:00").unwrap();
        let created = at(1, 0, 0);
        let mut history = vec![failed(at(10, 3, 0))];
        assert_eq!(plan(&w, created, &history, at(10, 3, 5)), Plan { due: false, next_at: at(10, 3, 16) });
        assert!(plan(&w, created, &history, at(10, 3, 16)).due);
        history.push(failed(at(10, 3, 16)));
        history.push(failed(at(10, 3, 32)));
        assert_eq!(plan(&w, created, &history, at(10, 5, 0)), Plan { due: false, next_at: at(11, 3, 0) });
        // A success after a failure ends the day.
        let history = vec![failed(at(10, 3, 0)), ok(at(10, 3, 16))];
        assert!(!plan(&w, created, &history, at(10, 9, 0)).due);
    }

    #[test]
    fn window_start_is_the_latest_at_or_before_now() {
        let w = WindowTime::parse("23:30").unwrap();
        assert_eq!(window_start_before(at(10, 23, 30), &w), at(10, 23, 30));
        assert_eq!(window_start_before(at(10, 23, 29), &w), at(9, 23, 30));
        assert_eq!(window_start_before(at(11, 0, 10), &w), at(10, 23, 30));
    }
}
