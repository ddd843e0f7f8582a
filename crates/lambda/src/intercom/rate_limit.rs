//! Intercom's rate-limit headers, and how long to pause so a call does not meet a 429.

use std::time::Duration;

use http::HeaderMap;

/// What `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` said on the last answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// When the window resets, in Unix seconds.
    pub(crate) reset_at: u64,
}

impl RateLimit {
    /// Reads the three headers; `None` when any is missing or not a number.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        Some(RateLimit {
            limit: number("x-ratelimit-limit")?,
            remaining: number("x-ratelimit-remaining")?,
            reset_at: number("x-ratelimit-reset")?,
        })
    }

    /// How long to wait before the next call at `now` (Unix seconds): nothing while calls remain in the window, else until
    /// it resets (a second later, since the reset is given in whole seconds).
    pub(crate) fn pause_at(&self, now: u64) -> Duration {
        if self.remaining > 0 || self.reset_at < now {
            Duration::ZERO
        } else {
            Duration::from_secs(self.reset_at - now + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(limit: &str, remaining: &str, reset: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("x-ratelimit-limit", limit.parse().unwrap());
        map.insert("x-ratelimit-remaining", remaining.parse().unwrap());
        map.insert("x-ratelimit-reset", reset.parse().unwrap());
        map
    }

    #[test]
    fn the_three_headers_are_read() {
        let limit = RateLimit::from_headers(&headers("1666", "1200", "1714564810")).unwrap();
        assert_eq!(limit, RateLimit { limit: 1666, remaining: 1200, reset_at: 1714564810 });
        assert_eq!(RateLimit::from_headers(&headers("1666", "soon", "1714564810")), None);
        assert_eq!(RateLimit::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn calls_pause_only_when_the_window_is_spent() {
        let spent = RateLimit { limit: 1666, remaining: 0, reset_at: 1714564810 };
        assert_eq!(spent.pause_at(1714564806), Duration::from_secs(5));
        assert_eq!(spent.pause_at(1714564811), Duration::ZERO, "the window has already reset");
        let open = RateLimit { remaining: 3, ..spent };
        assert_eq!(open.pause_at(1714564806), Duration::ZERO);
    }
}
