//! A poisoned event: one Intercom answers 5xx for while it answers other events' calls, which would hold its person's
//! later events until the retry horizon. Its tries are counted per warm function, a try counting only when another
//! event's call was answered since its previous one (during an outage none is, however quiet the traffic), and past
//! `SERVER_ERROR_TRIES` it is dead-lettered with an error code of its own. (With several functions taking turns at a
//! person's events, each counts its own tries: it is dead-lettered later, never sooner.)

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::intercom::IntercomError;
use crate::queue::Reason;

/// The dead letter's error code.
pub(crate) const SERVER_ERROR_REPEATED: &str = "intercom_server_error_repeated";

/// Events tracked at most: past it the counts start again (a later dead letter, never a sooner one).
const TRACKED: usize = 10_000;

/// Tries that met a 5xx while Intercom answered others, and when the last try failed, by SQS message id.
#[derive(Default)]
pub(super) struct ServerErrors {
    tries: Mutex<HashMap<String, (u32, Instant)>>,
}

impl ServerErrors {
    /// Counts a failed try of `message_id`: the dead letter's reason once Intercom answered 5xx for it `limit` times,
    /// each time having answered another event's call since its previous try (`answered_another_since`).
    pub(super) fn poisoned(
        &self,
        message_id: &str,
        error: &IntercomError,
        limit: u32,
        answered_another_since: impl Fn(Instant) -> bool,
    ) -> Option<Reason> {
        let tries = self.count(message_id, error, answered_another_since);
        (tries >= limit).then(|| {
            let message = format!(
                "Intercom answered 5xx for this event {tries} times while it answered others (SERVER_ERROR_TRIES is \
                 {limit}); last: {error}"
            );
            Reason::ours(SERVER_ERROR_REPEATED, message)
        })
    }

    /// The tries so far that count (0 for a failure other than a 5xx).
    fn count(&self, message_id: &str, error: &IntercomError, answered_another_since: impl Fn(Instant) -> bool) -> u32 {
        if !error.is_server_error() {
            return 0;
        }
        let now = Instant::now();
        let mut tries = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        if tries.len() >= TRACKED && !tries.contains_key(message_id) {
            tries.clear();
        }
        let (count, last) = tries.entry(message_id.to_owned()).or_insert((0, now));
        // The first try counts; a later one only when the workspace answered someone else since the one before.
        if *count == 0 || answered_another_since(*last) {
            *count += 1;
        }
        *last = now;
        *count
    }

    /// The event is done with (delivered, skipped, dead-lettered).
    pub(super) fn done(&self, message_id: &str) {
        self.tries.lock().unwrap_or_else(|e| e.into_inner()).remove(message_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> IntercomError {
        IntercomError::Api {
            status,
            code: "server_error".into(),
            message: String::new(),
            redacted: String::new(),
            request_id: None,
            retryable: status != 400,
            link: None,
        }
    }

    #[test]
    fn only_5xx_tries_while_others_were_answered_count_and_an_event_done_with_starts_again() {
        let errors = ServerErrors::default();
        let answered = |_: Instant| true;
        assert_eq!(errors.count("m-1", &answer(503), answered), 1);
        assert_eq!(errors.count("m-1", &answer(429), answered), 0, "a rate limit is not the event's");
        assert_eq!(errors.count("m-1", &answer(500), answered), 2);
        assert_eq!(errors.count("m-1", &answer(500), |_| false), 2, "nobody else answered: an outage, not the event");
        assert_eq!(errors.count("m-2", &answer(500), answered), 1, "per event");
        errors.done("m-1");
        assert_eq!(errors.count("m-1", &answer(502), answered), 1);
        assert!(
            errors.poisoned("m-3", &answer(500), 1, answered).is_some_and(|r| r.error_code == SERVER_ERROR_REPEATED)
        );
    }
}
