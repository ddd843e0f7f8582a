//! The ingest Lambda: Segment's HTTP Tracking API behind a function URL, events into SQS.

use std::convert::Infallible;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use intercom_relay::config::IngestConfig;
use intercom_relay::ingest::{Base64Guard, Ingest};
use intercom_relay::queue::SqsQueue;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    intercom_relay::logging::init();
    let config = IngestConfig::from_env().unwrap_or_else(|error| {
        tracing::error!(%error, "The ingest function cannot start.");
        std::process::exit(1)
    });
    // Short SDK timeouts leave room for our own retries within the function's timeout.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(3))
        .build();
    let aws = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).load().await;
    let queue =
        SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &config.queue_url, config.enqueue_retry, config.enqueue_timeout);
    let ingest = Ingest::new(config.options(), queue);
    let ingest = &ingest;
    let handler = service_fn(move |request: Request| async move { Ok::<_, Infallible>(ingest.handle(request).await) });
    // lambda_http::run, with bodies marked base64 checked before lambda_http decodes them.
    lambda_http::lambda_runtime::run(Base64Guard(lambda_http::Adapter::from(handler))).await
}
