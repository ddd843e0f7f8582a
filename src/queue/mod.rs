//! Where accepted events go: the `Enqueue` trait, with SQS and in-memory implementations.

mod memory;
mod sqs;

use std::future::Future;

pub use memory::{MemoryQueue, ReceivedMessage};
pub(crate) use sqs::{MAX_ATTRIBUTE_CHARS, sqs_text};
pub use sqs::{MAX_MESSAGE_BYTES, RetryPolicy, SqsQueue, sqs_id};

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
}

/// Why some accepted events could not be enqueued.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} events could not be enqueued: {reason}")]
pub struct EnqueueError {
    pub failed: usize,
    pub total: usize,
    pub reason: String,
}

/// A queue that takes every message it is given, or says it could not.
pub trait Enqueue: Send + Sync {
    /// Enqueues `messages`, retrying what can be retried; `Err` when any of them is not safely in the queue.
    fn enqueue(&self, messages: Vec<QueuedMessage>) -> impl Future<Output = Result<(), EnqueueError>> + Send;
}
