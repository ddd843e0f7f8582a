//! The deployed events queue a command sends to: named by URL or by stack, and looked at before anything is read.

use intercom_relay::aws::queue::probe;
use intercom_relay::aws::stack::{EVENTS_QUEUE_OUTPUT, StackError, events_queue_url};
use intercom_relay::local::LocalError;
use intercom_relay_lambda::aws::Caller;
use intercom_relay_lambda::queue::{ENQUEUE_RETRY, ENQUEUE_TIMEOUT, SqsQueue};

use super::output::note;

/// The queue of `--to-queue URL` / `--queue-url URL`, or of `--stack NAME` (its EventsQueueUrl output), if either.
pub(crate) async fn queue_of(url: Option<String>, stack: Option<&str>) -> Result<Option<String>, LocalError> {
    let Some(stack) = stack.filter(|_| url.is_none()) else { return Ok(url) };
    let aws = intercom_relay_lambda::aws::load(Caller::Cli).await;
    match events_queue_url(&aws, stack).await {
        Ok(url) => {
            note(&format!("the stack {stack}'s {EVENTS_QUEUE_OUTPUT}: {url}"));
            Ok(Some(url))
        }
        Err(e @ (StackError::Unreachable { .. } | StackError::Malformed { .. })) => Err(LocalError::Io(e.to_string())),
        Err(e) => Err(LocalError::Usage(e.to_string())),
    }
}

/// The events queue at `url`, checked before anything is read: it exists and these credentials reach it.
pub(crate) async fn events_queue(url: &str) -> Result<SqsQueue, LocalError> {
    let aws = intercom_relay_lambda::aws::load(Caller::Cli).await;
    let client = aws_sdk_sqs::Client::new(&aws);
    let facts = probe(&client, url).await.map_err(|e| LocalError::Usage(e.to_string()))?;
    if !facts.fifo {
        note(&format!(
            "warning: {url} is not a FIFO queue: a person's events may be forwarded out of order, and an event sent \
             twice is not dropped. The stack's EventsQueueUrl is FIFO."
        ));
    }
    Ok(SqsQueue::new(client, url, ENQUEUE_RETRY, ENQUEUE_TIMEOUT))
}
