//! Lambda payloads made from generated events: an SQS event of envelopes for the forward function, a function-URL
//! request for the ingest function.

// Each user (the benches, the integration tests) uses part of it.
#![allow(dead_code)]

use intercom_relay::local::{GenerateOptions, generate};
use intercom_relay_lambda::envelope::KeyKind;
use intercom_relay_lambda::event::{parse_batch, parse_single};
use intercom_relay_lambda::ingest::accept_events;
use intercom_relay_lambda::queue::{APPROXIMATE_RECEIVE_COUNT, MESSAGE_GROUP_ID, SqsEvent, sqs_event_of, sqs_record};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// `events` events from `users` people (`intercom-relay generate`'s mix), one NDJSON line each.
pub(crate) fn generated(events: usize, users: usize, seed: u64) -> Vec<String> {
    let options = GenerateOptions { events, users, seed, start: OffsetDateTime::now_utc(), days: 1 };
    let mut ndjson = Vec::new();
    generate(&options, &mut ndjson).expect("generated");
    String::from_utf8(ndjson).expect("UTF-8").lines().map(str::to_owned).collect()
}

/// The events of `lines`, validated and enveloped as the ingest function queues them, as Lambda's SQS event source
/// hands them to the forward function (`tag` keeps SQS message ids apart across batches).
pub(crate) fn sqs_event(lines: &[String], tag: &str) -> SqsEvent {
    let records = lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let body = parse_single(line).expect("an event");
            let (mut messages, _) =
                accept_events(&body, None, OffsetDateTime::now_utc(), KeyKind::Server).expect("valid");
            let message = messages.pop().expect("one event");
            let mut record = sqs_record(&format!("sqs-{tag}-{index}"), Some(message.body));
            record.attributes = std::collections::HashMap::from([
                (APPROXIMATE_RECEIVE_COUNT.to_owned(), "1".to_owned()),
                (MESSAGE_GROUP_ID.to_owned(), message.ordering_key),
                ("MessageDeduplicationId".to_owned(), message.message_id),
            ]);
            record
        })
        .collect();
    sqs_event_of(records)
}

/// A function-URL request posting `lines` to `/v1/batch` with `write_key`, as Lambda hands it to the ingest function.
pub(crate) fn batch_request(lines: &[String], write_key: &str) -> Value {
    let events: Vec<Value> = lines.iter().map(|line| serde_json::from_str(line).expect("JSON")).collect();
    let body = json!({ "batch": events }).to_string();
    assert!(parse_batch(&body).is_ok(), "a valid batch body");
    let authorization = format!("Basic {}", base64_key(write_key));
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/batch",
        "rawQueryString": "",
        "headers": {
            "host": "abc123.lambda-url.us-east-1.on.aws",
            "content-type": "application/json",
            "user-agent": "analytics-node/2.3.0",
            "x-forwarded-proto": "https",
            "authorization": authorization,
        },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": "/v1/batch",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "analytics-node/2.3.0"
            },
            "requestId": "req-bench",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/May/2024:12:00:00 +0000",
            "timeEpoch": 1714564800000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// Basic auth as Segment's SDKs send it: the write key as the user name, no password.
fn base64_key(write_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
}
