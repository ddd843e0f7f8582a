//! The invocation's deadline from Lambda's context, or none when a local runtime's is not one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2000-01-01T00:00:00Z in Unix milliseconds: no deadline comes before it.
const YEAR_2000_MS: u64 = 946_684_800_000;

/// Whether this process has logged a deadline that is not one.
static WARNED: AtomicBool = AtomicBool::new(false);

/// How long an invocation starting at `now_ms` may take by the deadline its context gives (`deadline_ms`, both Unix
/// milliseconds); `None` when that cannot be a deadline: passed already, or before 2000. `cargo lambda watch` sends
/// `600000`, ten minutes as if it were a time.
pub(crate) fn remaining(deadline_ms: u64, now_ms: u64) -> Option<Duration> {
    (deadline_ms >= YEAR_2000_MS && deadline_ms > now_ms).then(|| Duration::from_millis(deadline_ms - now_ms))
}

/// [`remaining`] from now. The first deadline of the process that is not one is logged at WARN, naming `limit`: the
/// setting the caller keeps to in its place.
pub(crate) fn time_left(deadline_ms: u64, limit: &'static str) -> Option<Duration> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let left = remaining(deadline_ms, now_ms);
    if left.is_none() && first(&WARNED) {
        tracing::warn!(
            deadline_ms,
            limit,
            "The invocation's deadline had passed when it started, so it is not a deadline; the configured limit applies."
        );
    }
    left
}

/// True the first time it is asked about `flag`.
fn first(flag: &AtomicBool) -> bool {
    !flag.swap(true, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_583_200_000; // 2025-12-01T10:00:00Z

    #[test]
    fn a_deadline_ahead_is_the_time_left() {
        assert_eq!(remaining(NOW + 30_000, NOW), Some(Duration::from_secs(30)));
        assert_eq!(remaining(NOW + 1, NOW), Some(Duration::from_millis(1)));
    }

    #[test]
    fn a_deadline_passed_or_before_2000_is_none() {
        // cargo lambda watch's constant, Lambda's default context, a deadline just passed, and the same instant.
        for deadline in [600_000, 0, NOW - 1, NOW] {
            assert_eq!(remaining(deadline, NOW), None, "{deadline}");
        }
        // Before 2000 even on a clock that is itself wrong.
        assert_eq!(remaining(YEAR_2000_MS - 1, 0), None);
        assert_eq!(remaining(YEAR_2000_MS, 0), Some(Duration::from_millis(YEAR_2000_MS)));
    }

    #[test]
    fn only_the_first_is_first() {
        let flag = AtomicBool::new(false);
        assert!(first(&flag));
        assert!(!first(&flag) && !first(&flag));
    }
}
