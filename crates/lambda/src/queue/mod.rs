//! The queues and everything that speaks SQS: the `Enqueue` trait with SQS and in-memory implementations, the
//! dead-letter queue, Lambda's SQS event (`aws_lambda_events`') and its stand-in poller, and the waits of records
//! handed back.

mod dead_letter;
mod error;
mod memory;
mod poll;
mod sqs;
mod sqs_event;

use std::future::Future;

pub use dead_letter::{DeadLetter, DeadLetterMessage, MAX_DEAD_LETTER_BYTES, MemoryDeadLetter, Reason, SqsDeadLetter};
pub use error::QueueError;
pub use memory::epoch_ms;
pub use memory::{MemoryQueue, ReceivedMessage};
pub use poll::{SqsHandBack, SqsPoller, queue_url_of_arn};
pub use sqs::{ENQUEUE_RETRY, ENQUEUE_TIMEOUT, MAX_MESSAGE_BYTES, SqsQueue, Unconfirmed, sqs_id};
pub(crate) use sqs::{MAX_ATTRIBUTE_CHARS, sqs_text};
pub use sqs_event::{
    APPROXIMATE_FIRST_RECEIVE_TIMESTAMP, APPROXIMATE_RECEIVE_COUNT, BatchItemFailure, MESSAGE_GROUP_ID,
    MessageAttribute, SENT_TIMESTAMP, SqsBatchResponse, SqsEvent, SqsRecord, SqsRecordExt, batch_response,
    sqs_event_of, sqs_record, string_attribute,
};

use crate::envelope::Envelope;
use crate::event::EventType;

/// One event, ready for the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub message_id: String,
    /// Keeps one person's events in order: a FIFO queue's message group.
    pub ordering_key: String,
    pub event_type: EventType,
    /// The track event's name, carried as a message attribute.
    pub event_name: Option<String>,
    /// The envelope as JSON.
    pub body: String,
}

impl QueuedMessage {
    /// The message for `envelope`.
    pub fn new(envelope: Envelope) -> QueuedMessage {
        let body = envelope.to_body();
        let ordering_key = envelope.event.ordering_key().to_owned();
        let event = envelope.event;
        QueuedMessage {
            message_id: event.message_id,
            ordering_key,
            event_type: event.kind,
            event_name: event.event,
            body,
        }
    }

    /// What SQS counts toward its size limit: the body and each attribute's name, data type and value.
    pub(crate) fn bytes(&self) -> usize {
        let attribute = |name: &str, value: &str| name.len() + "String".len() + value.len();
        self.body.len()
            + attribute("event_type", self.event_type.as_str())
            + self.event_name.as_deref().map_or(0, |name| attribute("event_name", &sqs_text(name, MAX_ATTRIBUTE_CHARS)))
    }
}

/// Why some accepted events could not be enqueued.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} events could not be enqueued: {reason}")]
pub struct EnqueueError {
    pub(crate) failed: usize,
    pub(crate) total: usize,
    pub(crate) reason: String,
}

/// A queue that takes every message it is given, or says it could not.
pub trait Enqueue: Send + Sync {
    /// Enqueues `messages`, retrying what can be retried; `Err` when any of them is not safely in the queue.
    fn enqueue(&self, messages: Vec<QueuedMessage>) -> impl Future<Output = Result<(), EnqueueError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_counts_its_attributes_as_sqs_does_the_event_name_as_sent() {
        let mut message = QueuedMessage {
            message_id: "m".into(),
            ordering_key: "u".into(),
            event_type: EventType::Track,
            event_name: None,
            body: "x".repeat(100),
        };
        // "event_type" + "String" + "track".
        assert_eq!(message.bytes(), 100 + 10 + 6 + 5);
        message.event_name = Some("é".repeat(1000));
        // "event_name" + "String" + the name as sent: cut to 256 characters, 2 bytes each.
        assert_eq!(message.bytes(), 100 + 10 + 6 + 5 + 10 + 6 + 512);
    }
}
