//! What became of each record, as Lambda, the logs and the local pipeline's reports are told.

use std::time::Duration;

use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::intercom::{ContactId, IntercomError};
use crate::queue::{Reason, SqsBatchResponse, batch_response};

/// What became of one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Intercom holds it; with 0 calls, it held it already (an identify or group of what was last written).
    Delivered { calls: usize },
    /// Nothing Intercom can hold (no contact identifier, an alias for unknown contacts…), or the destination settings
    /// said no (`skipped_by` names the rule: `events.deny[2]`); acknowledged.
    Skipped {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped_by: Option<String>,
        calls: usize,
    },
    /// Handed back to SQS, which delivers it again after `retry_in` (its visibility timeout, set per message).
    Retry {
        reason: String,
        calls: usize,
        #[serde(rename = "retry_in_ms", serialize_with = "millis")]
        retry_in: Duration,
    },
    /// In the dead-letter queue with the reason, acknowledged.
    DeadLettered { reason: Reason, calls: usize },
    /// An erasure request carried out: Intercom's ids of the contacts deleted (none when nobody was found), and what
    /// else there is to know.
    Erased { contacts: Vec<ContactId>, notes: Vec<String>, calls: usize },
}

impl Outcome {
    /// Intercom calls spent on the record in this invocation.
    pub fn calls(&self) -> usize {
        match self {
            Outcome::Delivered { calls }
            | Outcome::Skipped { calls, .. }
            | Outcome::Retry { calls, .. }
            | Outcome::DeadLettered { calls, .. }
            | Outcome::Erased { calls, .. } => *calls,
        }
    }
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_millis() as u64)
}

/// One record's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordOutcome {
    /// SQS's message id.
    pub sqs_message_id: String,
    /// The event's `messageId`, when the body could be read.
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Every record's outcome, in the order of the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    pub records: Vec<RecordOutcome>,
}

impl BatchReport {
    /// The answer for Lambda: the records SQS must hand out again.
    pub fn response(&self) -> SqsBatchResponse {
        let failures = self.records.iter().filter(|r| matches!(r.outcome, Outcome::Retry { .. }));
        batch_response(failures.map(|r| r.sqs_message_id.clone()))
    }

    /// The records handed back, each with its wait (SQS message id, wait): what `ChangeMessageVisibility` is told.
    pub fn handed_back(&self) -> Vec<(String, Duration)> {
        let waits = self.records.iter().filter_map(|r| match r.outcome {
            Outcome::Retry { retry_in, .. } => Some((r.sqs_message_id.clone(), retry_in)),
            _ => None,
        });
        waits.collect()
    }

    /// Intercom calls spent on the whole batch.
    pub fn calls(&self) -> usize {
        self.records.iter().map(|r| r.outcome.calls()).sum()
    }
}

/// The dead-letter reason for an Intercom failure.
pub(super) fn reason_of(error: &IntercomError, attempts: u32) -> Reason {
    let (code, message, request_id) = match error {
        // The message as shown: without the values Intercom quotes, which may be the event's personal data.
        IntercomError::Api { code, redacted, request_id, .. } => (code.clone(), redacted.clone(), request_id.clone()),
        IntercomError::Transport(message) => ("transport".into(), message.clone(), None),
        IntercomError::Unexpected(message) => ("unexpected_answer".into(), message.clone(), None),
        IntercomError::Withheld(message) => ("intercom_failing".into(), message.clone(), None),
    };
    let message = if message.is_empty() { error.to_string() } else { message };
    Reason {
        error_code: code,
        error_message: message,
        http_status: error.status(),
        intercom_request_id: request_id,
        attempts,
    }
}

/// One line per record; nothing personal (no user ids, emails or traits), only ids and reasons. `quiet` records
/// (held back with the rest while Intercom fails, which the breaker reports once) are logged at DEBUG.
pub(super) fn log(record: &RecordOutcome, quiet: bool) {
    let (sqs_message_id, message_id, event_type) = (
        &record.sqs_message_id,
        record.message_id.as_deref().unwrap_or("-"),
        record.event_type.as_deref().unwrap_or("-"),
    );
    match &record.outcome {
        Outcome::Delivered { calls: 0 } => {
            info!(
                sqs_message_id,
                message_id,
                event_type,
                calls = 0,
                "Delivered: Intercom holds it already, no call needed."
            )
        }
        Outcome::Delivered { calls } => info!(sqs_message_id, message_id, event_type, calls, "Delivered."),
        // Its own line ("Erased.") is logged where it is carried out.
        Outcome::Erased { calls, .. } => debug!(sqs_message_id, message_id, calls, "Erasure done."),
        Outcome::Skipped { reason, skipped_by, calls } => {
            let skipped_by = skipped_by.as_deref();
            info!(sqs_message_id, message_id, event_type, calls, reason, skipped_by, "Skipped.")
        }
        Outcome::Retry { reason, calls, retry_in } => {
            let retry_in_s = retry_in.as_secs();
            if quiet {
                debug!(sqs_message_id, message_id, event_type, calls, reason, retry_in_s, "Handed back to SQS.")
            } else {
                warn!(sqs_message_id, message_id, event_type, calls, reason, retry_in_s, "Handed back to SQS.")
            }
        }
        Outcome::DeadLettered { reason, calls } => error!(
            sqs_message_id,
            message_id,
            event_type,
            calls,
            error_code = reason.error_code,
            http_status = reason.http_status,
            error_message = reason.error_message,
            "Dead-lettered."
        ),
    }
}
