//! Intercom behind the circuit breaker, each call tried again as one plan's policy allows: itself an [`IntercomApi`],
//! so the forwarder's jobs call it as they would the client (vector's service and retry layers, apart).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::breaker::{Breaker, BreakerPolicy, Health, Permit, Transition, advice};
use crate::intercom::{ApiVersion, IntercomApi, IntercomError, requests};
use crate::retry::RetryPolicy;

/// One plan's view of Intercom: its retry policy, its stop, and the calls it spent (counted without `&mut`, so that
/// the jobs share it).
pub(super) struct Guarded<'a, A> {
    api: &'a A,
    breaker: &'a Breaker,
    retry: RetryPolicy,
    /// No try starts after this instant (the invocation's stop, less one call's timeout).
    until: Instant,
    /// Intercom calls made, the failed ones included.
    made: AtomicUsize,
    /// Tries of the last call.
    attempts: AtomicU32,
}

impl<'a, A: IntercomApi> Guarded<'a, A> {
    /// `made` calls already spent on the same work (an erasure's search before its deletes).
    pub(super) fn new(api: &'a A, breaker: &'a Breaker, retry: RetryPolicy, until: Instant, made: usize) -> Self {
        Guarded { api, breaker, retry, until, made: AtomicUsize::new(made), attempts: AtomicU32::new(0) }
    }

    pub(super) fn made(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    pub(super) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// When no try may start any more.
    pub(super) fn until(&self) -> Instant {
        self.until
    }
}

impl<A: IntercomApi> IntercomApi for Guarded<'_, A> {
    /// While the breaker is open, the call is withheld and fails at once; a retryable failure is tried again after a
    /// jittered wait, unless the wait would end past the stop.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, IntercomError> {
        let mut delays = self.retry.delays();
        self.attempts.store(0, Ordering::Relaxed);
        loop {
            let permit = self.breaker.permit(Instant::now());
            if let Permit::Withheld { failure, .. } = &permit {
                return Err(IntercomError::Withheld(failure.clone()));
            }
            self.made.fetch_add(1, Ordering::Relaxed);
            let attempt = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let outcome = self.api.call(method.clone(), path, body).await;
            let event = super::current_record();
            if let Some(transition) =
                self.breaker.record(&permit, Health::of(&outcome), event.as_deref(), Instant::now())
            {
                log_transition(&transition, self.breaker.policy());
            }
            let error = match outcome {
                Err(error) if error.is_retryable() && permit == Permit::Call => error,
                outcome => return outcome,
            };
            let Some(delay) = delays.next() else { return Err(error) };
            if Instant::now() + delay > self.until {
                return Err(error);
            }
            let path = requests::path_for_logs(path);
            warn!(%method, %path, attempt, delay_ms = delay.as_millis() as u64, %error, "Trying again.");
            tokio::time::sleep(delay).await;
        }
    }

    fn version(&self) -> ApiVersion {
        self.api.version()
    }
}

/// The one line an operator reads when the breaker changes state: what is wrong, what to do, and that nothing is lost.
fn log_transition(transition: &Transition, policy: BreakerPolicy) {
    match transition {
        Transition::Opened { failure, kind, open_for } => error!(
            circuit = "open",
            failure,
            probe_every_s = open_for.as_secs(),
            probe_at_most_every_s = policy.open_max.as_secs(),
            "Intercom is failing every call, so calls are held back: {}. Nothing is dead-lettered for this: events wait \
             in the queue and go on by themselves once a probe call succeeds.",
            advice(*kind)
        ),
        Transition::StillFailing { failure, kind, open_for } => warn!(
            circuit = "open",
            failure,
            next_probe_s = open_for.as_secs(),
            "Intercom still fails: {}. Events keep waiting in the queue.",
            advice(*kind)
        ),
        Transition::Closed { was_open_for } => info!(
            circuit = "closed",
            was_open_s = was_open_for.as_secs(),
            "Intercom answers again; the events that waited go on."
        ),
    }
}
