//! The forwarder: an SQS batch decoded, mapped and carried out against Intercom in per-person order, every record ending
//! delivered, skipped, handed back to SQS, or dead-lettered with the reason.

mod batch;
mod dead_letter;
mod execute;
mod poll;
mod sqs_event;

pub use batch::{BatchReport, ForwardOptions, Forwarder, Outcome, RecordOutcome, current_record};
pub use dead_letter::{DeadLetter, DeadLetterMessage, MemoryDeadLetter, Reason, SqsDeadLetter};
pub use execute::{ALIAS_PREVIOUS_UNKNOWN, Delivery, Executor, Failed, Patience};
pub use poll::SqsPoller;
pub use sqs_event::{BatchItemFailure, MessageAttribute, RecordAttributes, SqsBatchResponse, SqsEvent, SqsRecord};

/// How long until `deadline_ms` (Unix milliseconds, as Lambda's context gives it), as an instant on tokio's clock.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    tokio::time::Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
