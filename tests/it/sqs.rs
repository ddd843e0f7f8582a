//! The handler against a real SQS-compatible server (moto, started by the test command): what the queue ends up holding.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use intercom_relay_lambda::ingest::Ingest;
use intercom_relay_lambda::queue::SqsQueue;
use intercom_relay_lambda::retry::RetryPolicy;
use serde_json::{Value, json};

use crate::fault_proxy::{FaultProxy, Faults};
use crate::helpers::{WRITE_KEY, envelope_events, fixture, options, post, send};

const TEST_COMMAND: &str = "scripts/test";

pub(crate) fn endpoint() -> String {
    std::env::var("SQS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "SQS_ENDPOINT_URL is not set: these tests need moto's SQS server. Run the suite with `{TEST_COMMAND}` \
             (see README.md), which installs moto, starts it on 127.0.0.1 and sets SQS_ENDPOINT_URL."
        )
    })
}

pub(crate) fn client(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(10)).build())
        .build();
    Client::from_conf(config)
}

pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy { attempts: 3, min_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) }
}

/// The most one `enqueue` may take in these tests.
pub(crate) const FAST_DEADLINE: Duration = Duration::from_secs(20);

/// A new queue on moto, FIFO when `fifo`; its URL.
async fn new_queue(client: &Client, fifo: bool) -> String {
    let name = format!("it-{}{}", uuid::Uuid::new_v4().simple(), if fifo { ".fifo" } else { "" });
    let mut request = client.create_queue().queue_name(name);
    if fifo {
        request = request
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false");
    }
    let output = request.send().await.unwrap_or_else(|e| {
        panic!(
            "cannot reach moto's SQS server at {}: {}. Run the suite with `{TEST_COMMAND}` (see README.md).",
            endpoint(),
            aws_sdk_sqs::error::DisplayErrorContext(e)
        )
    });
    output.queue_url().expect("a queue URL").to_owned()
}

/// A message as SQS hands it to a consumer.
#[derive(Debug)]
pub(crate) struct Received {
    pub body: String,
    pub attributes: HashMap<String, String>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

/// Everything the queue holds, received and deleted.
pub(crate) async fn drain(client: &Client, queue_url: &str) -> Vec<Received> {
    let mut received = Vec::new();
    let mut empty_polls = 0;
    while empty_polls < 2 {
        let output = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = output.messages();
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        for message in messages {
            let system = message.attributes();
            let attribute = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name)).cloned();
            received.push(Received {
                body: message.body().unwrap_or_default().to_owned(),
                attributes: message
                    .message_attributes()
                    .map(|a| {
                        a.iter().map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned())).collect()
                    })
                    .unwrap_or_default(),
                group_id: attribute(MessageSystemAttributeName::MessageGroupId),
                dedup_id: attribute(MessageSystemAttributeName::MessageDeduplicationId),
            });
            let handle = message.receipt_handle().expect("a receipt handle");
            client.delete_message().queue_url(queue_url).receipt_handle(handle).send().await.expect("DeleteMessage");
        }
    }
    received
}

async fn app(fifo: bool) -> (Ingest<SqsQueue>, Client, String) {
    let client = client(&endpoint());
    let queue_url = new_queue(&client, fifo).await;
    let queue = SqsQueue::new(client.clone(), &queue_url, fast_retry(), FAST_DEADLINE);
    (Ingest::new(options(), queue), client, queue_url)
}

#[tokio::test]
async fn each_type_lands_in_the_fifo_queue_with_attributes_group_and_dedup_ids() {
    let (app, client, queue_url) = app(true).await;
    for kind in ["identify", "track", "page", "screen", "group", "alias"] {
        let answer = send(&app, fixture(&format!("{kind}.json"))).await;
        assert_eq!(answer.status, 200, "{kind}: {}", answer.body);
    }
    let mut received = drain(&client, &queue_url).await;
    received.sort_by_key(|m| m.dedup_id.clone());
    let summary: Vec<(&str, &str, Option<&str>, &str)> = received
        .iter()
        .map(|m| {
            (
                m.dedup_id.as_deref().unwrap(),
                m.attributes["event_type"].as_str(),
                m.attributes.get("event_name").map(String::as_str),
                m.group_id.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("msg-alias-1", "alias", None, "user-1001"),
            ("msg-group-1", "group", None, "user-1001"),
            ("msg-identify-1001", "identify", None, "user-1001"),
            ("msg-page-1", "page", None, "anon-3c9f"),
            ("msg-screen-1", "screen", None, "user-1001"),
            ("msg-track-1001", "track", Some("Order Completed"), "user-1001"),
        ]
    );
    let events = envelope_events(received.into_iter().map(|m| m.body));
    let track = events.iter().find(|e| e["type"] == "track").unwrap();
    assert_eq!(
        track["properties"],
        json!({"order_id": "ord-5001", "revenue": 42.5, "currency": "EUR", "coupon": "SPRING"})
    );
    assert_eq!(track["event"], "Order Completed");
}

#[tokio::test]
async fn a_resent_message_id_is_queued_once() {
    let (app, client, queue_url) = app(true).await;
    for _ in 0..2 {
        assert_eq!(send(&app, fixture("track.json")).await.status, 200);
    }
    let received = drain(&client, &queue_url).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].dedup_id.as_deref(), Some("msg-track-1001"));
}

#[tokio::test]
async fn a_gzipped_batch_as_rudderstacks_sdk_sends_it_is_queued_in_order() {
    let (app, client, queue_url) = app(true).await;
    let answer = send(&app, fixture("batch-gzip.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let received = drain(&client, &queue_url).await;
    assert!(received.iter().all(|m| m.group_id.as_deref() == Some("user-3001")));
    let events = envelope_events(received.into_iter().map(|m| m.body));
    let ids: Vec<&Value> = events.iter().map(|e| &e["messageId"]).collect();
    assert_eq!(ids, [&json!("msg-rs-1"), &json!("msg-rs-2"), &json!("msg-rs-3")]);
    assert_eq!(events[0]["traits"]["email"], "linus@example.com");
}

#[tokio::test]
async fn a_basic_auth_batch_as_analytics_python_sends_it_is_queued_per_user() {
    let (app, client, queue_url) = app(true).await;
    let answer = send(&app, fixture("batch.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let received = drain(&client, &queue_url).await;
    let mut groups: Vec<(String, String)> =
        received.iter().map(|m| (m.group_id.clone().unwrap(), m.dedup_id.clone().unwrap())).collect();
    groups.sort();
    let expected =
        [("anon-77aa", "msg-py-4"), ("user-2001", "msg-py-1"), ("user-2001", "msg-py-2"), ("user-2001", "msg-py-3")];
    assert_eq!(groups, expected.map(|(g, d)| (g.to_owned(), d.to_owned())));
    for event in envelope_events(received.into_iter().map(|m| m.body)) {
        assert_eq!(event["context"]["library"]["name"], "analytics-python");
        assert_eq!(event["context"]["locale"], "en-GB");
    }
}

#[tokio::test]
async fn ids_sqs_would_refuse_are_hashed_into_group_and_dedup_ids() {
    let (app, client, queue_url) = app(true).await;
    let long_id = "m".repeat(200);
    let body = json!({"userId": "Zoë Müller\r\nX-Injected: 1", "event": "Signed Up", "messageId": long_id});
    let answer = send(&app, post("/v1/track", &body.to_string())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let received = drain(&client, &queue_url).await;
    assert_eq!(received.len(), 1);
    let group = received[0].group_id.as_deref().unwrap();
    let dedup = received[0].dedup_id.as_deref().unwrap();
    assert_eq!(group, intercom_relay_lambda::queue::sqs_id("Zoë Müller\r\nX-Injected: 1"));
    assert_eq!(dedup, intercom_relay_lambda::queue::sqs_id(&long_id));
    assert!(group.starts_with("sha256-") && dedup.starts_with("sha256-"));
    let event = &envelope_events([received[0].body.clone()])[0];
    assert_eq!(event["userId"], "Zoë Müller\r\nX-Injected: 1", "the event keeps the id as sent");
}

#[tokio::test]
async fn a_standard_queue_takes_events_without_fifo_ids() {
    let (app, client, queue_url) = app(false).await;
    assert!(!app.queue().is_fifo());
    let answer = send(&app, fixture("batch.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let received = drain(&client, &queue_url).await;
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|m| m.group_id.is_none() && m.dedup_id.is_none()), "{received:?}");
}

#[tokio::test]
async fn a_large_batch_is_split_into_sqs_batches_and_every_event_lands() {
    let (app, client, queue_url) = app(true).await;
    let events: Vec<Value> = (0..137)
        .map(|i| json!({"type": "track", "userId": format!("user-{}", i % 7), "event": "Clicked", "messageId": format!("bulk-{i}"), "properties": {"n": i, "pad": "p".repeat(2000)}}))
        .collect();
    let answer = send(&app, post("/v1/batch", &json!({"batch": events}).to_string())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let groups = by_group(&drain(&client, &queue_url).await);
    for user in 0..7 {
        let expected: Vec<String> = (0..137).filter(|i| i % 7 == user).map(|i| format!("bulk-{i}")).collect();
        assert_eq!(groups[&format!("user-{user}")], expected, "user-{user}'s events in the order sent");
    }
}

#[tokio::test]
async fn an_unreachable_queue_answers_503_so_the_client_retries() {
    // A port nothing listens on: every SendMessageBatch fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let client = client(&format!("http://{closed}"));
    let queue = SqsQueue::new(client, format!("http://{closed}/123456789012/events.fifo"), fast_retry(), FAST_DEADLINE);
    let app = Ingest::new(options(), queue);
    let answer = send(&app, fixture("batch.json")).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["success"], false);
    assert_eq!(answer.body["error"]["code"], "queue_unavailable");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("4 of 4 events could not be enqueued"), "{message}");
}

/// The dedup ids (our message ids) the queue holds for each message group, in the order a consumer receives them.
fn by_group(received: &[Received]) -> HashMap<String, Vec<String>> {
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for message in received {
        groups.entry(message.group_id.clone().unwrap()).or_default().push(message.dedup_id.clone().unwrap());
    }
    groups
}

/// The handler sending through a fault-injecting proxy to a new FIFO queue on moto; the client reads moto directly.
async fn proxied_app(faults: Faults) -> (Ingest<SqsQueue>, FaultProxy, Client, String) {
    let client = client(&endpoint());
    let queue_url = new_queue(&client, true).await;
    let proxy = FaultProxy::start(endpoint(), faults).await;
    let app = Ingest::new(options(), SqsQueue::new(self::client(&proxy.url), &queue_url, fast_retry(), FAST_DEADLINE));
    (app, proxy, client, queue_url)
}

#[tokio::test]
async fn entries_sqs_refuses_at_first_are_retried_and_each_persons_order_is_kept() {
    let faults = Faults { failing_calls: 2, group: Some("user-2001".into()), ..Faults::default() };
    let (app, proxy, client, queue_url) = proxied_app(faults).await;
    let answer = send(&app, fixture("batch.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let failed_entries = proxy.faults.lock().unwrap().failed_entries;
    assert_eq!(failed_entries, 2, "user-2001's first entry (one per call) failed twice before it landed");
    let groups = by_group(&drain(&client, &queue_url).await);
    assert_eq!(groups["user-2001"], ["msg-py-1", "msg-py-2", "msg-py-3"]);
    assert_eq!(groups["anon-77aa"], ["msg-py-4"]);
}

#[tokio::test]
async fn a_persons_later_batches_wait_for_the_earlier_one_to_land() {
    let faults = Faults { failing_calls: 1, group: Some("user-x".into()), ..Faults::default() };
    let (app, _proxy, client, queue_url) = proxied_app(faults).await;
    let events: Vec<Value> = (0..25)
        .map(|i| json!({"type": "track", "userId": if i % 5 == 4 { "user-y" } else { "user-x" }, "event": "Step", "messageId": format!("step-{i:02}")}))
        .collect();
    let answer = send(&app, post("/v1/batch", &json!({"batch": events}).to_string())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let groups = by_group(&drain(&client, &queue_url).await);
    let expected = |user: &str| -> Vec<String> {
        (0..25).filter(|i| (i % 5 == 4) == (user == "user-y")).map(|i| format!("step-{i:02}")).collect()
    };
    assert_eq!(groups["user-x"], expected("user-x"));
    assert_eq!(groups["user-y"], expected("user-y"));
}

#[tokio::test]
async fn one_refused_entry_of_a_person_is_never_overtaken_by_their_later_ones() {
    // A browser's batch: one person's ten events, SQS refusing the first entry of theirs it is sent, twice.
    let faults = Faults { failing_calls: 2, group: Some("visitor-1".into()), first_only: true, ..Faults::default() };
    let (app, proxy, client, queue_url) = proxied_app(faults).await;
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"type": "track", "anonymousId": "visitor-1", "event": "Step", "messageId": format!("v-{i}")}))
        .collect();
    let answer = send(&app, post("/v1/b", &json!({"batch": events, "writeKey": WRITE_KEY}).to_string())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let counts = {
        let faults = proxy.faults.lock().unwrap();
        (faults.failed_entries, faults.batch_calls)
    };
    // The price of the order: one call per event of one person (10, and the 2 retries), where 1 call took 10.
    assert_eq!(counts, (2, 12));
    let groups = by_group(&drain(&client, &queue_url).await);
    let expected: Vec<String> = (0..10).map(|i| format!("v-{i}")).collect();
    assert_eq!(groups["visitor-1"], expected);
}

#[tokio::test]
async fn a_person_whose_entry_keeps_failing_holds_back_only_their_own_later_events() {
    let faults =
        Faults { failing_calls: usize::MAX, group: Some("user-x".into()), first_only: true, ..Faults::default() };
    let (app, _proxy, client, queue_url) = proxied_app(faults).await;
    let events: Vec<Value> = (0..6)
        .map(|i| json!({"type": "track", "userId": if i % 2 == 0 { "user-x" } else { "user-y" }, "event": "Step", "messageId": format!("s-{i}")}))
        .collect();
    let answer = send(&app, post("/v1/batch", &json!({"batch": events}).to_string())).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 of 6 events could not be enqueued"), "{message}");
    let groups = by_group(&drain(&client, &queue_url).await);
    assert_eq!(groups.get("user-x"), None, "none of user-x's events went ahead of the refused one");
    assert_eq!(groups["user-y"], ["s-1", "s-3", "s-5"]);
}

#[tokio::test]
async fn entries_that_keep_failing_answer_503_after_every_attempt() {
    let (app, proxy, client, queue_url) = proxied_app(Faults { failing_calls: usize::MAX, ..Faults::default() }).await;
    let answer = send(&app, fixture("track.json")).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1 of 1 events could not be enqueued: SQS refused 1 entries: InternalError"), "{message}");
    assert_eq!(proxy.faults.lock().unwrap().batch_calls, fast_retry().attempts as usize);
    assert!(drain(&client, &queue_url).await.is_empty());
}

#[tokio::test]
async fn a_queue_that_never_answers_gets_a_503_before_the_function_times_out() {
    // A server that takes connections and never answers: only the invocation's deadline can end the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let queue = SqsQueue::new(
        client(&format!("http://{address}")),
        format!("http://{address}/1/events.fifo"),
        fast_retry(),
        FAST_DEADLINE,
    );
    let app = Ingest::new(options(), queue);
    let mut context = lambda_http::Context::default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    context.deadline = now + 1_500;
    let started = std::time::Instant::now();
    let answer = send(&app, lambda_http::RequestExt::with_lambda_context(fixture("track.json"), context)).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body["error"]["message"].as_str().unwrap().contains("the function's time ran out"),
        "{}",
        answer.body
    );
    assert!(started.elapsed() < Duration::from_millis(1_500), "answered after the deadline: {:?}", started.elapsed());
}
