//! The forwarder: an SQS batch decoded, mapped and carried out against Intercom in per-person order, every record ending
//! delivered, skipped, handed back to SQS, or dead-lettered with the reason.

mod attribute_rules;
mod attributes;
mod batch;
mod body;
mod breaker;
mod companies;
mod contacts;
mod erasure;
mod executor;
mod guard;
mod identities;
mod ids;
mod learned;
mod merges;
mod options;
mod outcome;
mod poison;
mod tags;
mod workspace;
mod write;
mod written;

pub use batch::{Forwarder, current_record};
pub use breaker::{Breaker, BreakerPolicy, Health, Permit, Transition};
pub(crate) use erasure::Erased;
pub use executor::{Delivery, Executor, Failed};
pub use merges::ALIAS_PREVIOUS_UNKNOWN;
pub use options::{ForwardOptions, QUEUE_RETENTION};
pub use outcome::{BatchReport, Outcome, RecordOutcome};
pub use written::WriteMemory;

/// `deadline_ms` (Unix milliseconds, as Lambda's context gives it) as an instant on tokio's clock; `timeout` (the
/// function's, `FUNCTION_TIMEOUT_SECONDS`) from now when it is not a deadline (`cargo lambda watch`'s).
pub fn deadline_from_epoch_ms(deadline_ms: u64, timeout: std::time::Duration) -> tokio::time::Instant {
    let left = crate::deadline::time_left(deadline_ms, "FUNCTION_TIMEOUT_SECONDS");
    tokio::time::Instant::now() + left.unwrap_or(timeout)
}
