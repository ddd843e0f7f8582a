//! Soak: a generated day of events through ingest → SQS (moto, behind a proxy failing SendMessageBatch entries) → the
//! forwarder (invocations dying mid-batch, their messages back after the visibility timeout) → the sandbox (seeded 500s,
//! 503s, 429s and answers slower than the client's timeout); at the end every accepted messageId is delivered, skipped
//! or dead-lettered with a reason, in exactly one place. 2,000 events here; `SOAK_EVENTS=100000 scripts/test soak`
//! for the long run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use intercom_relay::forward::{ForwardOptions, Outcome, SqsDeadLetter, SqsPoller};
use intercom_relay::ingest::Ingest;
use intercom_relay::local::{GenerateOptions, generate};
use intercom_relay::queue::SqsQueue;
use intercom_relay::sandbox::{Faults, SandboxOptions, SandboxServer};
use intercom_relay::settings::Settings;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::fault_proxy::{FaultProxy, Faults as SqsFaults};
use crate::forward_batch::fifo_queue;
use crate::helpers::{forwarder, options, post, send};
use crate::sqs::{client, drain, endpoint, fast_retry};

/// What the forwarder finally made of one event (the last outcome that was not a hand-back).
#[derive(Debug, Clone, PartialEq)]
enum Final {
    Delivered,
    Skipped,
    DeadLettered,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_ends_delivered_skipped_or_dead_lettered_under_faults() {
    let started = std::time::Instant::now();
    let total: usize = std::env::var("SOAK_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let sqs = client(&endpoint());
    let queue_url = fifo_queue(&sqs, 2).await;
    let dlq_url = fifo_queue(&sqs, 30).await;
    // SendMessageBatch entries fail for the first calls; ingest retries them, and answers 503 if they keep failing.
    let proxy = FaultProxy::start(endpoint(), SqsFaults { failing_calls: total / 100, ..SqsFaults::default() }).await;
    let faults = Faults {
        seed: 11,
        server_errors: 0.03,
        rate_limited: 0.02,
        slow: 0.01,
        slow_by: Duration::from_millis(1500),
        only_matching: None,
    };
    let sandbox =
        SandboxServer::start(SandboxOptions { faults, rate_limit: 10_000_000, ..SandboxOptions::default() }, 0);
    let sandbox = sandbox.await.unwrap();
    let forward_options = ForwardOptions {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        call_timeout: Duration::from_secs(1),
        margin: Duration::from_millis(300),
        max_receives: 8,
        ..ForwardOptions::default()
    };
    let settings = Settings::parse(r#"{"events": {"deny": ["Invite Sent"]}}"#).unwrap();
    let forwarder = forwarder(&sandbox, SqsDeadLetter::new(sqs.clone(), &dlq_url), forward_options)
        .with_settings(Arc::new(settings));
    let ingest = Ingest::new(options(), SqsQueue::new(client(&proxy.url), &queue_url, fast_retry()));
    let poller = SqsPoller::new(sqs.clone(), &queue_url, Duration::from_secs(1));

    // The events: a generated day, with some tracks given names of their own, so the workspace's 120 active event
    // names run out and Intercom refuses the rest for good (dead letters with a reason).
    let options = GenerateOptions { events: total, users: total / 10, seed: 5, start: OffsetDateTime::now_utc() };
    let mut ndjson = Vec::new();
    generate(&options, &mut ndjson).unwrap();
    let mut events: Vec<Value> =
        std::str::from_utf8(&ndjson).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (index, event) in events.iter_mut().enumerate().filter(|(i, e)| e["type"] == "track" && i % 9 == 0) {
        event["event"] = json!(format!("One-off {index}"));
    }
    let kinds: HashMap<String, Value> =
        events.iter().map(|e| (e["messageId"].as_str().unwrap().to_owned(), e.clone())).collect();

    // Ingest in batches of 50; a 503 is sent again, as the SDKs do.
    let mut accepted: HashSet<String> = HashSet::new();
    let (mut answered_503, mut sends) = (0, 0);
    for chunk in events.chunks(50) {
        let body = json!({ "batch": chunk }).to_string();
        loop {
            sends += 1;
            let answer = send(&ingest, post("/v1/batch", &body)).await;
            match answer.status.as_u16() {
                200 => break,
                503 => answered_503 += 1,
                other => panic!("{other}: {}", answer.body),
            }
            assert!(sends < total, "ingest never took a batch");
        }
        accepted.extend(chunk.iter().map(|e| e["messageId"].as_str().unwrap().to_owned()));
    }

    // Forward as Lambda's event source would; one invocation in twenty dies partway (its messages are neither deleted
    // nor answered for, and come back after the visibility timeout).
    let mut rng = fastrand::Rng::with_seed(3);
    let mut finals: HashMap<String, Vec<Final>> = HashMap::new();
    let (mut invocations, mut died, mut hand_backs) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(if total > 10_000 { 7200 } else { 600 });
    while finals.len() < accepted.len() {
        assert!(Instant::now() < deadline, "{} of {} events finished", finals.len(), accepted.len());
        let event = poller.receive(10).await.unwrap();
        if event.records.is_empty() {
            continue;
        }
        invocations += 1;
        if rng.u8(0..20) == 0 {
            died += 1;
            let cut = Duration::from_millis(rng.u64(0..150));
            let _ = tokio::time::timeout(cut, forwarder.handle(&event, Instant::now() + Duration::from_secs(30))).await;
            continue;
        }
        let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
        poller.acknowledge(&event, &report.response()).await.unwrap();
        for record in report.records {
            let id = record.message_id.expect("every body is an envelope");
            let last = match record.outcome {
                Outcome::Retry { .. } => {
                    hand_backs += 1;
                    continue;
                }
                Outcome::Delivered { .. } => Final::Delivered,
                Outcome::Skipped { .. } => Final::Skipped,
                Outcome::DeadLettered { .. } => Final::DeadLettered,
            };
            finals.entry(id).or_default().push(last);
        }
    }

    // Every accepted event ended once, and the dead-letter queue holds exactly the dead-lettered, each with a reason.
    let lost: Vec<&String> = accepted.iter().filter(|id| !finals.contains_key(*id)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(finals.keys().all(|id| accepted.contains(id)), "an event nobody sent was forwarded");
    let twice: Vec<(&String, &Vec<Final>)> = finals.iter().filter(|(_, f)| f.iter().any(|x| *x != f[0])).collect();
    assert!(twice.is_empty(), "events with two different ends: {twice:?}");
    let count = |end: Final| finals.values().filter(|f| f[0] == end).count();
    let (delivered, skipped, dead) = (count(Final::Delivered), count(Final::Skipped), count(Final::DeadLettered));
    let letters = drain(&sqs, &dlq_url).await;
    let in_dlq: HashSet<String> = letters
        .iter()
        .map(|l| {
            assert!(!l.attributes.get("error_code").is_none_or(String::is_empty), "a dead letter without a reason");
            let envelope: Value = serde_json::from_str(&l.body).unwrap();
            envelope["message_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let dead_ids: HashSet<String> =
        finals.iter().filter(|(_, f)| f[0] == Final::DeadLettered).map(|(id, _)| id.clone()).collect();
    assert_eq!(in_dlq, dead_ids, "the DLQ holds exactly the dead-lettered events");
    assert!(dead > 0 && skipped > 0 && delivered > total / 2, "{delivered} delivered, {skipped} skipped, {dead} dead");

    // The sandbox holds every delivered track, page and screen (by contact and time), and each contact identified.
    let state = sandbox.state();
    let external: HashMap<&str, &str> =
        state.contacts.values().filter_map(|c| Some((c.id.as_str(), c.external_id.as_deref()?))).collect();
    let held: HashSet<(&str, i64)> =
        state.events.iter().filter_map(|e| Some((*external.get(e.contact_id.as_str())?, e.created_at))).collect();
    let mut checked = 0;
    for (id, ends) in &finals {
        let event = &kinds[id];
        if ends[0] != Final::Delivered || !matches!(event["type"].as_str(), Some("track" | "page" | "screen")) {
            continue;
        }
        let at =
            OffsetDateTime::parse(event["timestamp"].as_str().unwrap(), &time::format_description::well_known::Rfc3339);
        let key = (event["userId"].as_str().unwrap(), at.unwrap().unix_timestamp());
        assert!(held.contains(&key), "{id} was reported delivered but the sandbox lacks it");
        checked += 1;
    }
    assert!(checked > total / 3, "only {checked} events checked in the sandbox");

    // Duplicates: event submissions the sandbox saw more than once, which its de-duplication (contact, name, time) absorbed.
    let mut submissions: BTreeMap<String, usize> = BTreeMap::new();
    for request in sandbox.requests().iter().filter(|r| r.method == "POST" && r.path == "/events") {
        let body = request.body.clone().unwrap_or_default();
        *submissions
            .entry(format!("{}|{}|{}", body["user_id"], body["event_name"], body["created_at"]))
            .or_default() += 1;
    }
    let repeated: usize = submissions.values().map(|n| n - 1).sum();
    let delivered_twice = finals.values().filter(|f| f.len() > 1).count();
    let _ = writeln!(
        std::io::stderr(),
        "SOAK: {total} events, {} accepted ({answered_503} ingest answers 503, sent again), {delivered} delivered, {skipped} skipped, \
         {dead} dead-lettered with a reason, 0 lost; {invocations} invocations ({died} died mid-batch), {hand_backs} hand-backs; \
         {} POST /events for {} distinct events ({repeated} repeats absorbed by de-duplication; {delivered_twice} events finished twice); \
         sandbox holds {} events; {:.1} s",
        accepted.len(),
        submissions.values().sum::<usize>(),
        submissions.len(),
        state.events.len(),
        started.elapsed().as_secs_f64(),
    );
}
