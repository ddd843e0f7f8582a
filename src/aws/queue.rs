//! The one look the tooling takes at an SQS queue before using it (`backfill --to-queue`, `erase --queue-url`,
//! `serve` with `QUEUE_URL`): that these credentials reach it, whether it is FIFO, and its visibility timeout.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

/// What [`probe`] learnt of a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFacts {
    pub fifo: bool,
    /// How long a received message stays hidden: SQS's default (30 s) when the queue does not say.
    pub(crate) visibility_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot reach the queue {url}: {detail}")]
pub struct ProbeError {
    url: String,
    detail: String,
}

/// One `GetQueueAttributes` call.
pub async fn probe(client: &aws_sdk_sqs::Client, url: &str) -> Result<QueueFacts, ProbeError> {
    let answer = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::FifoQueue)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .map_err(|e| ProbeError { url: url.to_owned(), detail: intercom_relay_lambda::aws::one_line(&e) })?;
    let attribute = |name: &QueueAttributeName| answer.attributes().and_then(|a| a.get(name)).map(String::as_str);
    let seconds = attribute(&QueueAttributeName::VisibilityTimeout).and_then(|s| s.parse().ok()).unwrap_or(30);
    Ok(QueueFacts {
        fifo: attribute(&QueueAttributeName::FifoQueue) == Some("true"),
        visibility_timeout: Duration::from_secs(seconds),
    })
}
