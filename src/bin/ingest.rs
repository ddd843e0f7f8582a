//! The ingest Lambda: Segment's HTTP Tracking API behind a function URL, events into SQS.

use std::convert::Infallible;

use intercom_relay::config::IngestConfig;
use intercom_relay::ingest::Ingest;
use intercom_relay::queue::SqsQueue;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = IngestConfig::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &config.queue_url, config.enqueue_retry);
    let ingest = Ingest::new(config.options(), queue);
    let ingest = &ingest;
    lambda_http::run(service_fn(
        move |request: Request| async move { Ok::<_, Infallible>(ingest.handle(request).await) },
    ))
    .await
}
