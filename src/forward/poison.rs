//! A poisoned event: one Intercom answers 5xx for while other calls pass (the breaker stays closed), which would hold
//! its person's later events until the retry horizon. Its tries are counted per warm function, and past
//! `SERVER_ERROR_TRIES` it is dead-lettered with an error code of its own. (With several functions taking turns at a
//! person's events, each counts its own tries: it is dead-lettered later, never sooner.)

use std::collections::HashMap;
use std::sync::Mutex;

use crate::intercom::IntercomError;
use crate::queue::Reason;

/// The dead letter's error code.
pub const SERVER_ERROR_REPEATED: &str = "intercom_server_error_repeated";

/// Events tracked at most: past it the counts start again (a later dead letter, never a sooner one).
const TRACKED: usize = 10_000;

/// Tries that met a 5xx, by SQS message id.
#[derive(Default)]
pub(super) struct ServerErrors {
    tries: Mutex<HashMap<String, u32>>,
}

impl ServerErrors {
    /// Counts a try of `message_id` that failed with `error`: its tries so far that met a 5xx (0 for other failures).
    fn count(&self, message_id: &str, error: &IntercomError) -> u32 {
        if !error.is_server_error() {
            return 0;
        }
        let mut tries = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        if tries.len() >= TRACKED && !tries.contains_key(message_id) {
            tries.clear();
        }
        let count = tries.entry(message_id.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// Counts a failed try of `message_id`: the dead letter's reason once Intercom answered 5xx for it `limit` times
    /// while it answered others (`breaker_closed`).
    pub(super) fn poisoned(
        &self,
        message_id: &str,
        error: &IntercomError,
        limit: u32,
        breaker_closed: bool,
    ) -> Option<Reason> {
        let tries = self.count(message_id, error);
        (tries >= limit && breaker_closed).then(|| {
            let message = format!(
                "Intercom answered 5xx for this event {tries} times while it answered others (SERVER_ERROR_TRIES is \
                 {limit}); last: {error}"
            );
            Reason::ours(SERVER_ERROR_REPEATED, message)
        })
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
    fn only_5xx_tries_count_and_an_event_done_with_starts_again() {
        let errors = ServerErrors::default();
        assert_eq!(errors.count("m-1", &answer(503)), 1);
        assert_eq!(errors.count("m-1", &answer(429)), 0, "a rate limit is not the event's");
        assert_eq!(errors.count("m-1", &answer(500)), 2);
        assert_eq!(errors.count("m-2", &answer(500)), 1, "per event");
        errors.done("m-1");
        assert_eq!(errors.count("m-1", &answer(502)), 1);
    }
}
