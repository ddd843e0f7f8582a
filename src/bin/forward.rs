//! The forward Lambda: SQS batches of events carried out against Intercom; failures handed back or dead-lettered.

use std::convert::Infallible;
use std::num::NonZeroUsize;

use aws_config::BehaviorVersion;
use intercom_relay::config::ForwardConfig;
use intercom_relay::forward::{Executor, Forwarder, SqsDeadLetter, SqsEvent, deadline_from_epoch_ms};
use intercom_relay::intercom::IntercomClient;
use lambda_runtime::{Error, LambdaEvent, service_fn};

/// Contacts and companies remembered across invocations of one warm function.
const CACHE_SIZE: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

#[tokio::main]
async fn main() -> Result<(), Error> {
    intercom_relay::logging::init();
    let config = ForwardConfig::from_env().unwrap_or_else(|error| {
        tracing::error!(%error, "The forward function cannot start.");
        std::process::exit(1)
    });
    let client =
        IntercomClient::new(&config.base_url, config.access_token.clone(), &config.api_version, config.timeout)?;
    let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let dead_letter = SqsDeadLetter::new(
        aws_sdk_sqs::Client::new(&aws),
        config.dlq_url.as_deref().expect("from_env requires DLQ_URL"),
    );
    let executor = Executor::new(client, config.create_attributes, CACHE_SIZE);
    let forwarder = Forwarder::new(executor, dead_letter, config.options()).with_settings(config.settings.clone());
    let (forwarder, timeout) = (&forwarder, config.function_timeout);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline_from_epoch_ms(event.context.deadline, timeout);
        Ok::<_, Infallible>(forwarder.handle(&event.payload, deadline).await.response())
    }))
    .await
}
