//! How anything that fails is tried again: one policy type for the Intercom calls of an invocation, SendMessageBatch
//! entries, and an event handed back to its queue.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Tries of one thing, the first included, with exponential waits from `min_delay` to `max_delay`, jittered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// One try: for callers that retry by other means.
    pub const ONCE: RetryPolicy = RetryPolicy { attempts: 1, min_delay: Duration::ZERO, max_delay: Duration::ZERO };

    /// The waits before the second, third… try: `attempts - 1` of them, doubling from `min_delay` up to `max_delay`,
    /// each jittered.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }

    /// The wait before the next try of something that has been failing for `failing` (the time since its first try),
    /// without counting tries: about as long again, so the waits double. The base, `failing` held within `min_delay` and
    /// `max_delay`, is jittered to 75–125% (`jitter` in 0.0..1.0) so that what failed together does not come back
    /// together, and never above `max_delay`.
    pub(crate) fn delay_after(&self, failing: Duration, jitter: f64) -> Duration {
        let base = failing.clamp(self.min_delay, self.max_delay.max(self.min_delay));
        base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0)).min(self.max_delay.max(self.min_delay))
    }
}

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration such as 90s, 15m, 24h or 7d")]
    NotADuration(String),
    #[error("`{0}` is not a unit of time: use ms, s, m, h or d")]
    Unit(String),
    #[error("`{0}` is too long")]
    TooLong(String),
}

/// Reads a duration as `500ms`, `90`, `90s`, `15m`, `24h` or `14d` (seconds when no unit is given).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| DurationError::NotADuration(text.to_owned()))?;
    let millis = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(DurationError::Unit(other.to_owned())),
    };
    number.checked_mul(millis).map(Duration::from_millis).ok_or_else(|| DurationError::TooLong(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_number_one_less_than_the_attempts_and_stay_within_bounds() {
        let policy =
            RetryPolicy { attempts: 4, min_delay: Duration::from_millis(100), max_delay: Duration::from_millis(400) };
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 3);
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_millis(800)));
        assert_eq!(RetryPolicy::ONCE.delays().count(), 0);
    }

    #[test]
    fn a_wait_doubles_with_the_time_spent_failing_and_is_capped() {
        let policy =
            RetryPolicy { attempts: u32::MAX, min_delay: Duration::from_secs(10), max_delay: Duration::from_secs(900) };
        assert_eq!(policy.delay_after(Duration::ZERO, 0.5), Duration::from_secs(10));
        assert_eq!(policy.delay_after(Duration::from_secs(40), 0.5), Duration::from_secs(40));
        assert_eq!(policy.delay_after(Duration::from_secs(40), 0.0), Duration::from_secs(30));
        assert_eq!(policy.delay_after(Duration::from_secs(40), 1.0), Duration::from_secs(50));
        assert_eq!(policy.delay_after(Duration::from_secs(86_400), 1.0), Duration::from_secs(900));
        // Replayed as a schedule: each wait about the time already spent (10 s, 10 s, 20 s, 40 s…), so ten tries
        // cover most of an hour, and the next ten five hours more.
        let mut failing = Duration::ZERO;
        for _ in 0..10 {
            failing += policy.delay_after(failing, 0.5);
        }
        assert_eq!(failing, Duration::from_secs(3080));
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 15m "), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1w").unwrap_err().to_string().contains("`w` is not a unit"));
        assert!(parse_duration("soon").unwrap_err().to_string().contains("not a duration"));
        assert!(parse_duration("").is_err());
    }
}
