//! Where events that cannot be delivered go: the dead-letter queue, with the reason as message attributes.

use std::future::Future;
use std::sync::Mutex;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::queue::{MAX_ATTRIBUTE_CHARS, sqs_id, sqs_text};

/// Why an event was dead-lettered; each field becomes a message attribute of the same name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    /// Intercom's error code (`parameter_invalid`…), or ours (`malformed_envelope`, `unreadable_event`, `retries_exhausted`).
    pub error_code: String,
    pub error_message: String,
    /// The HTTP status Intercom answered, when it did.
    pub http_status: Option<u16>,
    pub intercom_request_id: Option<String>,
    /// Tries of the call that failed, in the last invocation.
    pub attempts: u32,
}

impl Reason {
    /// A failure found before any Intercom call (the record itself is the problem).
    pub fn ours(error_code: &str, error_message: String) -> Reason {
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
    pub group_id: String,
    /// The original message's deduplication id (or SQS id): sending it twice keeps one copy.
    pub dedup_id: String,
    /// Times SQS had handed the message out.
    pub receive_count: u32,
    pub event_type: Option<String>,
    pub event_name: Option<String>,
    pub reason: Reason,
}

/// Takes dead letters; [`SqsDeadLetter`] in Lambda, [`MemoryDeadLetter`] locally and in tests.
pub trait DeadLetter: Send + Sync {
    /// Keeps `letter`; an error means it is not safely stored, and the event must be handed back to SQS instead.
    fn send(&self, letter: &DeadLetterMessage) -> impl Future<Output = Result<(), String>> + Send;
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
    async fn send(&self, letter: &DeadLetterMessage) -> Result<(), String> {
        let text = |data_type: &str, value: &str| {
            MessageAttributeValue::builder().data_type(data_type).string_value(value).build().expect("data type is set")
        };
        let reason = &letter.reason;
        let short = |value: &str| text("String", &sqs_text(value, MAX_ATTRIBUTE_CHARS));
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&letter.body)
            .message_attributes("error_code", short(&reason.error_code))
            .message_attributes("error_message", text("String", &sqs_text(&reason.error_message, MAX_ERROR_MESSAGE)))
            .message_attributes("attempts", text("Number", &reason.attempts.to_string()))
            .message_attributes("receive_count", text("Number", &letter.receive_count.to_string()));
        if let Some(status) = reason.http_status {
            request = request.message_attributes("http_status", text("Number", &status.to_string()));
        }
        if let Some(id) = &reason.intercom_request_id {
            request = request.message_attributes("intercom_request_id", short(id));
        }
        for (name, value) in [("event_type", &letter.event_type), ("event_name", &letter.event_name)] {
            if let Some(value) = value {
                request = request.message_attributes(name, short(value));
            }
        }
        if self.queue_url.ends_with(".fifo") {
            request =
                request.message_group_id(sqs_id(&letter.group_id)).message_deduplication_id(sqs_id(&letter.dedup_id));
        }
        request.send().await.map(drop).map_err(|e| format!("{}", DisplayErrorContext(e)))
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
        self.letters.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl DeadLetter for MemoryDeadLetter {
    async fn send(&self, letter: &DeadLetterMessage) -> Result<(), String> {
        self.letters.lock().map_err(|_| "the dead-letter list is poisoned".to_owned())?.push(letter.clone());
        Ok(())
    }
}
