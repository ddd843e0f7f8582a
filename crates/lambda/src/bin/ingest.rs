//! The ingest Lambda: Segment's HTTP Tracking API behind a function URL, events into SQS.

use std::convert::Infallible;

use intercom_relay_lambda::aws::Caller;
use intercom_relay_lambda::config::IngestConfig;
use intercom_relay_lambda::ingest::{Base64Guard, Ingest};
use intercom_relay_lambda::queue::SqsQueue;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    intercom_relay_lambda::logging::init();
    let config = IngestConfig::from_env().unwrap_or_else(|error| {
        tracing::error!(%error, "The ingest function cannot start.");
        std::process::exit(1)
    });
    let aws = intercom_relay_lambda::aws::load(Caller::Ingest).await;
    let queue =
        SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &config.queue_url, config.enqueue_retry, config.enqueue_timeout);
    let ingest = Ingest::new(config.options(), queue);
    let ingest = &ingest;
    let handler = service_fn(move |request: Request| async move { Ok::<_, Infallible>(ingest.handle(request).await) });
    // lambda_http::run, with bodies marked base64 checked before lambda_http decodes them.
    lambda_http::lambda_runtime::run(Base64Guard(lambda_http::Adapter::from(handler))).await
}
