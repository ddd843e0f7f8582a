//! Where events that cannot be delivered go: the dead-letter queue, with the reason as message attributes.

use std::future::Future;
use std::sync::Mutex;

use aws_sdk_sqs::types::MessageAttributeValue;

use super::{MAX_ATTRIBUTE_CHARS, QueueError, sqs_id, sqs_text};

/// Most bytes a dead letter may hold, body and attributes together: the dead-letter queue's `MaximumMessageSize`
/// (template.yaml), SQS's largest, 1 MiB, so that a body the events queue took always fits with its reason.
pub const MAX_DEAD_LETTER_BYTES: usize = 1024 * 1024;

/// Why an event was dead-lettered; each field becomes a message attribute of the same name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    /// Intercom's error code (`parameter_invalid`…), or ours (`malformed_envelope`, `unreadable_event`, `retries_exhausted`).
    pub error_code: String,
    pub error_message: String,
    /// The HTTP status Intercom answered, when it did.
    pub http_status: Option<u16>,
    pub(crate) intercom_request_id: Option<String>,
    /// Tries of the call that failed, in the last invocation.
    pub attempts: u32,
}

impl Reason {
    /// A failure found before any Intercom call (the record itself is the problem).
    pub(crate) fn ours(error_code: &str, error_message: String) -> Reason {
        Reason {
            error_code: error_code.into(),
            error_message,
            http_status: None,
            intercom_request_id: None,
            attempts: 1,
        }
    }
}

/// One message for the dead-letter queue: the original body (so a redrive replays it as it was) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterMessage {
    pub body: String,
    /// The person's ordering key, kept as the FIFO group.
    pub(crate) group_id: String,
    /// The SQS message id of the copy being dead-lettered, as SQS's own redrive does ("the original message's
    /// deduplication ID will be replaced with the original message's ID", SQS Developer Guide, dead-letter queue
    /// redrive): sending the same copy twice keeps one, while an event redriven and failing again within five minutes
    /// is a new copy and is kept too (with the event's deduplication id, the DLQ would drop it as a duplicate).
    pub dedup_id: String,
    /// Times SQS had handed the message out.
    pub receive_count: u32,
    pub(crate) event_type: Option<String>,
    pub(crate) event_name: Option<String>,
    pub reason: Reason,
}

impl DeadLetterMessage {
    /// The message attributes it is sent with: the reason, then what the event was; `(name, data type, value)`.
    pub(crate) fn attributes(&self) -> Vec<(&'static str, &'static str, String)> {
        let reason = &self.reason;
        let short = |value: &str| sqs_text(value, MAX_ATTRIBUTE_CHARS);
        let mut attributes = vec![
            ("error_code", "String", short(&reason.error_code)),
            ("error_message", "String", sqs_text(&reason.error_message, MAX_ERROR_MESSAGE)),
            ("attempts", "Number", reason.attempts.to_string()),
            ("receive_count", "Number", self.receive_count.to_string()),
        ];
        if let Some(status) = reason.http_status {
            attributes.push(("http_status", "Number", status.to_string()));
        }
        if let Some(id) = &reason.intercom_request_id {
            attributes.push(("intercom_request_id", "String", short(id)));
        }
        for (name, value) in [("event_type", &self.event_type), ("event_name", &self.event_name)] {
            if let Some(value) = value {
                attributes.push((name, "String", short(value)));
            }
        }
        attributes
    }

    #[cfg(test)]
    /// What SQS counts toward the message size: the body and each attribute's name, data type and value.
    pub(crate) fn bytes(&self) -> usize {
        let attributes: usize =
            self.attributes().iter().map(|(name, data_type, value)| name.len() + data_type.len() + value.len()).sum();
        self.body.len() + attributes
    }
}

/// Takes dead letters; [`SqsDeadLetter`] in Lambda, [`MemoryDeadLetter`] locally and in tests.
pub trait DeadLetter: Send + Sync {
    /// Keeps `letter`; an error means it is not safely stored, and the event must be handed back to SQS instead.
    fn send(&self, letter: &DeadLetterMessage) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// The dead-letter queue in SQS; FIFO when its URL ends in `.fifo`.
#[derive(Clone, Debug)]
pub struct SqsDeadLetter {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetter {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> SqsDeadLetter {
        SqsDeadLetter { client, queue_url: queue_url.into() }
    }
}

/// Longest `error_message` attribute kept, in characters.
const MAX_ERROR_MESSAGE: usize = 1024;

impl DeadLetter for SqsDeadLetter {
    async fn send(&self, letter: &DeadLetterMessage) -> Result<(), QueueError> {
        let mut request = self.client.send_message().queue_url(&self.queue_url).message_body(&letter.body);
        for (name, data_type, value) in letter.attributes() {
            let value = MessageAttributeValue::builder()
                .data_type(data_type)
                .string_value(value)
                .build()
                .expect("data type is set");
            request = request.message_attributes(name, value);
        }
        if self.queue_url.ends_with(".fifo") {
            request =
                request.message_group_id(sqs_id(&letter.group_id)).message_deduplication_id(sqs_id(&letter.dedup_id));
        }
        request.send().await.map(drop).map_err(|e| QueueError::call("SendMessage", e))
    }
}

/// Dead letters kept in memory (`replay`, `serve`, tests).
#[derive(Debug, Default)]
pub struct MemoryDeadLetter {
    letters: Mutex<Vec<DeadLetterMessage>>,
}

impl MemoryDeadLetter {
    pub fn new() -> MemoryDeadLetter {
        MemoryDeadLetter::default()
    }

    /// Every letter kept, in order.
    pub fn letters(&self) -> Vec<DeadLetterMessage> {
        self.letters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl DeadLetter for MemoryDeadLetter {
    async fn send(&self, letter: &DeadLetterMessage) -> Result<(), QueueError> {
        // A push cannot be left half done, so a poisoned list is still whole.
        self.letters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(letter.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MAX_MESSAGE_BYTES;

    #[test]
    fn the_largest_body_the_events_queue_takes_fits_a_dead_letter_with_the_longest_reason() {
        let reason = Reason {
            error_code: "c".repeat(10_000),
            error_message: "é".repeat(10_000),
            http_status: Some(400),
            intercom_request_id: Some("r".repeat(10_000)),
            attempts: 4,
        };
        let letter = DeadLetterMessage {
            body: "x".repeat(MAX_MESSAGE_BYTES),
            group_id: "u".into(),
            dedup_id: "m".into(),
            receive_count: 1000,
            event_type: Some("track".into()),
            event_name: Some("n".repeat(10_000)),
            reason,
        };
        assert!(letter.bytes() > MAX_MESSAGE_BYTES, "with its reason it is over the events queue's limit");
        assert!(letter.bytes() <= MAX_DEAD_LETTER_BYTES, "{} bytes", letter.bytes());
    }
}
