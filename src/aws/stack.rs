//! The deployed stack's events queue, read from the stack's outputs: `replay --stack` and `erase --stack`. One
//! CloudFormation call, `DescribeStacks`, with `aws-sdk-cloudformation` (what it costs the build and the CLI binary:
//! BENCHMARKS.md).

use aws_sdk_cloudformation::config::ProvideCredentials;
use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::operation::describe_stacks::{DescribeStacksError, DescribeStacksOutput};

/// The template's output that names the events queue.
pub const EVENTS_QUEUE_OUTPUT: &str = "EventsQueueUrl";

/// Why the stack's events queue could not be found.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("no AWS region to find the stack in: set AWS_REGION (or the profile's region) to the stack's region")]
    NoRegion,
    #[error("no AWS credentials to read the stack with: {}", intercom_relay_lambda::aws::one_line(.0.as_ref()))]
    Credentials(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "no stack named {stack} in {region}: CloudFormation answered \"{message}\" (is AWS_REGION the stack's region?)"
    )]
    NotFound { stack: String, region: String, message: String },
    #[error(
        "the stack {stack} in {region} has no {EVENTS_QUEUE_OUTPUT} output (its status: {status}; its outputs: {outputs}): \
         is it an intercom-relay stack, and is its deployment done?"
    )]
    NoOutput { stack: String, region: String, status: String, outputs: String },
    #[error("CloudFormation refused DescribeStacks for {stack} in {region}: HTTP {status} {code}: {message}{hint}")]
    Refused { stack: String, region: String, status: u16, code: String, message: String, hint: &'static str },
    #[error(
        "the stack {stack} is in {theirs}, and AWS_REGION is {ours}: set AWS_REGION={theirs}, where its queue is too"
    )]
    OtherRegion { stack: String, theirs: String, ours: String },
    #[error("cannot reach CloudFormation at {endpoint}: {}", intercom_relay_lambda::aws::one_line(.source))]
    Unreachable { endpoint: String, source: SdkError<DescribeStacksError> },
    #[error("CloudFormation's answer from {endpoint} could not be read: {}", intercom_relay_lambda::aws::one_line(.source))]
    Malformed { endpoint: String, source: SdkError<DescribeStacksError> },
}

/// What `DescribeStacks` says of the one stack it was asked for.
#[derive(Debug, PartialEq, Eq)]
struct Described {
    status: String,
    outputs: Vec<(String, String)>,
}

/// The `EventsQueueUrl` output of the stack named `stack` (or its ARN), with the credentials and region of `aws`.
pub async fn events_queue_url(aws: &aws_config::SdkConfig, stack: &str) -> Result<String, StackError> {
    let region = aws.region().map(|r| r.as_ref().to_owned()).ok_or(StackError::NoRegion)?;
    // A stack's ARN names its region (arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/ID); the queue is there too,
    // and the SQS client sends to AWS_REGION's endpoint.
    if let Some(theirs) = stack.strip_prefix("arn:").and_then(|arn| arn.split(':').nth(2))
        && !theirs.is_empty()
        && theirs != region
    {
        return Err(StackError::OtherRegion { stack: stack.to_owned(), theirs: theirs.to_owned(), ours: region });
    }
    // Asked first, so that missing credentials are said as such rather than as a call that failed.
    let provider = aws.credentials_provider().ok_or_else(|| StackError::Credentials("none is configured".into()))?;
    provider.provide_credentials().await.map_err(|e| StackError::Credentials(e.into()))?;
    let client = aws_sdk_cloudformation::Client::new(aws);
    let answer = client.describe_stacks().stack_name(stack).send().await;
    let described = answer.map(|output| described(&output)).map_err(|error| refused(aws, stack, &region, error))?;
    let Some(described) = described else {
        // An answer that lists no stack is not one CloudFormation gives for a name it knows.
        let message = "the answer lists no stack".to_owned();
        return Err(StackError::NotFound { stack: stack.to_owned(), region, message });
    };
    match described.outputs.iter().find(|(key, _)| key == EVENTS_QUEUE_OUTPUT) {
        Some((_, url)) if !url.is_empty() => Ok(url.clone()),
        _ => {
            let keys: Vec<&str> = described.outputs.iter().map(|(key, _)| key.as_str()).collect();
            let outputs = if keys.is_empty() { "none".to_owned() } else { keys.join(", ") };
            Err(StackError::NoOutput { stack: stack.to_owned(), region, status: described.status, outputs })
        }
    }
}

/// The status and outputs of the first stack of the answer.
fn described(output: &DescribeStacksOutput) -> Option<Described> {
    let stack = output.stacks().first()?;
    let status = stack.stack_status().map_or("unknown", |s| s.as_str()).to_owned();
    let outputs = stack
        .outputs()
        .iter()
        .map(|o| (o.output_key().unwrap_or_default().to_owned(), o.output_value().unwrap_or_default().to_owned()));
    Some(Described { status, outputs: outputs.collect() })
}

/// What a failed `DescribeStacks` means for the operator.
fn refused(aws: &aws_config::SdkConfig, stack: &str, region: &str, error: SdkError<DescribeStacksError>) -> StackError {
    let endpoint = || {
        intercom_relay_lambda::aws::endpoint(
            &|name| std::env::var(name).ok(),
            aws.endpoint_url(),
            "cloudformation",
            region,
        )
    };
    let SdkError::ServiceError(service) = &error else {
        return match error {
            SdkError::ResponseError(_) => StackError::Malformed { endpoint: endpoint(), source: error },
            _ => StackError::Unreachable { endpoint: endpoint(), source: error },
        };
    };
    let status = service.raw().status().as_u16();
    let code = service.err().code().unwrap_or_default().to_owned();
    let message = service.err().message().unwrap_or_default().to_owned();
    refusal(stack, region, status, code, message)
}

/// A refusal with CloudFormation's code and message.
fn refusal(stack: &str, region: &str, status: u16, code: String, message: String) -> StackError {
    let (stack, region) = (stack.to_owned(), region.to_owned());
    if code == "ValidationError" && message.contains("does not exist") {
        return StackError::NotFound { stack, region, message };
    }
    let hint = match (status, code.as_str()) {
        (403, "AccessDenied" | "AccessDeniedException") => {
            " (the credentials need cloudformation:DescribeStacks on the stack; or pass --queue-url)"
        }
        (403, _) => " (are the credentials valid, and the clock right?)",
        _ => "",
    };
    StackError::Refused { stack, region, status, code, message, hint }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudformation::types::{Output, Stack, StackStatus};

    #[test]
    fn reads_the_status_and_outputs_of_the_stack() {
        let output = |key: &str, value: &str| Output::builder().output_key(key).output_value(value).build();
        let stack = Stack::builder()
            .stack_name("relay")
            .stack_status(StackStatus::UpdateComplete)
            .outputs(output("IngestUrl", "https://x.lambda-url.eu-west-1.on.aws/"))
            .outputs(output(
                "EventsQueueUrl",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/relay-events.fifo?a=1&b=2",
            ))
            .build();
        let described = described(&DescribeStacksOutput::builder().stacks(stack).build()).unwrap();
        assert_eq!(described.status, "UPDATE_COMPLETE");
        assert_eq!(
            described.outputs,
            [
                ("IngestUrl".to_owned(), "https://x.lambda-url.eu-west-1.on.aws/".to_owned()),
                (
                    "EventsQueueUrl".to_owned(),
                    "https://sqs.eu-west-1.amazonaws.com/123456789012/relay-events.fifo?a=1&b=2".to_owned()
                ),
            ]
        );
        assert_eq!(super::described(&DescribeStacksOutput::builder().build()), None);
    }

    #[test]
    fn a_refusal_says_what_to_do() {
        let missing =
            refusal("nope", "eu-west-1", 400, "ValidationError".into(), "Stack with id nope does not exist".into());
        assert!(matches!(missing, StackError::NotFound { .. }), "{missing}");
        let denied = refusal("relay", "eu-west-1", 403, "AccessDenied".into(), "not authorized".into());
        assert!(
            denied
                .to_string()
                .ends_with("(the credentials need cloudformation:DescribeStacks on the stack; or pass --queue-url)"),
            "{denied}"
        );
        let expired = refusal("relay", "eu-west-1", 403, "ExpiredToken".into(), "expired".into());
        assert!(expired.to_string().contains("HTTP 403 ExpiredToken: expired (are the credentials valid"), "{expired}");
    }
}
