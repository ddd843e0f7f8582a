//! How the forwarder works through a batch and tries its failures again: one set of defaults, which the
//! configuration reads from too.

use std::time::Duration;

use super::breaker::BreakerPolicy;
use super::written::WriteMemory;
use crate::retry::RetryPolicy;

/// How a batch is worked through, and how its failures are tried again.
#[derive(Clone, Copy, Debug)]
pub struct ForwardOptions {
    /// People (message groups) worked on at once.
    pub concurrency: usize,
    /// Tries of one Intercom call within an invocation.
    pub retry: RetryPolicy,
    /// The Intercom client's timeout: no try starts unless it can end before the stop.
    pub call_timeout: Duration,
    /// Time kept back from the invocation's deadline to dead-letter, answer and log.
    pub margin: Duration,
    /// The waits of an event handed back, growing with the time it has been failing (`attempts` is not used: the
    /// horizon ends its tries).
    pub redelivery: RetryPolicy,
    /// An event still failing for a reason that may pass once it is older than this (in its queue) is dead-lettered
    /// with `retries_exhausted` and the last reason (`RETRY_HORIZON`).
    pub horizon: Duration,
    /// An alias whose previous contact Intercom does not hold is handed back for this long, then skipped.
    pub alias_wait: Duration,
    /// When calls are held back because every call fails for a reason of the workspace.
    pub breaker: BreakerPolicy,
    /// Tries of one event that Intercom answered 5xx for, while the breaker stayed closed, after which it is
    /// dead-lettered as `intercom_server_error_repeated` (`SERVER_ERROR_TRIES`).
    pub server_error_tries: u32,
    /// How long what the identity store says was written goes by (`IDENTITY_REFRESH`, `LAST_SEEN_RESOLUTION`).
    pub memory: WriteMemory,
}

/// What the template sets: the longest SQS keeps a message (`MessageRetentionPeriod`, 14 days, on both queues).
pub const QUEUE_RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// The longest wait is at least this share of the horizon: a capped wait is jittered to 3/4 of it at the shortest,
/// so a horizon takes at most 800 tries, and an event never meets the queue's redrive `maxReceiveCount` (1000,
/// template.yaml) before its horizon.
pub(super) const HORIZON_SHARE: u32 = 580;

impl Default for ForwardOptions {
    fn default() -> ForwardOptions {
        ForwardOptions {
            concurrency: 8,
            retry: RetryPolicy {
                attempts: 4,
                min_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(3),
            },
            call_timeout: Duration::from_secs(5),
            margin: Duration::from_millis(1500),
            redelivery: RetryPolicy {
                attempts: u32::MAX,
                min_delay: Duration::from_secs(10),
                max_delay: Duration::from_secs(900),
            },
            horizon: Duration::from_secs(86_400),
            alias_wait: Duration::from_secs(300),
            breaker: BreakerPolicy::default(),
            server_error_tries: 10,
            memory: WriteMemory::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_horizon_takes_fewer_tries_than_the_queues_redrive_allows_even_at_the_shortest_waits() {
        let options = ForwardOptions { horizon: QUEUE_RETENTION, ..ForwardOptions::default() };
        let horizon = options.horizon.min(QUEUE_RETENTION - Duration::from_secs(3600));
        let mut redelivery = options.redelivery;
        redelivery.max_delay = redelivery.max_delay.max(horizon / HORIZON_SHARE);
        let (mut failing, mut tries) = (Duration::ZERO, 0);
        while failing < horizon {
            failing += redelivery.delay_after(failing, 0.0);
            tries += 1;
        }
        assert!(tries <= 800, "{tries} tries");
        assert!(tries > 600, "the waits are not stretched more than needed: {tries}");
    }
}
