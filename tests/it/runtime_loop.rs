//! Both Lambda binaries under the real `lambda_runtime` loop, fed by the local Runtime API the benches time them with:
//! the forward function carries out an SQS batch against the sandbox, the ingest function queues a function-URL request's
//! events in moto's SQS.

use std::collections::BTreeSet;
use std::time::Duration;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use serde_json::{Value, json};

use crate::forward_batch::fifo_queue;
use crate::payloads::{batch_request, generated, sqs_event};
use crate::runtime_api::{Running, RuntimeApi};
use crate::sqs::{client, drain, endpoint};

const WAIT: Duration = Duration::from_secs(30);

fn user_ids(lines: &[String]) -> BTreeSet<String> {
    let events = lines.iter().map(|line| serde_json::from_str::<Value>(line).unwrap());
    events.filter_map(|event| event["userId"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_forward_binary_carries_out_an_sqs_batch_the_runtime_api_hands_it() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let api = RuntimeApi::start().await.unwrap();
    let lines = generated(10, 5, 7);
    let id = api.invoke(&serde_json::to_value(sqs_event(&lines, "it")).unwrap());
    let mut env = api.env();
    env.push(("INTERCOM_BASE_URL", sandbox.url.clone()));
    env.push(("INTERCOM_ACCESS_TOKEN", sandbox.token()));
    env.push(("DLQ_URL", "http://127.0.0.1:9/000000000000/unused-dlq.fifo".into()));
    let running = Running::spawn(&crate::runtime_api::lambda_binary("forward"), env).unwrap();

    let first_poll = api.first_poll(WAIT).await.expect("the binary polls for an invocation");
    assert!(first_poll > running.started);
    let answer = api.answer_to(&id, WAIT).await.expect("the binary answers the invocation");
    assert_eq!(answer.kind, "response", "{answer:?}");
    assert_eq!(answer.body, json!({"batchItemFailures": []}), "every record delivered or skipped");
    assert!(running.peak_rss_kib().is_some_and(|kib| kib > 0), "its peak memory can be read while it runs");
    // Lambda's LoggingConfig (JSON) as the template sets it: one JSON line per record, carrying the invocation's
    // request id once, and never the token.
    let output = running.output();
    let logged: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}")))
        .filter(|line| ["Delivered.", "Skipped."].contains(&line["fields"]["message"].as_str().unwrap_or_default()))
        .collect();
    assert!(
        logged.iter().all(|line| line["span"]["requestId"] == id.as_str() && line.get("spans").is_none()),
        "{output}"
    );
    let delivered: BTreeSet<String> =
        logged.iter().map(|line| line["fields"]["message_id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(logged.len(), lines.len(), "{output}");
    let sent: BTreeSet<String> = lines
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, sent, "one `Delivered.` line per record:\n{output}");
    assert!(!output.contains(&sandbox.token()), "the token is never logged");
    let held: BTreeSet<String> = sandbox.state().contacts.values().filter_map(|c| c.external_id.clone()).collect();
    assert_eq!(held, user_ids(&lines), "Intercom holds a contact for every identified person");
    assert!(api.init_error().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingest_binary_queues_a_function_url_request_the_runtime_api_hands_it() {
    let sqs = client(&endpoint());
    let queue_url = fifo_queue(&sqs, 30).await;
    let api = RuntimeApi::start().await.unwrap();
    let lines = generated(20, 8, 11);
    let id = api.invoke(&batch_request(&lines, "bench-write-key"));
    let mut env = api.env();
    env.push(("WRITE_KEYS", "bench-write-key".into()));
    env.push(("QUEUE_URL", queue_url.clone()));
    env.push(("AWS_ENDPOINT_URL_SQS", endpoint()));
    let _running = Running::spawn(&crate::runtime_api::lambda_binary("ingest"), env).unwrap();

    let answer = api.answer_to(&id, WAIT).await.expect("the binary answers the invocation");
    assert_eq!((answer.kind.as_str(), &answer.body["statusCode"]), ("response", &json!(200)), "{answer:?}");
    let queued: BTreeSet<String> = drain(&sqs, &queue_url)
        .await
        .iter()
        .map(|message| serde_json::from_str::<Value>(&message.body).unwrap()["message_id"].as_str().unwrap().to_owned())
        .collect();
    let sent: BTreeSet<String> = lines
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued, sent, "every event of the request is in the queue");
}

#[tokio::test]
async fn a_poll_waits_for_an_event_and_an_answer_to_an_unknown_request_is_refused() {
    let api = RuntimeApi::start().await.unwrap();
    let http = reqwest::Client::new();
    let next = format!("http://{}/2018-06-01/runtime/invocation/next", api.address);
    let waiting = tokio::spawn(http.get(&next).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "nothing to hand out yet");
    let id = api.invoke(&json!({"hello": "world"}));
    let handed = waiting.await.unwrap().unwrap();
    assert_eq!(handed.headers()["lambda-runtime-aws-request-id"], id.as_str());
    assert_eq!(handed.json::<Value>().await.unwrap(), json!({"hello": "world"}));

    let unknown = format!("http://{}/2018-06-01/runtime/invocation/req-999999/response", api.address);
    assert_eq!(http.post(unknown).body("{}").send().await.unwrap().status(), 404);
    let response = format!("http://{}/2018-06-01/runtime/invocation/{id}/response", api.address);
    assert_eq!(http.post(response).body(r#"{"ok": true}"#).send().await.unwrap().status(), 202);
    let answer = api.answer_to(&id, WAIT).await.unwrap();
    assert_eq!((answer.kind.as_str(), answer.body), ("response", json!({"ok": true})));
    assert_eq!(api.polls(), 1);
}
