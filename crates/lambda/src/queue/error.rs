//! Why a call to SQS did not do what was asked.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// A failed SQS call, with the SDK's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The call got no answer, or SQS refused it as a whole.
    #[error("SQS {operation} failed: {message}")]
    Call {
        operation: &'static str,
        /// The SDK's error with its whole chain of causes.
        message: String,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// SQS answered, but did not take some entries of a batch.
    #[error("SQS did not take {failed} entries of {operation}, the first: {code} {message}")]
    Entries { operation: &'static str, failed: usize, code: String, message: String, sender_fault: bool },
}

impl QueueError {
    /// The error of an SDK call.
    pub(crate) fn call<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let retryable = match &error {
            // The request could not even be built: sending it again builds it the same way.
            SdkError::ConstructionFailure(_) => false,
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or_default();
                status >= 500 || status == 429 || code.contains("Throttl") || code.contains("RequestThrottled")
            }
            _ => true,
        };
        QueueError::Call {
            operation,
            message: DisplayErrorContext(&error).to_string(),
            retryable,
            source: Box::new(error),
        }
    }

    /// Whether trying again can help (no answer, throttling, SQS's own failures); a request SQS refuses as wrong, or
    /// entries refused for the sender's fault, fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Call { retryable, .. } => *retryable,
            QueueError::Entries { sender_fault, .. } => !sender_fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_entries_are_retryable_only_when_sqs_is_at_fault() {
        let entries = |sender_fault| QueueError::Entries {
            operation: "DeleteMessageBatch",
            failed: 2,
            code: "ReceiptHandleIsInvalid".into(),
            message: String::new(),
            sender_fault,
        };
        assert!(!entries(true).is_retryable());
        assert!(entries(false).is_retryable());
        assert_eq!(
            entries(true).to_string(),
            "SQS did not take 2 entries of DeleteMessageBatch, the first: ReceiptHandleIsInvalid "
        );
    }
}
