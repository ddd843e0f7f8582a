//! The circuit breaker: when every call fails for a reason of the workspace (a refused token, Intercom down, a rate
//! limit spent for long), nobody's event is at fault; the forwarder stops calling, lets one probe through now and then,
//! and resumes by itself when one succeeds. Pure: the caller passes the time in.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::intercom::{ErrorKind, IntercomError};

/// When the breaker opens and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Workspace failures in a row (no call succeeding between them) that open it; unless they are refusals of the
    /// token (401, 403), they must come from [`DISTINCT_EVENTS`] events at least, so that one event Intercom keeps
    /// answering 5xx for (its tries, its receives) does not hold everyone back.
    pub threshold: u32,
    /// How long it first stays open; doubled after each probe that fails, up to `open_max`.
    pub open_min: Duration,
    pub open_max: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> BreakerPolicy {
        BreakerPolicy { threshold: 5, open_min: Duration::from_secs(5), open_max: Duration::from_secs(300) }
    }
}

/// Events among the failures in a row that open the breaker for 5xx, timeouts and 429s.
pub(crate) const DISTINCT_EVENTS: usize = 3;

/// Whether a call may be made now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Closed: call.
    Call,
    /// Open long enough: this one call tells whether Intercom is back; others wait for its answer.
    Probe,
    /// Open: no call. It lets a probe through in `retry_in`; `failure` is what keeps it open.
    Withheld { retry_in: Duration, failure: String },
}

/// What an outcome says about the workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Intercom answered about the request itself (success, or a refusal of this event's data): the workspace works.
    Answering,
    /// A failure no event can cause: 401, 403, 408, 429, 5xx (but 501), a timeout, no connection ([`ErrorKind`]'s
    /// workspace failures).
    Failing { failure: String, kind: ErrorKind },
}

impl Health {
    pub(crate) fn of(outcome: &Result<serde_json::Value, IntercomError>) -> Health {
        match outcome {
            Err(error) if error.is_workspace_failure() => {
                Health::Failing { failure: error.to_string(), kind: error.kind() }
            }
            _ => Health::Answering,
        }
    }
}

/// What an operator is told when the breaker opens: what is wrong and what to do.
pub(crate) fn advice(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unauthorized => {
            "Intercom refuses the access token: set INTERCOM_ACCESS_TOKEN to a valid token, and INTERCOM_REGION to the \
             workspace's region (a token works in its own region only)"
        }
        ErrorKind::Forbidden => {
            "Intercom forbids these calls to this token: check the app's permissions and the workspace's plan"
        }
        ErrorKind::RateLimited => {
            "Intercom's rate limit is spent for longer than a call may wait: lower ForwardConcurrency or \
             INTERCOM_CONCURRENCY, or find the other apps sharing the workspace's limit"
        }
        _ => "Intercom is not answering as it should (see https://www.intercomstatus.com)",
    }
}

/// A change of state worth one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open: `failures` in a row, the last `failure`, of `kind`.
    Opened { failure: String, kind: ErrorKind, open_for: Duration },
    /// A probe failed: open again, for longer.
    StillFailing { failure: String, kind: ErrorKind, open_for: Duration },
    /// A call succeeded after the breaker was open: calls resume.
    Closed { was_open_for: Duration },
}

#[derive(Debug)]
enum State {
    /// `failures` in a row, from the events `events` (their SQS message ids, up to [`DISTINCT_EVENTS`] of them).
    Closed {
        failures: u32,
        events: Vec<String>,
    },
    Open {
        until: Instant,
        period: Duration,
    },
    /// A probe is out since `since`; if it never reports (its invocation ended), another may go after `period`.
    Probing {
        since: Instant,
        period: Duration,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// The last workspace failure, for what is withheld.
    failure: String,
    /// When it last opened from closed.
    opened_at: Option<Instant>,
    /// Since when it has been closed (made, or a probe succeeded).
    closed_since: Instant,
    /// The last call Intercom answered, and for which event (SQS message id).
    answered: Option<(Instant, Option<String>)>,
    /// The last one before it for another event.
    answered_before: Option<Instant>,
}

/// One per forwarder (so per warm Lambda): shared by every person's calls.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub(crate) fn new(policy: BreakerPolicy) -> Breaker {
        let inner = Inner {
            state: State::Closed { failures: 0, events: Vec::new() },
            failure: String::new(),
            opened_at: None,
            closed_since: Instant::now(),
            answered: None,
            answered_before: None,
        };
        Breaker { policy, inner: Mutex::new(inner) }
    }

    /// Whether Intercom answered a call for an event other than `event` after `since`: the workspace works, so
    /// `event`'s own failures meanwhile are its own.
    pub(crate) fn answered_another_since(&self, event: &str, since: Instant) -> bool {
        let inner = self.lock();
        let other = match &inner.answered {
            Some((at, by)) if by.as_deref() != Some(event) => Some(*at),
            _ => inner.answered_before,
        };
        other.is_some_and(|at| at > since)
    }

    pub(crate) fn policy(&self) -> BreakerPolicy {
        self.policy
    }

    /// Whether a call may go at `now`.
    pub(crate) fn permit(&self, now: Instant) -> Permit {
        let mut inner = self.lock();
        let withheld = |retry_in: Duration, failure: &str| Permit::Withheld { retry_in, failure: failure.to_owned() };
        match inner.state {
            State::Closed { .. } => Permit::Call,
            State::Open { until, period } if now >= until => {
                inner.state = State::Probing { since: now, period };
                Permit::Probe
            }
            State::Open { until, .. } => withheld(until - now, &inner.failure),
            State::Probing { since, period } if now >= since + period => {
                inner.state = State::Probing { since: now, period };
                Permit::Probe
            }
            State::Probing { since, period } => withheld(since + period - now, &inner.failure),
        }
    }

    /// Whether calls are withheld (open, or a probe out).
    pub fn is_open(&self) -> bool {
        !matches!(self.lock().state, State::Closed { .. })
    }

    /// How long it has been closed at `now`: how long Intercom has been answering, as far as this forwarder knows.
    pub(crate) fn answering_for(&self, now: Instant) -> Duration {
        let inner = self.lock();
        match inner.state {
            State::Closed { .. } => now.saturating_duration_since(inner.closed_since),
            _ => Duration::ZERO,
        }
    }

    /// How long from `now` until it lets a probe through; `None` when closed.
    pub(crate) fn retry_in(&self, now: Instant) -> Option<Duration> {
        match self.lock().state {
            State::Closed { .. } => None,
            State::Open { until, .. } => Some(until.saturating_duration_since(now)),
            State::Probing { since, period } => Some((since + period).saturating_duration_since(now)),
        }
    }

    /// Tells the breaker how a call made under `permit` for the event `event` (its SQS message id, when known) ended.
    pub(crate) fn record(
        &self,
        permit: &Permit,
        health: Health,
        event: Option<&str>,
        now: Instant,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        let (failure, kind) = match health {
            Health::Answering => {
                let previous = inner.answered.replace((now, event.map(str::to_owned)));
                if let Some((at, _)) = previous.filter(|(_, by)| by.as_deref() != event) {
                    inner.answered_before = Some(at);
                }
                let was_open = !matches!(inner.state, State::Closed { .. });
                if was_open {
                    inner.closed_since = now;
                }
                inner.state = State::Closed { failures: 0, events: Vec::new() };
                let opened_at = inner.opened_at.take();
                // A probe's success, or that of a call let through before the breaker opened: calls resume.
                return was_open.then(|| Transition::Closed {
                    was_open_for: opened_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                });
            }
            Health::Failing { failure, kind } => (failure, kind),
        };
        let token = kind.is_token_refused();
        inner.failure = failure.clone();
        match &mut inner.state {
            State::Closed { failures, events } => {
                *failures += 1;
                // A call made outside any record (a test's) counts as an event of its own.
                let event = event.map_or_else(|| format!("call-{failures}"), str::to_owned);
                if events.len() < DISTINCT_EVENTS && !events.contains(&event) {
                    events.push(event);
                }
                let enough = token || events.len() >= DISTINCT_EVENTS.min(self.policy.threshold as usize);
                if *failures < self.policy.threshold || !enough {
                    return None;
                }
                let period = self.policy.open_min;
                inner.state = State::Open { until: now + period, period };
                inner.opened_at = Some(now);
                Some(Transition::Opened { failure, kind, open_for: period })
            }
            State::Probing { period, .. } if *permit == Permit::Probe => {
                let period = (*period * 2).min(self.policy.open_max);
                inner.state = State::Open { until: now + period, period };
                Some(Transition::StillFailing { failure, kind, open_for: period })
            }
            // A call let through before it opened, failing late: it is open already.
            State::Open { .. } | State::Probing { .. } => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy =
        BreakerPolicy { threshold: 3, open_min: Duration::from_secs(5), open_max: Duration::from_secs(20) };

    fn failing() -> Health {
        Health::Failing {
            failure: "Intercom answered 503 service_unavailable: down".into(),
            kind: ErrorKind::Transient,
        }
    }

    fn refused() -> Health {
        Health::Failing {
            failure: "Intercom answered 401 unauthorized: Access Token Invalid".into(),
            kind: ErrorKind::Unauthorized,
        }
    }

    #[test]
    fn it_opens_after_failures_in_a_row_and_a_success_between_them_resets_the_count() {
        let (breaker, t) = (Breaker::new(POLICY), Instant::now());
        assert_eq!(breaker.record(&Permit::Call, failing(), None, t), None);
        assert_eq!(breaker.record(&Permit::Call, failing(), None, t), None);
        assert_eq!(breaker.record(&Permit::Call, Health::Answering, None, t), None);
        assert_eq!(breaker.record(&Permit::Call, failing(), None, t), None);
        assert_eq!(breaker.record(&Permit::Call, failing(), None, t), None);
        assert_eq!(breaker.permit(t), Permit::Call);
        let opened = breaker.record(&Permit::Call, failing(), None, t);
        assert!(matches!(opened, Some(Transition::Opened { open_for, .. }) if open_for == Duration::from_secs(5)));
        let withheld = breaker.permit(t + Duration::from_secs(2));
        assert_eq!(
            withheld,
            Permit::Withheld {
                retry_in: Duration::from_secs(3),
                failure: "Intercom answered 503 service_unavailable: down".into()
            }
        );
    }

    #[test]
    fn one_probe_at_a_time_and_each_failed_probe_keeps_it_open_twice_as_long_up_to_the_cap() {
        let (breaker, t) = (Breaker::new(POLICY), Instant::now());
        for _ in 0..3 {
            breaker.record(&Permit::Call, failing(), None, t);
        }
        let mut now = t + Duration::from_secs(5);
        for expected in [10, 20, 20] {
            assert_eq!(breaker.permit(now), Permit::Probe);
            assert!(matches!(breaker.permit(now), Permit::Withheld { .. }), "a second call waits for the probe");
            let again = breaker.record(&Permit::Probe, failing(), None, now);
            assert!(
                matches!(again, Some(Transition::StillFailing { open_for, .. }) if open_for.as_secs() == expected),
                "{again:?}"
            );
            now += Duration::from_secs(expected);
        }
        assert_eq!(breaker.permit(now), Permit::Probe);
        let closed = breaker.record(&Permit::Probe, Health::Answering, None, now);
        assert_eq!(closed, Some(Transition::Closed { was_open_for: Duration::from_secs(55) }));
        assert_eq!(breaker.permit(now), Permit::Call);
        assert!(!breaker.is_open());
    }

    #[test]
    fn one_event_failing_again_and_again_does_not_open_it_but_a_refused_token_does() {
        let (breaker, t) = (Breaker::new(POLICY), Instant::now());
        for _ in 0..10 {
            assert_eq!(breaker.record(&Permit::Call, failing(), Some("m-1"), t), None);
        }
        assert_eq!(breaker.record(&Permit::Call, failing(), Some("m-2"), t), None, "two events are not enough");
        assert!(breaker.record(&Permit::Call, failing(), Some("m-3"), t).is_some(), "three are");
        let (breaker, t) = (Breaker::new(POLICY), Instant::now());
        breaker.record(&Permit::Call, refused(), Some("m-1"), t);
        breaker.record(&Permit::Call, refused(), Some("m-1"), t);
        assert!(breaker.record(&Permit::Call, refused(), Some("m-1"), t).is_some(), "a 401 is no event's doing");
    }

    #[test]
    fn it_tells_how_long_intercom_has_been_answering() {
        let (breaker, t) = (Breaker::new(POLICY), Instant::now());
        assert!(breaker.answering_for(t + Duration::from_secs(60)) >= Duration::from_secs(60));
        for _ in 0..3 {
            breaker.record(&Permit::Call, failing(), None, t);
        }
        assert_eq!(breaker.answering_for(t + Duration::from_secs(1)), Duration::ZERO);
        let later = t + Duration::from_secs(5);
        assert_eq!(breaker.permit(later), Permit::Probe);
        breaker.record(&Permit::Probe, Health::Answering, None, later);
        assert_eq!(breaker.answering_for(later + Duration::from_secs(7)), Duration::from_secs(7));
    }

    #[test]
    fn a_probe_that_never_reports_does_not_keep_it_shut() {
        let (breaker, t) = (Breaker::new(POLICY), Instant::now());
        for _ in 0..3 {
            breaker.record(&Permit::Call, failing(), None, t);
        }
        assert_eq!(breaker.permit(t + Duration::from_secs(5)), Permit::Probe);
        assert!(matches!(breaker.permit(t + Duration::from_secs(9)), Permit::Withheld { .. }));
        assert_eq!(breaker.permit(t + Duration::from_secs(10)), Permit::Probe);
    }

    #[test]
    fn the_advice_names_what_to_do_for_each_kind_of_workspace_failure() {
        assert!(advice(ErrorKind::Unauthorized).contains("INTERCOM_ACCESS_TOKEN"));
        assert!(advice(ErrorKind::Forbidden).contains("permissions"));
        assert!(advice(ErrorKind::RateLimited).contains("rate limit"));
        assert!(advice(ErrorKind::Transient).contains("intercomstatus"));
    }
}
