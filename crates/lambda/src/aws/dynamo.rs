//! The DynamoDB client, built from the process's SDK configuration for one table's calls: shared by every store kept
//! in DynamoDB (the suppression list now), each with its own time for a try.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
pub(crate) use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Tries per call, and the waits between them: a table's calls are made within an invocation, before its other work.
pub(crate) fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_millis(400))
}

/// A client on `aws`'s credentials, region, endpoint and HTTPS client, each try of a call taking at most `attempt`
/// (connecting at most a second of it).
pub(crate) fn client(aws: &SdkConfig, attempt: Duration) -> aws_sdk_dynamodb::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(attempt.min(Duration::from_secs(1)))
        .operation_attempt_timeout(attempt)
        .build();
    let config = aws_sdk_dynamodb::config::Builder::from(aws).timeout_config(timeouts).retry_config(retries()).build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// What a failed call says: its one-line message (without a hint) and whether trying again may help.
pub(crate) struct Failure {
    /// The error code DynamoDB answered, if it answered one.
    pub(crate) code: Option<String>,
    pub(crate) message: String,
    pub(crate) retryable: bool,
}

impl Failure {
    /// The message, with what the operator has to fix where it is theirs: the table `variable` names, or the role's
    /// `actions` on it.
    pub(crate) fn explained(&self, variable: &str, actions: &str) -> String {
        match self.code.as_deref() {
            Some("ResourceNotFoundException") => {
                format!("{} (does {variable} name the stack's table, in this region?)", self.message)
            }
            Some("AccessDeniedException") => format!("{} (the function's role needs {actions} on it)", self.message),
            _ => self.message.clone(),
        }
    }
}

/// Reads a failed call: DynamoDB's error code and message, or what kept the call from an answer. Throttling and its
/// own failures may pass, as may no answer; a request it refuses does not:
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html>.
pub(crate) fn failure<E>(operation: &str, error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let (code, message) = (service.err().code().unwrap_or(""), service.err().message().unwrap_or(""));
            let (message, retryable) = answered(operation, status, code, message);
            Failure { code: Some(code.to_owned()).filter(|c| !c.is_empty()), message, retryable }
        }
        SdkError::ConstructionFailure(_) => {
            Failure { code: None, message: format!("{operation}: {}", super::one_line(error)), retryable: false }
        }
        // No answer in time, none at all, or one that could not be read: may pass.
        _ => Failure { code: None, message: format!("{operation}: {}", super::one_line(error)), retryable: true },
    }
}

/// An answer with DynamoDB's error `code`: the message, and whether trying again may help.
pub(crate) fn answered(operation: &str, status: u16, code: &str, message: &str) -> (String, bool) {
    let retryable = status >= 500
        || matches!(
            code,
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "LimitExceededException"
        );
    (format!("{operation}: HTTP {status} {code}: {message}"), retryable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamodbs_errors_are_read_and_only_those_that_may_pass_are_tried_again() {
        let (message, retryable) =
            answered("BatchGetItem", 400, "ProvisionedThroughputExceededException", "Rate of requests exceeds");
        assert!(retryable);
        assert_eq!(message, "BatchGetItem: HTTP 400 ProvisionedThroughputExceededException: Rate of requests exceeds");
        let (message, retryable) =
            answered("BatchGetItem", 400, "ResourceNotFoundException", "Requested resource not found");
        assert!(!retryable);
        assert!(message.contains("ResourceNotFoundException: Requested resource not found"));
        let (_, retryable) = answered("PutItem", 400, "AccessDeniedException", "User is not authorized");
        assert!(!retryable);
        let (_, retryable) = answered("PutItem", 503, "", "");
        assert!(retryable);
        assert_eq!(retries().max_attempts(), 3);
        assert_eq!(retries().max_backoff(), Duration::from_millis(400));
    }
}
