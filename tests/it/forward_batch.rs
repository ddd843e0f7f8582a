//! The whole forward half against real components: events ingested into moto's SQS, received as Lambda's event source
//! hands them over, forwarded to the sandbox over HTTP, failures handed back or dead-lettered into moto's DLQ.

use std::num::NonZeroUsize;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use intercom_relay::sandbox::{Faults, SandboxOptions, SandboxServer, SandboxState, SeedAttribute};
use intercom_relay_lambda::forward::{BatchReport, Executor, ForwardOptions, Forwarder, Outcome};
use intercom_relay_lambda::ingest::Ingest;
use intercom_relay_lambda::intercom::{IntercomApi, IntercomClient};
use intercom_relay_lambda::queue::{
    APPROXIMATE_FIRST_RECEIVE_TIMESTAMP, APPROXIMATE_RECEIVE_COUNT, MESSAGE_GROUP_ID, MemoryDeadLetter, SENT_TIMESTAMP,
    SqsDeadLetter, SqsEvent, SqsPoller, SqsQueue, SqsRecord, SqsRecordExt, sqs_event_of, sqs_record,
};
use intercom_relay_lambda::retry::RetryPolicy;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{Captured, forwarder, memory_app, options, post, sandbox_client, send};
use crate::sqs::{FAST_DEADLINE, Received, client, drain, endpoint, fast_retry};

/// A FIFO queue on moto whose messages come back `visibility` seconds after a receive that did not delete them.
pub(crate) async fn fifo_queue(sqs: &Client, visibility: u32) -> String {
    let name = format!("fwd-{}.fifo", uuid::Uuid::new_v4().simple());
    let created = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, visibility.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto at {}: {}", endpoint(), aws_sdk_sqs::error::DisplayErrorContext(e)));
    created.queue_url().unwrap().to_owned()
}

pub(crate) fn quick() -> ForwardOptions {
    ForwardOptions {
        retry: RetryPolicy { attempts: 4, min_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200) },
        call_timeout: Duration::from_secs(2),
        margin: Duration::from_millis(300),
        ..ForwardOptions::default()
    }
}

/// [`quick`] with `attempts` tries per call.
pub(crate) fn tries(attempts: u32) -> ForwardOptions {
    ForwardOptions { retry: RetryPolicy { attempts, ..quick().retry }, ..quick() }
}

/// Ingest → SQS (moto) → forwarder → sandbox, with a DLQ on moto.
struct Pipeline {
    sqs: Client,
    queue_url: String,
    dlq_url: String,
    ingest: Ingest<SqsQueue>,
    sandbox: SandboxServer,
    forwarder: Forwarder<IntercomClient, SqsDeadLetter>,
    poller: SqsPoller,
}

async fn pipeline(sandbox: SandboxOptions, forward: ForwardOptions) -> Pipeline {
    let sqs = client(&endpoint());
    let queue_url = fifo_queue(&sqs, 1).await;
    let dlq_url = fifo_queue(&sqs, 30).await;
    let sandbox = SandboxServer::start(sandbox, 0).await.unwrap();
    let forwarder = forwarder(&sandbox, SqsDeadLetter::new(sqs.clone(), &dlq_url), forward);
    let ingest = Ingest::new(options(), SqsQueue::new(sqs.clone(), &queue_url, fast_retry(), FAST_DEADLINE));
    let poller = SqsPoller::new(sqs.clone(), &queue_url, Duration::from_secs(1));
    Pipeline { sqs, queue_url, dlq_url, ingest, sandbox, forwarder, poller }
}

impl Pipeline {
    async fn ingest(&self, events: Value) {
        let answer = send(&self.ingest, post("/v1/batch", &json!({ "batch": events }).to_string())).await;
        assert_eq!((answer.status.as_u16(), &answer.body["success"]), (200, &json!(true)), "{}", answer.body);
    }

    /// One receive as Lambda's event source makes it, waiting until the queue hands over `count` records.
    async fn receive(&self, count: usize) -> SqsEvent {
        let mut event = SqsEvent::default();
        for _ in 0..10 {
            event.records.extend(self.poller.receive(10).await.unwrap().records);
            if event.records.len() >= count {
                break;
            }
        }
        assert_eq!(event.records.len(), count, "{event:?}");
        event
    }

    /// One invocation: the batch forwarded, acknowledged records deleted.
    async fn invoke(&self, forwarder: &Forwarder<IntercomClient, SqsDeadLetter>, event: &SqsEvent) -> BatchReport {
        let report = forwarder.handle(event, Instant::now() + Duration::from_secs(30)).await;
        self.poller.acknowledge(event, &report.handed_back()).await.unwrap();
        report
    }

    /// Invocations as the event source would make them, until the queue is empty; their reports.
    async fn forward_all(&self) -> Vec<BatchReport> {
        let mut reports = Vec::new();
        let mut empty_polls = 0;
        while empty_polls < 2 {
            let event = self.poller.receive(10).await.unwrap();
            if event.records.is_empty() {
                empty_polls += 1;
                continue;
            }
            empty_polls = 0;
            reports.push(self.invoke(&self.forwarder, &event).await);
            assert!(reports.len() < 50, "the queue never drained: {reports:?}");
        }
        reports
    }

    async fn dead_letters(&self) -> Vec<Received> {
        drain(&self.sqs, &self.dlq_url).await
    }
}

fn outcomes(reports: &[BatchReport]) -> Vec<(String, Outcome)> {
    let records = reports.iter().flat_map(|r| &r.records);
    records.map(|r| (r.event_type.clone().unwrap_or_default(), r.outcome.clone())).collect()
}

fn contact<'a>(state: &'a SandboxState, external_id: &str) -> &'a intercom_relay::sandbox::Contact {
    let found = state.contacts.values().find(|c| c.external_id.as_deref() == Some(external_id));
    found.unwrap_or_else(|| panic!("no contact {external_id} in {:?}", state.contacts))
}

fn event_names(state: &SandboxState) -> Vec<&str> {
    state.events.iter().map(|e| e.event_name.as_str()).collect()
}

#[tokio::test]
async fn every_type_reaches_intercom_through_the_queue_in_the_fewest_calls() {
    // A visitor's lead from an earlier day (so the search index holds it), made by the relay: it carries the visitor's
    // anonymousId, as leads hold no external_id.
    let seeded = SeedAttribute::new("contact", "anonymous_id", "string");
    let sandbox = SandboxOptions { search_lag: 0, seed_attributes: vec![seeded], ..SandboxOptions::default() };
    let pipeline = pipeline(sandbox, quick()).await;
    let lead = json!({"role": "lead", "email": "visitor@example.com", "custom_attributes": {"anonymous_id": "anon-7"}});
    pipeline.forwarder.executor().api().call(Method::POST, "/contacts", Some(&lead)).await.unwrap();
    pipeline
        .ingest(json!([
            {"type": "identify", "messageId": "identify", "userId": "u-1",
                "traits": {"email": "ada@example.com", "name": "Ada", "plan": "pro"}},
            {"type": "track", "messageId": "track", "userId": "u-1", "event": "Order Completed",
                "properties": {"revenue": 19.999, "currency": "EUR"}},
            {"type": "page", "messageId": "page", "userId": "u-1", "name": "Pricing",
                "properties": {"url": "https://example.com/pricing"}},
            {"type": "screen", "messageId": "screen", "userId": "u-1", "name": "Settings"},
            {"type": "group", "messageId": "group", "userId": "u-1", "groupId": "org-1",
                "traits": {"name": "Org One", "employees": 40}},
            {"type": "alias", "messageId": "alias", "userId": "u-1", "previousId": "anon-7"},
            {"type": "identify", "messageId": "lead", "anonymousId": "a-2", "traits": {"email": "lead@example.com"}},
            {"type": "track", "messageId": "anonymous", "anonymousId": "a-3", "event": "Viewed"}
        ]))
        .await;
    let reports = pipeline.forward_all().await;
    let mut calls: Vec<(String, Outcome)> =
        reports.iter().flat_map(|r| &r.records).map(|r| (r.message_id.clone().unwrap(), r.outcome.clone())).collect();
    calls.sort_by_key(|(id, _)| {
        ["identify", "track", "page", "screen", "group", "alias", "lead", "anonymous"]
            .iter()
            .position(|known| known == id)
    });
    let delivered = |calls| Outcome::Delivered { calls };
    // identify: create `plan`, create the contact (2), plus 0–2 attribute lists; lead: search its email, create it (2),
    // plus the lists the identify did not read: 6 in all.
    let identify_calls = calls[0].1.calls();
    assert!((2..=4).contains(&identify_calls), "{calls:?}");
    let expected = [
        // With the lead's below: both models' attribute lists are read once, by whichever of the two people comes first.
        ("identify", delivered(identify_calls)),
        ("track", delivered(1)),
        ("page", delivered(1)),
        ("screen", delivered(1)),
        ("group", delivered(2)), // upsert the company, attach the cached contact
        ("alias", delivered(3)), // no user anon-7, search the visitor's lead, merge it into the cached user
        ("lead", delivered(6 - identify_calls)),
        ("anonymous", Outcome::Skipped { reason: "no_contact_identifier".into(), skipped_by: None, calls: 0 }),
    ];
    assert_eq!(calls, expected.map(|(id, outcome)| (id.to_owned(), outcome)));
    let state = pipeline.sandbox.state();
    let user = contact(&state, "u-1");
    assert_eq!((user.fields["name"].as_str(), &user.custom_attributes["plan"]), (Some("Ada"), &json!("pro")));
    assert_eq!(event_names(&state), ["order completed", "page_viewed", "screen_viewed"]);
    assert_eq!(state.events[0].metadata["price"], json!({"amount": 2000, "currency": "eur"}));
    assert!(state.events.iter().all(|e| e.contact_id == user.id));
    let company = state.companies.values().next().unwrap();
    assert_eq!((company.company_id.as_str(), &company.fields["size"]), ("org-1", &json!(40)));
    assert_eq!(user.companies, std::slice::from_ref(&company.id));
    assert!(state.contacts.values().all(|c| c.email.as_deref() != Some("visitor@example.com")), "merged into u-1");
    assert_eq!(state.merged_into.len(), 1);
    let lead = state.contacts.values().find(|c| c.email.as_deref() == Some("lead@example.com")).unwrap();
    assert_eq!(lead.role, "lead");
    assert!(pipeline.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_new_user_identified_twice_in_a_batch_and_again_after_a_cold_start_is_one_contact() {
    let pipeline = pipeline(SandboxOptions::default(), quick()).await;
    pipeline
        .ingest(json!([
            {"type": "identify", "userId": "u-1", "traits": {"name": "Ada"}},
            {"type": "identify", "userId": "u-1", "traits": {"name": "Ada L."}}
        ]))
        .await;
    let first = pipeline.forward_all().await;
    let calls: Vec<usize> = first.iter().flat_map(|r| &r.records).map(|r| r.outcome.calls()).collect();
    assert_eq!(calls, [1, 1], "created, then updated by the id the first call returned");
    // Another forwarder (a cold start) knows nothing of u-1: its create meets a 409 naming the contact, then updates it.
    let cold = forwarder(&pipeline.sandbox, SqsDeadLetter::new(pipeline.sqs.clone(), &pipeline.dlq_url), quick());
    pipeline.ingest(json!([{"type": "identify", "userId": "u-1", "traits": {"name": "Ada Lovelace"}}])).await;
    let event = pipeline.receive(1).await;
    let report = pipeline.invoke(&cold, &event).await;
    assert_eq!(report.records[0].outcome, Outcome::Delivered { calls: 2 });
    let state = pipeline.sandbox.state();
    assert_eq!(state.contacts.len(), 1);
    assert_eq!(contact(&state, "u-1").fields["name"], "Ada Lovelace");
    let statuses: Vec<u16> = pipeline.sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 409, 200]);
}

#[tokio::test]
async fn a_track_and_a_group_before_the_identify_are_delivered_not_lost() {
    let pipeline = pipeline(SandboxOptions::default(), quick()).await;
    pipeline
        .ingest(json!([
            {"type": "track", "userId": "u-2", "event": "Signed Up"},
            {"type": "group", "userId": "u-2", "groupId": "org-2", "traits": {"name": "Two"}},
            {"type": "identify", "userId": "u-2", "traits": {"name": "Grace"}}
        ]))
        .await;
    let reports = pipeline.forward_all().await;
    let calls: Vec<Outcome> = outcomes(&reports).into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        calls,
        [Outcome::Delivered { calls: 3 }, Outcome::Delivered { calls: 2 }, Outcome::Delivered { calls: 1 }],
        "track: 404, create the contact, send again; group: upsert, attach; identify: update"
    );
    let state = pipeline.sandbox.state();
    let user = contact(&state, "u-2");
    assert_eq!((event_names(&state), user.fields["name"].as_str()), (vec!["signed up"], Some("Grace")));
    assert_eq!(user.companies.len(), 1);
}

#[tokio::test]
async fn rate_limited_answers_are_waited_out_and_everything_is_delivered() {
    let faults = Faults { seed: 11, rate_limited: 0.2, ..Faults::default() };
    let pipeline = pipeline(SandboxOptions { faults, ..SandboxOptions::default() }, quick()).await;
    let events: Vec<Value> =
        (0..8).map(|n| json!({"type": "identify", "userId": format!("u-{n}"), "traits": {"name": "N"}})).collect();
    pipeline.ingest(Value::Array(events)).await;
    let reports = pipeline.forward_all().await;
    assert!(outcomes(&reports).iter().all(|(_, o)| matches!(o, Outcome::Delivered { .. })), "{reports:?}");
    assert_eq!(pipeline.sandbox.state().contacts.len(), 8);
    let limited = pipeline.sandbox.requests().iter().filter(|r| r.status == 429).count();
    assert!(limited > 0, "the seed injects 429s");
    assert!(pipeline.dead_letters().await.is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_and_every_event_is_delivered_once() {
    let faults = Faults { seed: 5, server_errors: 0.3, ..Faults::default() };
    let pipeline = pipeline(SandboxOptions { faults, ..SandboxOptions::default() }, quick()).await;
    let events: Vec<Value> = (0..10)
        .flat_map(|n| {
            let user = format!("u-{n}");
            [
                json!({"type": "identify", "userId": user, "traits": {"name": "N"}}),
                json!({"type": "track", "userId": user, "event": "Logged In"}),
            ]
        })
        .collect();
    pipeline.ingest(Value::Array(events)).await;
    pipeline.forward_all().await;
    let state = pipeline.sandbox.state();
    assert_eq!((state.contacts.len(), state.events.len()), (10, 10));
    let failed = pipeline.sandbox.requests().iter().filter(|r| r.status >= 500).count();
    assert!(failed > 0, "the seed injects server errors");
    assert!(pipeline.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_permanent_refusal_is_dead_lettered_with_the_reason_and_acknowledged() {
    let pipeline = pipeline(SandboxOptions::default(), quick()).await;
    let api = pipeline.forwarder.executor().api();
    api.call(Method::POST, "/contacts", Some(&json!({"role": "user", "external_id": "u-1"}))).await.unwrap();
    for n in 0..intercom_relay::sandbox::MAX_EVENT_NAMES {
        let event = json!({"event_name": format!("e{n}"), "created_at": 1, "user_id": "u-1"});
        api.call(Method::POST, "/events", Some(&event)).await.unwrap();
    }
    pipeline.ingest(json!([{"type": "track", "userId": "u-1", "event": "One Too Many", "messageId": "m-121"}])).await;
    let reports = pipeline.forward_all().await;
    assert!(matches!(&outcomes(&reports)[0].1, Outcome::DeadLettered { .. }), "{reports:?}");
    let letters = pipeline.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    let attribute = |name: &str| letter.attributes.get(name).map(String::as_str);
    assert_eq!(attribute("error_code"), Some("event_name_limit_reached"));
    assert_eq!(attribute("http_status"), Some("400"));
    assert_eq!(attribute("intercom_request_id"), Some("sandbox-400"));
    assert_eq!(attribute("attempts"), Some("1"), "a 400 is not tried again");
    assert_eq!((attribute("event_type"), attribute("event_name")), (Some("track"), Some("One Too Many")));
    assert!(attribute("error_message").unwrap().contains("120 active event names"));
    let envelope: Value = serde_json::from_str(&letter.body).unwrap();
    assert_eq!(envelope["event"]["messageId"], "m-121", "the body as it was, ready for a redrive");
    assert_eq!(letter.group_id.as_deref(), Some("u-1"));
    assert!(pipeline.poller.receive(10).await.unwrap().records.is_empty(), "acknowledged");
}

#[tokio::test]
async fn a_retryable_failure_hands_back_the_event_and_the_persons_later_events_keep_their_order() {
    let faults = Faults { seed: 1, server_errors: 1.0, only_matching: Some("u-bad".into()), ..Faults::default() };
    let options = tries(2);
    let pipeline = pipeline(SandboxOptions { faults, ..SandboxOptions::default() }, options).await;
    pipeline
        .ingest(json!([
            {"type": "identify", "userId": "u-bad", "traits": {"name": "B"}},
            {"type": "identify", "userId": "u-good", "traits": {"name": "G"}},
            {"type": "track", "userId": "u-bad", "event": "Second"},
            {"type": "track", "userId": "u-good", "event": "Second"}
        ]))
        .await;
    let event = pipeline.receive(4).await;
    let report = pipeline.invoke(&pipeline.forwarder, &event).await;
    let of = |user: &str| -> Vec<(String, Outcome)> {
        let records = event.records.iter().zip(&report.records);
        let mine = records.filter(|(record, _)| record.group() == Some(user));
        mine.map(|(record, outcome)| (record.id().to_owned(), outcome.outcome.clone())).collect()
    };
    let (bad, good) = (of("u-bad"), of("u-good"));
    assert!(good.iter().all(|(_, o)| matches!(o, Outcome::Delivered { .. })), "{good:?}");
    assert!(matches!(bad[0].1, Outcome::Retry { calls: 2, .. }), "tried twice: {bad:?}");
    assert_eq!(
        bad[1].1,
        Outcome::Retry {
            reason: "an earlier event of the same person was handed back".into(),
            calls: 0,
            retry_in: Duration::ZERO
        }
    );
    let handed_back: Vec<String> =
        report.response().batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    assert_eq!(handed_back, [bad[0].0.clone(), bad[1].0.clone()]);
    // Intercom recovers; SQS FIFO hands the two back after the visibility timeout, in their order. (Handed to the
    // forwarder here as SQS would: moto's FIFO emulation releases a group's re-visible messages out of order.)
    pipeline.sandbox.set_faults(Faults::default());
    let again =
        sqs_event_of(event.records.iter().filter(|r| handed_back.iter().any(|id| id == r.id())).cloned().collect());
    let report = pipeline.forwarder.handle(&again, Instant::now() + Duration::from_secs(30)).await;
    assert!(report.records.iter().all(|r| matches!(r.outcome, Outcome::Delivered { .. })), "{report:?}");
    let delivered: Vec<String> = pipeline
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.status < 300 && r.body.as_ref().is_some_and(|b| b.to_string().contains("u-bad")))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(delivered, ["POST /contacts", "POST /events"]);
    assert_eq!(pipeline.sandbox.state().events.len(), 2);
}

#[tokio::test]
async fn a_body_that_is_not_an_envelope_is_dead_lettered_as_it_came() {
    let pipeline = pipeline(SandboxOptions::default(), quick()).await;
    let send = pipeline.sqs.send_message().queue_url(&pipeline.queue_url).message_body("{not json");
    send.message_group_id("g-1").message_deduplication_id("d-1").send().await.unwrap();
    let reports = pipeline.forward_all().await;
    assert!(matches!(&outcomes(&reports)[0].1, Outcome::DeadLettered { calls: 0, .. }), "{reports:?}");
    let letters = pipeline.dead_letters().await;
    assert_eq!((letters.len(), letters[0].body.as_str()), (1, "{not json"));
    assert_eq!(letters[0].attributes["error_code"], "malformed_envelope");
    assert!(letters[0].attributes["error_message"].contains("not an envelope"), "{:?}", letters[0].attributes);
    assert!(pipeline.sandbox.requests().is_empty(), "Intercom is never called for it");
}

/// An envelope body as ingest queues it.
pub(crate) async fn envelope(event: Value) -> String {
    let app = memory_app();
    let answer = send(&app, post("/v1/batch", &json!({ "batch": [event] }).to_string())).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    app.queue().messages().remove(0).body
}

pub(crate) fn record(id: &str, body: String, receive_count: u32) -> SqsRecord {
    let mut record = sqs_record(id, Some(body));
    record.attributes = std::collections::HashMap::from([
        (APPROXIMATE_RECEIVE_COUNT.to_owned(), receive_count.to_string()),
        (MESSAGE_GROUP_ID.to_owned(), "u-1".into()),
        ("MessageDeduplicationId".to_owned(), format!("dedup-{id}")),
    ]);
    record
}

/// `record` as SQS hands it out when it entered the queue `sent` ago and was first received `tried` ago.
pub(crate) fn aged(mut record: SqsRecord, sent: Duration, tried: Duration) -> SqsRecord {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    record.attributes.insert(SENT_TIMESTAMP.into(), (now - sent).as_millis().to_string());
    record.attributes.insert(APPROXIMATE_FIRST_RECEIVE_TIMESTAMP.into(), (now - tried).as_millis().to_string());
    record
}

#[tokio::test]
async fn when_the_dead_letter_queue_does_not_take_the_event_it_is_handed_back() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let sqs = client(&endpoint());
    let missing = format!("{}/000000000000/no-such-queue.fifo", endpoint().trim_end_matches('/'));
    let forwarder = forwarder(&sandbox, SqsDeadLetter::new(sqs, missing), quick());
    let event = sqs_event_of(vec![record("r-1", "garbage".into(), 1)]);
    let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    match &report.records[0].outcome {
        Outcome::Retry { reason, .. } => {
            assert!(reason.starts_with("the dead-letter queue did not take it"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.response().batch_item_failures.len(), 1);
}

#[tokio::test]
async fn an_event_still_failing_past_its_horizon_is_dead_lettered_with_the_last_reason_and_one_younger_waits() {
    let faults = Faults { seed: 2, server_errors: 1.0, ..Faults::default() };
    let sandbox = SandboxServer::start(SandboxOptions { faults, ..SandboxOptions::default() }, 0).await.unwrap();
    let options = ForwardOptions { horizon: Duration::from_secs(3600), ..tries(2) };
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), options);
    let body = envelope(json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada"}})).await;
    // Received many times, but in the queue for less than its horizon: handed back, its wait about as long as it has
    // been failing (5 minutes), and the person's next event waits with it.
    let young = aged(record("young", body.clone(), 60), Duration::from_secs(3000), Duration::from_secs(300));
    let next = record("next", body.clone(), 1);
    let report = forwarder.handle(&sqs_event_of(vec![young, next]), Instant::now() + Duration::from_secs(30)).await;
    let waits: Vec<Duration> = report.handed_back().into_iter().map(|(_, wait)| wait).collect();
    assert_eq!(waits.len(), 2, "{report:?}");
    assert!(waits[0] >= Duration::from_secs(225) && waits[0] <= Duration::from_secs(375), "{waits:?}");
    assert_eq!(waits[1], Duration::ZERO, "visible at once: SQS FIFO holds it behind the first, which waits");
    // Its third receive, but in the queue for longer than its horizon: dead-lettered, with what Intercom last said.
    let old = aged(record("old", body, 3), Duration::from_secs(3700), Duration::from_secs(3600));
    let report = forwarder.handle(&sqs_event_of(vec![old]), Instant::now() + Duration::from_secs(30)).await;
    assert!(matches!(report.records[0].outcome, Outcome::DeadLettered { calls: 2, .. }), "{report:?}");
    let letters = forwarder.dead_letter().letters();
    let reason = &letters[0].reason;
    assert_eq!((reason.error_code.as_str(), reason.attempts, letters[0].receive_count), ("retries_exhausted", 2, 3));
    assert!(matches!(reason.http_status, Some(500 | 503)), "{reason:?}");
    assert!(
        reason.error_message.starts_with(
            "still failing 1h 1m after the event entered the queue (RETRY_HORIZON is 1h 0m); last: Intercom answered 50"
        ),
        "{reason:?}"
    );
    assert_eq!(letters[0].dedup_id, "old", "the copy's own id");
}

#[tokio::test]
async fn an_invocation_near_its_deadline_hands_back_what_it_cannot_finish() {
    let faults = Faults { seed: 3, slow: 1.0, slow_by: Duration::from_secs(3), ..Faults::default() };
    let sandbox = SandboxServer::start(SandboxOptions { faults, ..SandboxOptions::default() }, 0).await.unwrap();
    let options =
        ForwardOptions { call_timeout: Duration::from_millis(500), margin: Duration::from_millis(200), ..quick() };
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), options);
    let body = envelope(json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada"}})).await;
    let event = sqs_event_of(vec![record("a", body.clone(), 1), record("b", body, 1)]);
    let report = forwarder.handle(&event, Instant::now() + Duration::from_millis(1500)).await;
    assert!(report.records.iter().all(|r| matches!(r.outcome, Outcome::Retry { .. })), "{report:?}");
    assert_eq!(report.response().batch_item_failures.len(), 2);
    assert!(forwarder.dead_letter().letters().is_empty());
}

#[tokio::test]
async fn neither_the_token_nor_personal_fields_reach_the_logs() {
    let (logs, _guard) = Captured::start(tracing::Level::TRACE, true);
    let token = "tok-2f9a61c0-secret";
    let sandbox =
        SandboxServer::start(SandboxOptions { token: token.into(), ..SandboxOptions::default() }, 0).await.unwrap();
    let body = envelope(json!({"type": "identify", "userId": "u-1",
        "traits": {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro"}}))
    .await;
    let event = sqs_event_of(vec![record("r-1", body, 1)]);
    let good = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    let report = good.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    assert!(matches!(report.records[0].outcome, Outcome::Delivered { .. }), "{report:?}");
    // A revoked token: every call answers 401, which is no event's fault: handed back, saying so.
    let wrong = "tok-7c1b33d4-revoked";
    let client = sandbox_client(&sandbox, wrong, Duration::from_secs(2));
    let bad =
        Forwarder::new(Executor::new(client, true, NonZeroUsize::new(10).unwrap()), MemoryDeadLetter::new(), quick());
    let report = bad.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    assert!(matches!(&report.records[0].outcome, Outcome::Retry { reason, .. } if reason.contains("401")));
    let text = logs.text();
    assert!(text.contains("Delivered.") && text.contains("Handed back to SQS."), "the capture works: {text}");
    for secret in [token, wrong, "ada@example.com", "Ada Lovelace"] {
        assert!(!text.contains(secret), "`{secret}` is in the logs:\n{text}");
    }
}

#[tokio::test]
async fn a_mixed_batch_of_new_users_costs_fewer_calls_than_the_peers_and_delivers_every_type() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    let mut records = Vec::new();
    for user in 0..5 {
        let user_id = format!("u-{user}");
        let events = [
            json!({"type": "identify", "userId": user_id, "traits": {"email": format!("{user_id}@example.com"), "plan": "pro"}}),
            json!({"type": "track", "userId": user_id, "event": "Signed In"}),
            json!({"type": "track", "userId": user_id, "event": "Order Completed", "properties": {"revenue": 9.5}}),
            json!({"type": "page", "userId": user_id, "name": "Pricing"}),
            json!({"type": "group", "userId": user_id, "groupId": "org-1", "traits": {"name": "Org One"}}),
        ];
        for event in events {
            let mut record = record(&format!("r-{}", records.len()), envelope(event).await, 1);
            record.attributes.insert(MESSAGE_GROUP_ID.into(), user_id.clone());
            records.push(record);
        }
    }
    let report = forwarder.handle(&sqs_event_of(records), Instant::now() + Duration::from_secs(30)).await;
    assert!(report.records.iter().all(|r| matches!(r.outcome, Outcome::Delivered { .. })), "{report:?}");
    // 2 attribute lists + 1 attribute created + 5 contacts created; 10 events; 5 page views; 5 × (company upsert +
    // attach). The peers: 5 × 2 per identify, 10 tracks, no pages, 5 × 3 per group = 35 calls for 20 of the 25 events.
    assert_eq!(report.calls(), 33);
    let state = sandbox.state();
    assert_eq!((state.contacts.len(), state.events.len(), state.companies.len()), (5, 15, 1));
    assert!(state.contacts.values().all(|c| c.companies.len() == 1));
}

#[tokio::test]
async fn an_alias_whose_previous_contact_is_not_there_yet_is_handed_back_for_a_while_then_skipped() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let wait = Duration::from_millis(500);
    let options = ForwardOptions { alias_wait: wait, ..quick() };
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), options);
    let alias = json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"});
    let body = envelope(alias).await;
    let outcome = async |receive: u32, tried: Duration| {
        let event = sqs_event_of(vec![aged(record("r-alias", body.clone(), receive), tried, tried)]);
        forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await.records[0].outcome.clone()
    };
    // Tried for no time, and for a long time but with this forwarder only just started (after an outage the previous
    // contact's lane may still be waiting): handed back, whatever the receive count.
    assert!(matches!(outcome(1, Duration::ZERO).await, Outcome::Retry { .. }));
    assert!(matches!(outcome(40, Duration::from_secs(60)).await, Outcome::Retry { .. }));
    // Tried for longer than the wait, with Intercom answering for as long: skipped.
    tokio::time::sleep(wait).await;
    let skipped = outcome(2, wait + Duration::from_millis(100)).await;
    assert!(
        matches!(&skipped, Outcome::Skipped { reason, .. } if reason == "alias_previous_contact_unknown"),
        "{skipped:?}"
    );
    assert!(forwarder.dead_letter().letters().is_empty());
}
