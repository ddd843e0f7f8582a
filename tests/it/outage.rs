//! Failures of the workspace, not of the event (Intercom down, a revoked token, a rate limit spent for long): what the
//! forwarder does with them, against the sandbox over HTTP, its queues in memory and on moto. They cost delay and a few
//! calls, never a dead letter; the forwarder resumes by itself.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use intercom_relay::local::{Destination, ReplayOptions, Tally, replay};
use intercom_relay::sandbox::{Faults, Outage, SandboxOptions, SandboxServer};
use intercom_relay_lambda::forward::{BatchReport, BreakerPolicy, Executor, ForwardOptions, Forwarder, Outcome};
use intercom_relay_lambda::intercom::IntercomClient;
use intercom_relay_lambda::queue::{
    MESSAGE_GROUP_ID, MemoryDeadLetter, SqsEvent, SqsPoller, SqsRecordExt, sqs_event_of,
};
use intercom_relay_lambda::retry::RetryPolicy;
use serde_json::json;
use tokio::time::Instant;

use crate::cli::scratch;
use crate::forward_batch::{envelope, fifo_queue, quick, record};
use crate::helpers::{Captured, forwarder, options, sandbox_client};
use crate::sqs::{client, endpoint};

/// The deployed rules with time compressed: the breaker opens after 3 failures in a row, for 300 ms doubling to 1 s.
fn compressed() -> ForwardOptions {
    ForwardOptions {
        redelivery: RetryPolicy {
            attempts: u32::MAX,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        },
        breaker: BreakerPolicy { threshold: 3, open_min: Duration::from_millis(300), open_max: Duration::from_secs(1) },
        ..quick()
    }
}

/// An identify for each of `people`, one record each, each person their own FIFO group.
async fn identifies(people: usize) -> SqsEvent {
    let mut records = Vec::new();
    for n in 0..people {
        let body =
            envelope(json!({"type": "identify", "userId": format!("u-{n}"), "traits": {"name": format!("P{n}")}}));
        let mut record = record(&format!("r-{n}"), body.await, 1);
        record.attributes.insert(MESSAGE_GROUP_ID.into(), format!("u-{n}"));
        records.push(record);
    }
    sqs_event_of(records)
}

async fn handle(forwarder: &Forwarder<IntercomClient, MemoryDeadLetter>, event: &SqsEvent) -> BatchReport {
    forwarder.handle(event, Instant::now() + Duration::from_secs(30)).await
}

/// Invocations of what is handed back, each after the shortest wait, as the queue would hand them out, until none is.
async fn until_settled(forwarder: &Forwarder<IntercomClient, MemoryDeadLetter>, mut event: SqsEvent) -> usize {
    for invocation in 1..=20 {
        let report = handle(forwarder, &event).await;
        let again = report.handed_back();
        if again.is_empty() {
            return invocation;
        }
        event.records.retain(|r| again.iter().any(|(id, _)| id == r.id()));
        tokio::time::sleep(again.iter().map(|(_, wait)| *wait).min().unwrap()).await;
    }
    panic!("still handed back after 20 invocations")
}

fn retries(report: &BatchReport) -> Vec<&str> {
    let reasons = report.records.iter().map(|r| match &r.outcome {
        Outcome::Retry { reason, .. } => reason.as_str(),
        other => panic!("not handed back: {other:?}"),
    });
    reasons.collect()
}

#[tokio::test]
async fn while_intercom_is_down_calls_are_held_back_nothing_is_dead_lettered_and_it_resumes_by_itself() {
    let (logs, _guard) = Captured::start(tracing::Level::INFO, false);
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), compressed());
    let event = identifies(20).await;
    sandbox.set_outage(Some(Outage::Down));

    let report = handle(&forwarder, &event).await;
    let reasons = retries(&report);
    let calls = sandbox.requests().len();
    // 8 people at once (INTERCOM_CONCURRENCY): their first calls fail together, and the breaker opens at the third.
    assert!(calls <= 12, "{calls} calls for 20 events, 4 tries each without the breaker");
    assert!(
        reasons.iter().filter(|r| r.starts_with("not sent while Intercom keeps failing")).count() >= 8,
        "{reasons:?}"
    );
    assert!(reasons.iter().all(|r| r.contains("503")), "each says why: {reasons:?}");
    let waits: Vec<Duration> = report.handed_back().into_iter().map(|(_, wait)| wait).collect();
    assert!(waits.iter().all(|w| *w >= Duration::from_millis(75)), "{waits:?}");
    // Still open: an invocation now costs no call at all.
    let again = handle(&forwarder, &event).await;
    assert_eq!(retries(&again).len(), 20);
    assert_eq!(sandbox.requests().len(), calls, "no call while the breaker is open");

    let opened = logs.text().matches("Intercom is failing every call").count();
    assert_eq!(opened, 1, "one line says what is wrong: {}", logs.text());
    assert!(logs.text().contains("intercomstatus.com"), "and where to look: {}", logs.text());

    sandbox.set_outage(None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let invocations = until_settled(&forwarder, event).await;
    assert!(forwarder.dead_letter().letters().is_empty(), "nothing dead-lettered");
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 20, "every event delivered after {invocations} invocations");
    assert!(logs.text().contains("Intercom answers again"), "{}", logs.text());
}

#[tokio::test]
async fn a_revoked_token_is_said_once_and_the_events_wait_for_a_new_one() {
    let (logs, _guard) = Captured::start(tracing::Level::INFO, false);
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), compressed());
    let event = identifies(12).await;
    sandbox.set_outage(Some(Outage::Unauthorized));
    let report = handle(&forwarder, &event).await;
    let reasons = retries(&report);
    assert!(reasons.iter().all(|r| r.contains("401")), "{reasons:?}");
    // A 401 is not tried again within the invocation: one call per person until the breaker opens.
    assert!(sandbox.requests().len() <= 8, "{} calls", sandbox.requests().len());
    let text = logs.text();
    assert_eq!(text.matches("Intercom is failing every call").count(), 1, "{text}");
    assert!(text.contains("set INTERCOM_ACCESS_TOKEN to a valid token, and INTERCOM_REGION"), "{text}");

    // The token is renewed: the next probe succeeds and every event goes on, none dead-lettered.
    sandbox.set_outage(None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    until_settled(&forwarder, event).await;
    assert!(forwarder.dead_letter().letters().is_empty());
    assert_eq!(sandbox.state().contacts.len(), 12);
}

#[tokio::test]
async fn in_a_rate_limit_storm_the_client_waits_for_the_reset_without_calling_and_nothing_is_lost() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    // A call waits for a reset at most 1 s here (11 s in Lambda, under its 30 s); this one is 3 s away.
    let client =
        sandbox_client(&sandbox, &sandbox.token(), Duration::from_secs(2)).with_max_wait(Duration::from_secs(1));
    let executor = Executor::new(client, true, NonZeroUsize::new(100).unwrap());
    let forwarder = Forwarder::new(executor, MemoryDeadLetter::new(), compressed());
    let event = identifies(10).await;
    sandbox.set_outage(Some(Outage::RateLimited { reset_in: Duration::from_secs(3) }));
    let started = Instant::now();
    let report = handle(&forwarder, &event).await;
    assert!(started.elapsed() < Duration::from_secs(3), "no call sits out a reset farther than it may wait");
    assert!(retries(&report).iter().all(|r| r.contains("429")), "{report:?}");
    // The first answers told the client when the window resets: it calls no more until then.
    let calls = sandbox.requests().len();
    assert!(calls <= 8, "{calls} calls");
    sandbox.set_outage(None);
    tokio::time::sleep(Duration::from_secs(4)).await;
    until_settled(&forwarder, event).await;
    assert!(forwarder.dead_letter().letters().is_empty());
    assert_eq!(sandbox.state().contacts.len(), 10);
}

#[tokio::test]
async fn one_event_intercom_keeps_failing_holds_back_only_its_own_person() {
    let (logs, _guard) = Captured::start(tracing::Level::INFO, false);
    let faults = Faults { seed: 4, server_errors: 1.0, only_matching: Some("u-0".into()), ..Faults::default() };
    let sandbox = SandboxServer::start(SandboxOptions { faults, ..SandboxOptions::default() }, 0).await.unwrap();
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), compressed());
    let event = identifies(4).await;
    // Its receives one after another, each trying its call 4 times: far more failures in a row than the breaker's 3,
    // but all from one event.
    for _ in 0..3 {
        let report = handle(&forwarder, &event).await;
        assert!(matches!(report.records[0].outcome, Outcome::Retry { .. }), "{report:?}");
        let others = &report.records[1..];
        assert!(others.iter().all(|r| !matches!(r.outcome, Outcome::Retry { .. })), "{report:?}");
    }
    assert!(!forwarder.executor().breaker().is_open());
    assert!(!logs.text().contains("Intercom is failing every call"), "{}", logs.text());
    assert!(forwarder.dead_letter().letters().is_empty(), "within its horizon");
}

#[tokio::test]
async fn a_handed_back_message_comes_again_after_its_own_wait_not_the_queues_visibility_timeout() {
    let sqs = client(&endpoint());
    // The queue's own visibility timeout: 30 s.
    let queue_url = fifo_queue(&sqs, 30).await;
    for (n, group) in ["a", "b"].iter().enumerate() {
        let sent = sqs.send_message().queue_url(&queue_url).message_body("{}").message_group_id(*group);
        sent.message_deduplication_id(format!("m-{n}")).send().await.unwrap();
    }
    let poller = SqsPoller::new(sqs.clone(), &queue_url, Duration::from_secs(1));
    let event = poller.receive(10).await.unwrap();
    assert_eq!(event.records.len(), 2);
    let ids: Vec<String> = event.records.iter().map(|r| r.id().to_owned()).collect();
    // One back in 2 s, one in 20 s (the event source would leave both for 30 s).
    let waits = [(ids[0].clone(), Duration::from_secs(2)), (ids[1].clone(), Duration::from_secs(20))];
    poller.acknowledge(&event, &waits).await.unwrap();
    assert!(poller.receive(10).await.unwrap().records.is_empty(), "neither is back at once");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let back = poller.receive(10).await.unwrap();
    let back: Vec<(&str, u32)> = back.records.iter().map(|r| (r.id(), r.receive_count())).collect();
    assert_eq!(back, [(ids[0].as_str(), 2)], "the first after its 2 s, the other still waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_replay_against_an_intercom_that_is_down_for_a_while_delivers_everything_once_it_is_back() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let dir = scratch("replay-outage");
    let lines: String = (0..30)
        .map(|n| {
            json!({"type": "track", "userId": format!("u-{}", n % 6), "event": "Tried", "messageId": format!("m-{n}"),
            "timestamp": format!("2026-11-30T12:00:{n:02}Z")})
        })
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(dir.join("events.ndjson"), lines).unwrap();
    sandbox.set_outage(Some(Outage::Down));
    let back = Arc::new(AtomicBool::new(false));
    let (outage, ended) = (Arc::new(sandbox), back.clone());
    let intercom = outage.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        intercom.set_outage(None);
        ended.store(true, std::sync::atomic::Ordering::Release);
    });
    let token = outage.token();
    let env = move |name: &str| (name == "INTERCOM_ACCESS_TOKEN").then(|| token.clone());
    let tally = Arc::new(Tally::new(true, false));
    let options = ReplayOptions {
        paths: vec![dir],
        destination: Destination::Url(outage.url.clone()),
        write_keys: options().write_keys,
    };
    replay(options, env, tally.clone()).await.unwrap();
    assert!(back.load(std::sync::atomic::Ordering::Acquire), "the replay outlasted the outage");
    let report = tally.report();
    assert_eq!((report.accepted, report.delivered, report.dead_lettered.len()), (30, 30, 0));
    assert!(report.handed_back > 0, "it was handed back meanwhile");
    let state = outage.state();
    assert_eq!(state.events.len(), 30, "each event once");
    // In each person's order (their events were sent a second apart), though every one was handed back meanwhile.
    let mut last: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for event in &state.events {
        let previous = last.insert(&event.contact_id, event.created_at);
        assert!(previous.is_none_or(|previous| previous < event.created_at), "out of order: {:?}", state.events);
    }
    assert_eq!(last.len(), 6);
    let failed = outage.requests().iter().filter(|r| r.status == 503).count();
    assert!(failed <= 12, "{failed} calls met the outage: the breaker held the rest back");
}
