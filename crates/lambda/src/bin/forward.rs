//! The forward Lambda: SQS batches of events carried out against Intercom; failures handed back or dead-lettered.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use intercom_relay_lambda::aws::{Caller, DynamoIdentities, DynamoSuppression};
use intercom_relay_lambda::config::ForwardFunctionConfig;
use intercom_relay_lambda::forward::{Executor, Forwarder, deadline_from_epoch_ms};
use intercom_relay_lambda::intercom::IntercomClient;
use intercom_relay_lambda::queue::{SqsDeadLetter, SqsEvent, SqsHandBack};
use lambda_runtime::{Error, LambdaEvent, service_fn};

/// Contacts and companies remembered across invocations of one warm function.
const CACHE_SIZE: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

#[tokio::main]
async fn main() -> Result<(), Error> {
    intercom_relay_lambda::logging::init();
    let ForwardFunctionConfig { dlq_url, forward: config } =
        ForwardFunctionConfig::from_env().unwrap_or_else(|error| {
            tracing::error!(%error, "The forward function cannot start.");
            std::process::exit(1)
        });
    let client =
        IntercomClient::new(&config.base_url, config.access_token.clone(), config.api_version, config.timeout)?;
    let aws = intercom_relay_lambda::aws::load(Caller::Forward).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dead_letter = SqsDeadLetter::new(sqs.clone(), &dlq_url);
    // The event source leaves a record handed back invisible for the queue's visibility timeout; its own wait is set here.
    let hand_back = SqsHandBack::new(sqs, config.queue_url.clone());
    let executor = match &config.identity_table {
        // Its calls are made within the invocation, and a slow one only costs the store's help: short tries.
        Some(table) => {
            let store = DynamoIdentities::new(&aws, table, Duration::from_secs(1)).unwrap_or_else(|error| {
                tracing::error!(%error, "The forward function cannot start.");
                std::process::exit(1)
            });
            Executor::new(client, config.create_attributes, CACHE_SIZE).with_identities(Arc::new(store))
        }
        None => Executor::new(client, config.create_attributes, CACHE_SIZE),
    };
    let forwarder = Forwarder::new(executor, dead_letter, config.options()).with_settings(config.settings.clone());
    let forwarder = match &config.suppression_table {
        // Its calls are made before a batch's Intercom calls and within the invocation: short tries.
        Some(table) => {
            let table = DynamoSuppression::new(&aws, table, Duration::from_secs(2)).unwrap_or_else(|error| {
                tracing::error!(%error, "The forward function cannot start.");
                std::process::exit(1)
            });
            forwarder.with_suppression(Arc::new(table))
        }
        None => forwarder,
    };
    let (forwarder, hand_back, timeout) = (&forwarder, &hand_back, config.function_timeout);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline_from_epoch_ms(event.context.deadline, timeout);
        let report = forwarder.handle(&event.payload, deadline).await;
        // Done before the deadline whatever SQS does, so that the answer (what to delete) is given in time; a wait not
        // set means the record comes back after the queue's visibility timeout instead: later than meant, not lost.
        let until = deadline.checked_sub(Duration::from_millis(200)).unwrap_or(deadline);
        match tokio::time::timeout_at(until, hand_back.hand_back(&event.payload, &report.handed_back())).await {
            Ok(Ok(())) => {}
            Ok(Err(problem)) => tracing::warn!(%problem, "The waits of the records handed back could not be set."),
            Err(_) => tracing::warn!("Setting the waits of the records handed back took too long; left as they are."),
        }
        Ok::<_, Infallible>(report.response())
    }))
    .await
}
