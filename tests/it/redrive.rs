//! A dead letter redriven to the events queue that fails again within SQS's five-minute deduplication window: moto's DLQ.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use intercom_relay::sandbox::{MAX_EVENT_NAMES, SandboxOptions, SandboxServer};
use intercom_relay_lambda::forward::{ForwardOptions, Forwarder, Outcome};
use intercom_relay_lambda::ingest::Ingest;
use intercom_relay_lambda::intercom::{IntercomApi, IntercomClient};
use intercom_relay_lambda::queue::{
    MESSAGE_GROUP_ID, SqsDeadLetter, SqsEvent, SqsPoller, SqsQueue, SqsRecord, SqsRecordExt,
};
use intercom_relay_lambda::retry::RetryPolicy;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::forward_batch::fifo_queue;
use crate::helpers::{forwarder, options, post, send};
use crate::sqs::{FAST_DEADLINE, client, drain, endpoint, fast_retry};

fn quick() -> ForwardOptions {
    ForwardOptions {
        retry: RetryPolicy { min_delay: Duration::from_millis(20), ..ForwardOptions::default().retry },
        call_timeout: Duration::from_secs(2),
        ..ForwardOptions::default()
    }
}

/// The one message `poller` hands over, as Lambda's event source would.
async fn receive_one(poller: &SqsPoller) -> SqsEvent {
    let mut event = SqsEvent::default();
    for _ in 0..5 {
        event = poller.receive(10).await.unwrap();
        if !event.records.is_empty() {
            break;
        }
    }
    assert_eq!(event.records.len(), 1, "{event:?}");
    event
}

/// One invocation that dead-letters its only record, which is then acknowledged (deleted from the events queue).
async fn forward_and_dead_letter(
    forwarder: &Forwarder<IntercomClient, SqsDeadLetter>,
    events: &SqsPoller,
) -> SqsRecord {
    let event = receive_one(events).await;
    let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    assert!(matches!(&report.records[0].outcome, Outcome::DeadLettered { .. }), "{report:?}");
    events.acknowledge(&event, &report.handed_back()).await.unwrap();
    event.records[0].clone()
}

/// What a redrive sends to the source queue for `letter`: its body, message attributes, group id and deduplication id,
/// as a new message ("redriven messages [...] are assigned a new messageID and enqueueTime", as SendMessage does).
async fn redrive(sqs: &aws_sdk_sqs::Client, queue_url: &str, letter: &SqsRecord) {
    let mut request = sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(letter.body.clone().unwrap())
        .set_message_group_id(letter.attributes.get(MESSAGE_GROUP_ID).cloned())
        .set_message_deduplication_id(letter.attributes.get("MessageDeduplicationId").cloned());
    for (name, value) in &letter.message_attributes {
        let value = MessageAttributeValue::builder()
            .set_data_type(value.data_type.clone())
            .set_string_value(value.string_value.clone());
        request = request.message_attributes(name, value.build().unwrap());
    }
    request.send().await.unwrap();
}

#[tokio::test]
async fn a_dead_letter_redriven_and_failing_again_within_the_deduplication_window_is_in_the_dead_letter_queue() {
    let sqs = client(&endpoint());
    let (queue_url, dlq_url) = (fifo_queue(&sqs, 1).await, fifo_queue(&sqs, 30).await);
    // A workspace at its limit of active event names refuses a new one with a 400, however often it is sent.
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let forwarder = forwarder(&sandbox, SqsDeadLetter::new(sqs.clone(), &dlq_url), quick());
    let api = forwarder.executor().api();
    api.call(Method::POST, "/contacts", Some(&json!({"role": "user", "external_id": "u-1"}))).await.unwrap();
    for n in 0..MAX_EVENT_NAMES {
        let event = json!({"event_name": format!("e{n}"), "created_at": 1, "user_id": "u-1"});
        api.call(Method::POST, "/events", Some(&event)).await.unwrap();
    }
    let ingest = Ingest::new(options(), SqsQueue::new(sqs.clone(), &queue_url, fast_retry(), FAST_DEADLINE));
    let batch = json!({"batch": [{"type": "track", "userId": "u-1", "event": "One Too Many", "messageId": "m-121"}]});
    assert_eq!(send(&ingest, post("/v1/batch", &batch.to_string())).await.status.as_u16(), 200);
    let events = SqsPoller::new(sqs.clone(), &queue_url, Duration::from_secs(1));
    let dlq = SqsPoller::new(sqs.clone(), &dlq_url, Duration::from_secs(1));

    let first = forward_and_dead_letter(&forwarder, &events).await;
    // The redrive (StartMessageMoveTask, which moto 5.2.5 does not implement) done as SQS does it: receive the letter,
    // send it to the events queue as a new message, delete it. The delete comes after the copy fails again: moto only
    // deduplicates against messages its queue still holds, where SQS remembers an id for five minutes after a delete,
    // so the letter is kept in flight (as a move task holds its batch) across the moment the DLQ compares the ids.
    let letter = receive_one(&dlq).await;
    redrive(&sqs, &queue_url, &letter.records[0]).await;
    let again = forward_and_dead_letter(&forwarder, &events).await;
    dlq.acknowledge(&letter, &[]).await.unwrap();

    let letters = drain(&sqs, &dlq_url).await;
    assert_eq!(letters.len(), 1, "the second failure is kept, not deduplicated against the first: {letters:?}");
    let envelope: Value = serde_json::from_str(&letters[0].body).unwrap();
    assert_eq!(envelope["event"]["messageId"], "m-121");
    assert_eq!(letters[0].attributes.get("error_code").map(String::as_str), Some("event_name_limit_reached"));
    let ids = (
        letters[0].dedup_id.as_deref(),
        letter.records[0].attributes.get("MessageDeduplicationId").map(String::as_str),
    );
    assert_eq!(ids, (Some(again.id()), Some(first.id())), "each letter's id is its copy's");
    assert!(drain(&sqs, &queue_url).await.is_empty(), "nothing is left in the events queue");
}
