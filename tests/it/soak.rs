//! Nothing lost under faults: a seeded day of events through the real path (ingest → SQS FIFO on moto → forwarders fed
//! as Lambda's event source feeds them → the sandbox over HTTP) while Intercom answers 5xx, 429 and too late,
//! SendMessageBatch entries fail and forwarder invocations die mid-batch, and, for a stretch each, Intercom is down
//! (503 on every call), the token is revoked (401) and a 429 storm holds the rate limit; then every messageId ingest
//! accepted is found in exactly one place: delivered, skipped, or in the DLQ with a reason (none for those stretches), and
//! what each stretch cost in Intercom calls and invocations is printed.
//!
//! 2,000 events by default (CI); `SOAK_EVENTS=100000 SOAK_SEED=7 scripts/test soak -- --nocapture` for the long run.
//! The figures, and a line for BENCHMARKS.md, are printed (shown with `--nocapture`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use intercom_relay::local::{GenerateOptions, generate};
use intercom_relay::sandbox::{Faults, MAX_EVENT_NAMES, Outage, SandboxOptions, SandboxServer, SandboxState};
use intercom_relay_lambda::event::format_timestamp;
use intercom_relay_lambda::forward::{BatchReport, BreakerPolicy, Executor, ForwardOptions, Forwarder, Outcome};
use intercom_relay_lambda::identity::MemoryIdentities;
use intercom_relay_lambda::ingest::Ingest;
use intercom_relay_lambda::intercom::IntercomClient;
use intercom_relay_lambda::queue::SqsQueue;
use intercom_relay_lambda::queue::{SqsDeadLetter, SqsPoller};
use intercom_relay_lambda::retry::RetryPolicy;
use intercom_relay_lambda::settings::Settings;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::fault_proxy::{self, FaultProxy};
use crate::forward_batch::fifo_queue;
use crate::helpers::{options, post, sandbox_client, send};
use crate::sqs::{client, drain, endpoint};

/// Events in the CI run; `SOAK_EVENTS` overrides it.
const CI_EVENTS: usize = 2_000;
/// The main queue's visibility timeout: what a handed-back or orphaned message waits before it comes again.
const VISIBILITY: Duration = Duration::from_secs(3);
/// Forwarders polling at once (the event source's MaximumConcurrency).
const FORWARDERS: u64 = 4;
/// Accepted events not yet settled, at most: moto scans its whole queue on every call, so ingest waits for the
/// forwarders rather than filling it with 100,000 messages.
const IN_FLIGHT: usize = 1_500;
/// The first event's time; each event gets its own second, so distinct events never look alike to Intercom's
/// de-duplication (same contact, name and created_at) and each data event Intercom holds names the event it came from.
const START: i64 = 1_767_225_600;
/// The contact that fills the workspace's event names before the run.
const PRIMER: &str = "soak-primer";
/// A track name Intercom refuses once the workspace holds its 120 names: the events that must be dead-lettered.
const REFUSED_NAME: &str = "Legacy Import";

/// Destination settings that skip some of the generated events: one track name and the account pages.
const SETTINGS: &str = r#"{
  "events": {"deny": ["Report Exported"], "rename": {"Order Completed": "order-completed"}},
  "trigger_paths": [{"match": "/account/*", "action": "dont_fire"}]
}"#;

fn forward_options() -> ForwardOptions {
    ForwardOptions {
        concurrency: 8,
        // Fewer tries than the default, so some events outlast them and are handed back to SQS.
        retry: RetryPolicy { attempts: 2, min_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200) },
        // Slow answers (600 ms) are beyond it: the sandbox did the work, the client cannot know, and tries again.
        call_timeout: Duration::from_millis(300),
        margin: Duration::from_millis(500),
        // The deployed waits (10 s to 15 min, 24 h, 5 min) compressed: a run of minutes plays hours.
        redelivery: RetryPolicy {
            attempts: u32::MAX,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(3),
        },
        horizon: Duration::from_secs(600),
        alias_wait: Duration::from_secs(3),
        // `SOAK_BREAKER_THRESHOLD=1000000` turns the breaker off, for what the outages cost without it.
        breaker: BreakerPolicy {
            threshold: std::env::var("SOAK_BREAKER_THRESHOLD").ok().and_then(|n| n.parse().ok()).unwrap_or(5),
            open_min: Duration::from_millis(500),
            open_max: Duration::from_secs(3),
        },
        ..ForwardOptions::default()
    }
}

fn intercom_faults(seed: u64) -> Faults {
    Faults {
        seed,
        server_errors: 0.06,
        rate_limited: 0.005,
        slow: 0.03,
        slow_by: Duration::from_millis(600),
        only_matching: None,
        outage: None,
    }
}

/// How long each outage lasts (`SOAK_OUTAGE_SECONDS`), after a lead-in of normal running; time is compressed as in
/// [`forward_options`] (a wait of 0.5 s to 3 s plays 10 s to 15 min), so 4 s plays an outage of hours.
const OUTAGE: Duration = Duration::from_secs(4);
const LEAD_IN: Duration = Duration::from_secs(5);

/// The stretches of a run, in order: what Intercom does during each.
const PHASES: [(&str, Option<Outage>); 5] = [
    ("normal", None),
    ("intercom down (503)", Some(Outage::Down)),
    ("token revoked (401)", Some(Outage::Unauthorized)),
    ("429 storm", Some(Outage::RateLimited { reset_in: OUTAGE })),
    ("normal again", None),
];

/// Share of invocations cut off at a random point (as a crash or a Lambda timeout would): nothing acknowledged.
const DEATHS: f64 = 0.1;
/// Share of SendMessageBatch entries failed by the proxy in front of moto.
const ENTRY_FAILURES: f64 = 0.05;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_is_delivered_skipped_or_dead_lettered_once_under_faults() {
    let events = std::env::var("SOAK_EVENTS").ok().and_then(|n| n.replace('_', "").parse().ok()).unwrap_or(CI_EVENTS);
    let seed = std::env::var("SOAK_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(7);
    let figures = soak(events, seed).await;
    figures.print();
    assert_eq!(figures.accepted, events, "the producer retries until every event is accepted");
    assert!(figures.lost.is_empty(), "accepted but found nowhere: {:?}", first(&figures.lost));
    assert!(figures.in_two_places.is_empty(), "found in two places: {:?}", first(&figures.in_two_places));
    assert!(figures.unexpected.is_empty(), "not where the generator meant it: {:?}", first(&figures.unexpected));
    assert!(figures.unattributed.is_empty(), "Intercom holds what nobody sent: {:?}", first(&figures.unattributed));
    assert!(figures.dead_lettered > 0 && figures.skipped > 0 && figures.delivered > 0, "every outcome is exercised");
    assert!(figures.deaths > 0 && figures.hand_backs > 0 && figures.entries_failed > 0, "the faults happened");
    // The outages cost delay and a few calls: nothing is dead-lettered for them, and the breaker keeps calls few.
    assert!(!figures.dead_letter_codes.contains_key("retries_exhausted"), "{:?}", figures.dead_letter_codes);
    assert_eq!(figures.phases.len(), PHASES.len(), "every stretch was played: {:?}", figures.phases);
    let breaker = forward_options().breaker.threshold < 1000;
    for phase in figures.phases.iter().filter(|p| p.outage && breaker) {
        assert!(phase.invocations > 0, "events came in during {}: {:?}", phase.name, figures.phases);
        // Per forwarder: the calls in flight when it opened (8 people), the ones that opened it, and a probe per wait.
        let bound = FORWARDERS as usize * 25;
        assert!(
            phase.calls <= bound,
            "{} cost {} Intercom calls (at most {bound}): {:?}",
            phase.name,
            phase.calls,
            figures.phases
        );
    }
    // A copy sent again to a twin lead (made while the search index lagged) is another contact's event to Intercom.
    let unabsorbed = figures.duplicate_event_submissions - figures.absorbed;
    assert!(
        unabsorbed == 0 || (figures.duplicate_leads > 0 && unabsorbed <= figures.lead_copies),
        "every data event submitted twice was absorbed by Intercom's de-duplication, but copies of a lead's that reached \
         its twin: {} absorbed of {} ({} for leads, {} twins)",
        figures.absorbed,
        figures.duplicate_event_submissions,
        figures.lead_copies,
        figures.duplicate_leads
    );
}

fn first<T: std::fmt::Debug>(items: &[T]) -> &[T] {
    &items[..items.len().min(5)]
}

/// Where the generator means an event to end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Delivered,
    /// Skipped, by this rule (`events.deny[0]`) or for this reason (`no_contact_identifier`).
    Skipped(String),
    /// Dead-lettered with this error code.
    DeadLettered(String),
}

/// One generated event, as the accounting needs it.
#[derive(Clone, Debug)]
struct Planned {
    message_id: String,
    kind: String,
    user_id: Option<String>,
    /// Unix seconds, unique to the event.
    at: i64,
    /// The company an identify or group attaches the person to.
    company: Option<String>,
    expect: Expect,
}

/// The day `intercom-relay generate` makes, each event given its own second, identifies and groups a `soak_id` trait
/// naming their messageId, and a seeded few tracks changed: renamed to a name Intercom will refuse, or turned off for
/// Intercom in their `integrations`.
fn day(events: usize, seed: u64) -> (Vec<Value>, Vec<Planned>) {
    let users = users(events);
    let start = OffsetDateTime::from_unix_timestamp(START).unwrap();
    let mut ndjson = Vec::new();
    generate(&GenerateOptions { events, users, seed, start, days: 1 }, &mut ndjson).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut generated: Vec<Value> =
        String::from_utf8(ndjson).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let mut planned = Vec::with_capacity(events);
    for (index, event) in generated.iter_mut().enumerate() {
        let at = START + index as i64;
        event["timestamp"] = json!(format_timestamp(OffsetDateTime::from_unix_timestamp(at).unwrap()));
        let message_id = event["messageId"].as_str().unwrap().to_owned();
        let kind = event["type"].as_str().unwrap().to_owned();
        let user_id = event["userId"].as_str().map(str::to_owned);
        let mut company = None;
        let expect = match kind.as_str() {
            "identify" | "group" => {
                // A name serves one model only in Intercom: a company's is its own.
                let name = if kind == "group" { "soak_group_id" } else { "soak_id" };
                event["traits"][name] = json!(message_id);
                company = match kind.as_str() {
                    "group" => event["groupId"].as_str(),
                    _ => event["traits"]["company"]["id"].as_str(),
                }
                .map(str::to_owned);
                Expect::Delivered
            }
            "track" => match rng.u32(0..1000) {
                0..10 => {
                    event["event"] = json!(REFUSED_NAME);
                    Expect::DeadLettered("event_name_limit_reached".into())
                }
                10..30 => {
                    event["integrations"] = json!({"Intercom": false});
                    Expect::Skipped("integrations.Intercom".into())
                }
                _ if event["event"] == "Report Exported" => Expect::Skipped("events.deny[0]".into()),
                _ => Expect::Delivered,
            },
            "page" if event["context"]["page"]["path"].as_str().is_some_and(|p| p.starts_with("/account/")) => {
                Expect::Skipped("trigger_paths[0]".into())
            }
            // Half the visitors' views come from a pool of visitors who left an email: leads, met again and again, on
            // any forwarder, so the search index's lag can make twins of them (counted, see `duplicate_leads`).
            "page" if user_id.is_none() && rng.bool() => {
                let visitor = rng.usize(..visitors(events));
                event["anonymousId"] = json!(format!("visitor-{visitor:04}"));
                event["context"]["traits"] = json!({"email": format!("visitor{visitor}@example.com")});
                Expect::Delivered
            }
            "page" if user_id.is_none() => Expect::Skipped("no_contact_identifier".into()),
            // The generator's aliases name the user's own anonymousId, which their identifies carry: the identity
            // store knows it as the user when their first identify made them (delivered, nothing to merge), else
            // Intercom never heard of it (skipped; see `account`).
            "alias" => Expect::Skipped("alias_previous_contact_unknown".into()),
            _ => Expect::Delivered,
        };
        planned.push(Planned { message_id, kind, user_id, at, company, expect });
    }
    (generated, planned)
}

/// Visitors who leave an email, in a day of `events`.
fn visitors(events: usize) -> usize {
    (events / 100).clamp(5, 200)
}

/// People in a day of `events`: about ten events each, as in production, within what the sandbox searches quickly.
fn users(events: usize) -> usize {
    (events / 10).clamp(20, 2_000)
}

/// The Intercom event name a delivered track, page or screen gets (as Intercom keeps it: lower case).
fn intercom_name(event: &Value) -> Option<String> {
    let name = match event["type"].as_str()? {
        "track" if event["event"] == "Order Completed" => "order-completed",
        "track" => event["event"].as_str()?,
        "page" => "page_viewed",
        "screen" => "screen_viewed",
        _ => return None,
    };
    Some(name.to_lowercase())
}

/// The shared state of one run.
struct Run {
    /// The identity store every forwarder shares, as the template's DynamoDB table is: kept across cold starts.
    identities: Arc<MemoryIdentities>,
    sqs: Client,
    queue_url: String,
    dlq_url: String,
    sandbox: SandboxServer,
    settings: Arc<Settings>,
    poller: SqsPoller,
    stop: AtomicBool,
    reports: Mutex<Vec<BatchReport>>,
    /// messageIds with a final outcome in some report (delivered, skipped, dead-lettered).
    settled: Mutex<HashSet<String>>,
    deaths: AtomicUsize,
    invocations: AtomicUsize,
    failed_deletes: AtomicUsize,
    failed_receives: AtomicUsize,
    /// When each invocation began, in Unix milliseconds.
    invoked_at: Mutex<Vec<u64>>,
    /// When each of [`PHASES`] began, in Unix milliseconds.
    phase_starts: Mutex<Vec<u64>>,
}

impl Run {
    /// A forwarder as a new execution environment builds it: its own client and empty caches (the identity store is
    /// the stack's, shared).
    fn cold_start(&self) -> Forwarder<IntercomClient, SqsDeadLetter> {
        let options = forward_options();
        // A call waits for a rate-limit reset at most 1 s, as the deployed 11 s are to a 30 s timeout.
        let client = sandbox_client(&self.sandbox, &self.sandbox.token(), options.call_timeout)
            .with_max_wait(Duration::from_secs(1));
        let executor =
            Executor::new(client, true, NonZeroUsize::new(1000).unwrap()).with_identities(self.identities.clone());
        Forwarder::new(executor, SqsDeadLetter::new(self.sqs.clone(), &self.dlq_url), options)
            .with_settings(self.settings.clone())
    }

    /// How many messages the main queue still holds, visible or not.
    async fn queue_depth(&self) -> usize {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("GetQueueAttributes");
        let attributes = attributes.attributes().cloned().unwrap_or_default();
        attributes.values().map(|n| n.parse::<usize>().expect("a count")).sum()
    }
}

/// One forwarder's life: receive up to 10, forward within the visibility timeout, delete what was not handed back; now
/// and then the invocation dies partway and nothing is deleted or reported.
async fn forwarder_loop(run: Arc<Run>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut forwarder = run.cold_start();
    while !run.stop.load(Ordering::Acquire) {
        let received = Instant::now();
        let event = match run.poller.receive(10).await {
            Ok(event) if event.records.is_empty() => continue,
            Ok(event) => event,
            Err(_) => {
                // As the event source does: try again; the messages stay in the queue meanwhile.
                run.failed_receives.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        run.invocations.fetch_add(1, Ordering::Relaxed);
        run.invoked_at.lock().unwrap().push(now_ms());
        let deadline = received + VISIBILITY;
        let death = (rng.f64() < DEATHS).then(|| received + Duration::from_millis(rng.u64(0..400)));
        // Without a death the invocation ends by itself before its deadline; the cut-off is only a backstop.
        let cut = death.unwrap_or(deadline + Duration::from_secs(60));
        let report = match tokio::time::timeout_at(cut, forwarder.handle(&event, deadline)).await {
            Ok(report) => report,
            Err(_) => {
                run.deaths.fetch_add(1, Ordering::Relaxed);
                forwarder = run.cold_start();
                continue;
            }
        };
        if run.poller.acknowledge(&event, &report.handed_back()).await.is_err() {
            // Not deleted: they come again after the visibility timeout, as with Lambda.
            run.failed_deletes.fetch_add(1, Ordering::Relaxed);
        }
        let settled = report.records.iter().filter(|r| !matches!(r.outcome, Outcome::Retry { .. }));
        run.settled.lock().unwrap().extend(settled.filter_map(|r| r.message_id.clone()));
        run.reports.lock().unwrap().push(report);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Plays [`PHASES`]: normal for the lead-in, then each outage for `outage`, then normal to the end.
async fn play_phases(run: Arc<Run>, outage: Duration) {
    for (index, (_, what)) in PHASES.iter().enumerate() {
        run.phase_starts.lock().unwrap().push(now_ms());
        run.sandbox.set_outage(*what);
        if index + 1 < PHASES.len() {
            tokio::time::sleep(if index == 0 { LEAD_IN } else { outage }).await;
        }
    }
}

/// Fills the workspace to Intercom's 120 event names: the names the day's events use, then retired ones.
async fn prime_event_names(sandbox: &SandboxServer, events: &[Value], planned: &[Planned]) {
    let mut names: Vec<String> = events
        .iter()
        .zip(planned)
        .filter(|(_, p)| p.expect == Expect::Delivered)
        .filter_map(|(event, _)| intercom_name(event))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(names.len() < MAX_EVENT_NAMES, "{names:?}");
    let mut retired = 0;
    while names.len() < MAX_EVENT_NAMES {
        retired += 1;
        names.push(format!("retired-event-{retired}"));
    }
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        http.post(format!("{}{path}", sandbox.url))
            .bearer_auth(sandbox.token())
            .header("Intercom-Version", "2.16")
            .json(&body)
            .send()
    };
    let created = call("/contacts", json!({"role": "user", "external_id": PRIMER})).await.unwrap();
    assert_eq!(created.status(), 200);
    for name in names {
        let submitted = call("/events", json!({"event_name": name, "created_at": 1, "user_id": PRIMER})).await.unwrap();
        assert_eq!(submitted.status(), 202, "{name}");
    }
}

/// The client's side: the day posted as SDKs post it (batches of 1 to 40), each refused request sent again until it
/// is accepted; never more than [`IN_FLIGHT`] accepted events unsettled. Returns the accepted messageIds and retries.
async fn produce(run: &Run, ingest: &Ingest<SqsQueue>, events: &[Value], seed: u64) -> (Vec<String>, usize) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let (mut accepted, mut retries, mut next) = (Vec::with_capacity(events.len()), 0, 0);
    while next < events.len() {
        while accepted.len().saturating_sub(run.settled.lock().unwrap().len()) > IN_FLIGHT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let batch = &events[next..(next + rng.usize(1..=40)).min(events.len())];
        next += batch.len();
        let body = json!({ "batch": batch }).to_string();
        loop {
            let answer = send(ingest, post("/v1/batch", &body)).await;
            match answer.status.as_u16() {
                200 => {
                    assert_eq!(answer.body["success"], true, "{}", answer.body);
                    accepted.extend(batch.iter().map(|e| e["messageId"].as_str().unwrap().to_owned()));
                    break;
                }
                // Some entries were not taken even after the queue's own retries: as an SDK would, send it all again
                // (FIFO de-duplication drops the copies of what did get in).
                503 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                status => panic!("ingest answered {status}: {}", answer.body),
            }
        }
    }
    (accepted, retries)
}

/// What the run came to.
#[derive(Debug, Default)]
struct Figures {
    events: usize,
    seed: u64,
    users: usize,
    accepted: usize,
    ingest_retries: usize,
    entries_failed: usize,
    delivered: usize,
    skipped: usize,
    skip_reasons: BTreeMap<String, usize>,
    dead_lettered: usize,
    dead_letter_codes: BTreeMap<String, usize>,
    lost: Vec<String>,
    in_two_places: Vec<String>,
    unexpected: Vec<String>,
    unattributed: Vec<String>,
    /// A person's data events Intercom took in another order than they were sent in (each has its own second). Counted,
    /// not asserted: moto 5.2.5 reorders a message group whose messages were in flight together and come back together
    /// (a dead invocation's batch): it clears a message's in-flight mark only when a receive passes over it while
    /// visible, and skips the group's first while a later one still holds the mark, so the later one goes out first
    /// (received together, not deleted, both expired: a receive of one gives the second). SQS FIFO hands the first out
    /// first. tests/it/outage.rs checks each person's order through the in-memory queue, which keeps SQS's rule.
    out_of_order: Vec<String>,
    invocations: usize,
    hand_backs: usize,
    deaths: usize,
    failed_deletes: usize,
    failed_receives: usize,
    max_receives: u32,
    phases: Vec<PhaseFigures>,
    intercom_faults: BTreeMap<String, u64>,
    intercom_calls: usize,
    /// Events Intercom was sent more than once (a retry after a slow answer, a redelivery after a death).
    duplicates_seen: usize,
    duplicate_event_submissions: usize,
    absorbed: usize,
    /// Contact and company writes carried out again: idempotent updates, nothing to absorb.
    rewrites: usize,
    /// Leads, and emails held by more than one lead: twins made while the search index lagged.
    leads: usize,
    duplicate_leads: usize,
    /// Data-event copies for leads: the only copies that can reach a twin, which Intercom then holds as another's event.
    lead_copies: usize,
    search_lag: u64,
    seconds: f64,
}

/// What one stretch of the run cost.
#[derive(Debug, Default)]
struct PhaseFigures {
    name: &'static str,
    outage: bool,
    seconds: f64,
    calls: usize,
    invocations: usize,
}

async fn soak(events: usize, seed: u64) -> Figures {
    let began = std::time::Instant::now();
    let (day, planned) = day(events, seed);
    let sqs = client(&endpoint());
    let queue_url = fifo_queue(&sqs, VISIBILITY.as_secs() as u32).await;
    let dlq_url = fifo_queue(&sqs, 30).await;
    // The search index lags as Intercom's does (5 s unless SOAK_SEARCH_LAG says otherwise; BENCHMARKS.md has a 60 s run).
    let search_lag = std::env::var("SOAK_SEARCH_LAG").ok().and_then(|n| n.parse().ok());
    let search_lag = search_lag.unwrap_or(SandboxOptions::default().search_lag);
    let intercom = SandboxOptions { rate_limit: 1_000_000, search_lag, ..SandboxOptions::default() };
    let sandbox = SandboxServer::start(intercom, 0).await.unwrap();
    prime_event_names(&sandbox, &day, &planned).await;
    sandbox.set_faults(intercom_faults(seed));
    let proxy = FaultProxy::start(
        endpoint(),
        fault_proxy::Faults { share: ENTRY_FAILURES, seed, ..fault_proxy::Faults::default() },
    )
    .await;
    let retry = RetryPolicy { attempts: 2, min_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) };
    let ingest = Ingest::new(options(), SqsQueue::new(client(&proxy.url), &queue_url, retry, Duration::from_secs(20)));
    let run = Arc::new(Run {
        identities: Arc::new(MemoryIdentities::new()),
        poller: SqsPoller::new(sqs.clone(), &queue_url, Duration::from_secs(1)),
        sqs: sqs.clone(),
        queue_url,
        dlq_url,
        sandbox,
        settings: Arc::new(Settings::parse(SETTINGS).unwrap()),
        stop: AtomicBool::new(false),
        reports: Mutex::default(),
        settled: Mutex::default(),
        deaths: AtomicUsize::new(0),
        invocations: AtomicUsize::new(0),
        failed_deletes: AtomicUsize::new(0),
        failed_receives: AtomicUsize::new(0),
        invoked_at: Mutex::default(),
        phase_starts: Mutex::default(),
    });
    let forwarders: Vec<_> =
        (0..FORWARDERS).map(|n| tokio::spawn(forwarder_loop(run.clone(), seed.wrapping_add(n)))).collect();
    let outage = std::env::var("SOAK_OUTAGE_SECONDS").ok().and_then(|n| n.parse().ok()).map(Duration::from_secs);
    let phases = tokio::spawn(play_phases(run.clone(), outage.unwrap_or(OUTAGE)));
    let (accepted, ingest_retries) = produce(&run, &ingest, &day, seed).await;
    phases.await.expect("the phases played");

    // Done when the queue has held nothing, in flight or not, twice in a row; a queue that never empties fails the test.
    let give_up = Instant::now() + Duration::from_secs(120) + Duration::from_millis(events as u64 * 5);
    let mut empty = 0;
    while empty < 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        empty = if run.queue_depth().await == 0 { empty + 1 } else { 0 };
        if Instant::now() >= give_up {
            // What is left, and what the forwarders last said of it, for the person reading the failure.
            let left = run.queue_depth().await;
            let reports = run.reports.lock().unwrap();
            let recent: Vec<String> = reports
                .iter()
                .rev()
                .take(5)
                .flat_map(|r| &r.records)
                .map(|r| format!("{} {:?}: {:?}", r.sqs_message_id, r.event_type, r.outcome))
                .collect();
            panic!("the queue never drained: {left} messages left; the last outcomes: {recent:#?}");
        }
    }
    run.stop.store(true, Ordering::Release);
    for forwarder in forwarders {
        forwarder.await.expect("a forwarder panicked");
    }
    let seconds = began.elapsed().as_secs_f64();
    let dead_letters = drain(&run.sqs, &run.dlq_url).await;
    let entries_failed = proxy.faults.lock().unwrap().failed_entries;
    let reports = std::mem::take(&mut *run.reports.lock().unwrap());
    let mut figures =
        account(&run.sandbox.state(), &run.sandbox.requests(), &reports, &dead_letters, &planned, &accepted);
    figures.events = events;
    figures.seed = seed;
    figures.users = users(events);
    figures.ingest_retries = ingest_retries;
    figures.entries_failed = entries_failed;
    figures.invocations = run.invocations.load(Ordering::Relaxed);
    figures.deaths = run.deaths.load(Ordering::Relaxed);
    figures.failed_deletes = run.failed_deletes.load(Ordering::Relaxed);
    figures.failed_receives = run.failed_receives.load(Ordering::Relaxed);
    figures.seconds = seconds;
    figures.search_lag = search_lag;
    figures.phases = phase_figures(&run, now_ms());
    figures
}

/// Calls and invocations in each stretch.
fn phase_figures(run: &Run, end_ms: u64) -> Vec<PhaseFigures> {
    let starts = run.phase_starts.lock().unwrap().clone();
    let requests = run.sandbox.requests();
    let invoked = run.invoked_at.lock().unwrap().clone();
    let mut figures = Vec::new();
    for (index, from) in starts.iter().enumerate() {
        let to = starts.get(index + 1).copied().unwrap_or(end_ms);
        let within = |at: u64| (*from..to).contains(&at);
        figures.push(PhaseFigures {
            name: PHASES[index].0,
            outage: PHASES[index].1.is_some(),
            seconds: (to - from) as f64 / 1000.0,
            calls: requests.iter().filter(|r| within(r.at_ms)).count(),
            invocations: invoked.iter().filter(|at| within(**at)).count(),
        });
    }
    figures
}

/// Finds every accepted messageId: in what Intercom holds and was sent, in the forwarders' reports, in the DLQ.
fn account(
    state: &SandboxState,
    requests: &[intercom_relay::sandbox::RecordedRequest],
    reports: &[BatchReport],
    dead_letters: &[crate::sqs::Received],
    planned: &[Planned],
    accepted: &[String],
) -> Figures {
    let mut figures = Figures { accepted: accepted.len(), ..Figures::default() };
    let by_second: HashMap<i64, &Planned> = planned.iter().map(|p| (p.at, p)).collect();
    let by_id: HashMap<&str, &Planned> = planned.iter().map(|p| (p.message_id.as_str(), p)).collect();
    let external_id = |contact: &str| state.contacts.get(contact).and_then(|c| c.external_id.clone());
    let company_of = |company_id: &str| state.companies.values().find(|c| c.company_id == company_id).map(|c| &c.id);
    let attached = |user: &Option<String>, company: &str| {
        let contact = state.contacts.values().find(|c| c.external_id.as_ref() == user.as_ref());
        contact.zip(company_of(company)).is_some_and(|(contact, id)| contact.companies.contains(id))
    };

    // Delivered: a data event Intercom holds, at the event's own second, for its person; a contact or company written
    // with its soak_id (and the person attached to the company, where it names one).
    let mut delivered: HashSet<String> = HashSet::new();
    for event in state.events.iter().filter(|e| external_id(&e.contact_id).as_deref() != Some(PRIMER)) {
        match by_second.get(&event.created_at) {
            Some(p)
                if p.user_id == external_id(&event.contact_id)
                    && matches!(p.kind.as_str(), "track" | "page" | "screen") =>
            {
                delivered.insert(p.message_id.clone());
            }
            _ => figures.unattributed.push(format!("{} at {}", event.event_name, event.created_at)),
        }
    }
    // Order: the data events of each user's lane, as Intercom took them in (its list is in arrival order, and a copy of
    // one it holds is absorbed, not added), have the seconds they were generated with, which grow along the lane.
    let mut last_second: HashMap<&str, i64> = HashMap::new();
    for event in &state.events {
        let Some(p) = by_second.get(&event.created_at) else { continue };
        let Some(user) = p.user_id.as_deref().filter(|user| external_id(&event.contact_id).as_deref() == Some(*user))
        else {
            continue;
        };
        let last = last_second.entry(user).or_insert(i64::MIN);
        if event.created_at < *last {
            figures.out_of_order.push(format!("{user}: {} after {}", event.created_at, *last));
        }
        *last = (*last).max(event.created_at);
    }
    let mut writes: HashMap<&str, usize> = HashMap::new();
    for request in requests.iter().filter(|r| (200..300).contains(&r.status)) {
        let Some(body) = &request.body else { continue };
        let soak_id = match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/events") => {
                by_second.get(&body["created_at"].as_i64().unwrap_or_default()).map(|p| p.message_id.as_str())
            }
            ("POST" | "PUT", path) if path.starts_with("/contacts") => body["custom_attributes"]["soak_id"].as_str(),
            ("POST", "/companies") => body["custom_attributes"]["soak_group_id"].as_str(),
            _ => None,
        };
        if let Some(id) = soak_id.and_then(|id| by_id.get(id)).map(|p| p.message_id.as_str()) {
            *writes.entry(id).or_default() += 1;
        }
    }
    for p in planned.iter().filter(|p| matches!(p.kind.as_str(), "identify" | "group")) {
        let written = writes.contains_key(p.message_id.as_str());
        if written && p.company.as_deref().is_none_or(|company| attached(&p.user_id, company)) {
            delivered.insert(p.message_id.clone());
        }
    }
    for (id, count) in writes.iter().filter(|(_, count)| **count > 1) {
        figures.duplicates_seen += 1;
        match by_id[id].kind.as_str() {
            "identify" | "group" => figures.rewrites += count - 1,
            _ => {
                figures.duplicate_event_submissions += count - 1;
                if by_id[id].user_id.is_none() {
                    figures.lead_copies += count - 1;
                }
            }
        }
    }
    figures.absorbed = state.duplicate_events as usize;
    let mut leads_by_email: HashMap<&str, usize> = HashMap::new();
    for lead in state.contacts.values().filter(|c| c.role == "lead") {
        *leads_by_email.entry(lead.email.as_deref().unwrap_or_default()).or_default() += 1;
    }
    figures.leads = leads_by_email.values().sum();
    figures.duplicate_leads = leads_by_email.values().filter(|n| **n > 1).count();

    // Skipped, with the rule or reason, from the forwarders' reports.
    let mut skipped: HashMap<String, String> = HashMap::new();
    for record in reports.iter().flat_map(|r| &r.records) {
        figures.intercom_calls += record.outcome.calls();
        match &record.outcome {
            Outcome::Skipped { reason, skipped_by, .. } => {
                let why = skipped_by.clone().unwrap_or_else(|| reason.clone());
                skipped.insert(record.message_id.clone().unwrap_or_default(), why);
            }
            Outcome::Retry { .. } => figures.hand_backs += 1,
            // Nothing for Intercom to hold: the store knew the alias's visitor as the user already.
            Outcome::Delivered { .. } if record.event_type.as_deref() == Some("alias") => {
                delivered.insert(record.message_id.clone().unwrap_or_default());
            }
            _ => {}
        }
    }

    // Dead-lettered: in the DLQ, with the reason as attributes.
    let mut in_dlq: HashMap<String, String> = HashMap::new();
    for letter in dead_letters {
        let envelope: Value = serde_json::from_str(&letter.body).expect("a dead letter holds the envelope as it came");
        let code = letter.attributes.get("error_code").expect("a dead letter says why").clone();
        assert!(letter.attributes.get("error_message").is_some_and(|m| !m.is_empty()), "{:?}", letter.attributes);
        in_dlq.insert(envelope["message_id"].as_str().unwrap().to_owned(), code);
        let receives: u32 = letter.attributes["receive_count"].parse().unwrap();
        figures.max_receives = figures.max_receives.max(receives);
    }

    let accepted_set: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    for id in accepted {
        let places = [delivered.contains(id), skipped.contains_key(id), in_dlq.contains_key(id)];
        let actual = match places {
            [true, false, false] => Expect::Delivered,
            [false, true, false] => Expect::Skipped(skipped[id].clone()),
            [false, false, true] => Expect::DeadLettered(in_dlq[id].clone()),
            [false, false, false] => {
                figures.lost.push(format!("{id} ({})", by_id[id.as_str()].kind));
                continue;
            }
            _ => {
                figures.in_two_places.push(format!("{id}: delivered, skipped, dead-lettered = {places:?}"));
                continue;
            }
        };
        match &actual {
            Expect::Delivered => figures.delivered += 1,
            Expect::Skipped(why) => {
                figures.skipped += 1;
                *figures.skip_reasons.entry(why.clone()).or_default() += 1;
            }
            Expect::DeadLettered(code) => {
                figures.dead_lettered += 1;
                *figures.dead_letter_codes.entry(code.clone()).or_default() += 1;
            }
        }
        let expected = &by_id[id.as_str()].expect;
        let alias_known = by_id[id.as_str()].kind == "alias" && actual == Expect::Delivered;
        if &actual != expected && !alias_known {
            figures.unexpected.push(format!("{id} ({}): {actual:?}, meant {expected:?}", by_id[id.as_str()].kind));
        }
    }
    let found = delivered.iter().chain(skipped.keys()).chain(in_dlq.keys());
    figures
        .unattributed
        .extend(found.filter(|id| !accepted_set.contains(id.as_str())).map(|id| format!("{id}: never accepted")));
    figures.intercom_faults = state.faults_injected.clone();
    figures
}

impl Figures {
    // The figures are what a soak run is for: printed for the person running it (`--nocapture`).
    #[allow(clippy::print_stdout)]
    fn print(&self) {
        let faults: Vec<String> = self.intercom_faults.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        println!("soak: {} events from {} users (seed {}), {:.1} s", self.events, self.users, self.seed, self.seconds);
        println!(
            "  ingest: {} accepted; {} SendMessageBatch entries failed, {} requests answered 503 and sent again",
            self.accepted, self.entries_failed, self.ingest_retries
        );
        println!(
            "  outcomes: {} delivered, {} skipped {:?}, {} dead-lettered {:?}; lost {}, in two places {}; out of order {} \
             (moto's FIFO reorders a dead invocation's batch)",
            self.delivered,
            self.skipped,
            self.skip_reasons,
            self.dead_lettered,
            self.dead_letter_codes,
            self.lost.len(),
            self.in_two_places.len(),
            self.out_of_order.len()
        );
        println!(
            "  forwarders: {} invocations, {} died mid-batch, {} hand-backs, {} failed receives and {} deletes; {} Intercom calls, \
             faults injected: {}",
            self.invocations,
            self.deaths,
            self.hand_backs,
            self.failed_receives,
            self.failed_deletes,
            self.intercom_calls,
            faults.join(", ")
        );
        println!(
            "  duplicates: {} events sent to Intercom more than once; {} data-event copies, {} absorbed by Intercom's \
             de-duplication (contact, name, created_at); {} contact/company writes repeated",
            self.duplicates_seen, self.duplicate_event_submissions, self.absorbed, self.rewrites
        );
        println!(
            "  leads: {} visitors' leads, {} emails held by more than one lead (search lag {} s)",
            self.leads, self.duplicate_leads, self.search_lag
        );
        // A row of BENCHMARKS.md's outage table: phase, length, calls, calls/s, invocations.
        for phase in &self.phases {
            let rate = phase.calls as f64 / phase.seconds.max(0.001);
            println!(
                "  phase, BENCHMARKS.md: | {} | {:.1} s | {} | {rate:.1} | {} |",
                phase.name, phase.seconds, phase.calls, phase.invocations
            );
        }
        println!(
            "BENCHMARKS.md: | soak, nothing lost under faults (`SOAK_EVENTS={} scripts/test soak`, seed {}, debug build, \
             moto, {FORWARDERS} forwarders) | {} accepted: {} delivered, {} skipped, {} dead-lettered, {} lost | {} \
             hand-backs, {} invocations died, {} SQS entries failed, Intercom {} | {} duplicates seen, {} absorbed | \
             {:.1} s |",
            self.events,
            self.seed,
            self.accepted,
            self.delivered,
            self.skipped,
            self.dead_lettered,
            self.lost.len(),
            self.hand_backs,
            self.deaths,
            self.entries_failed,
            faults.join(", "),
            self.duplicates_seen,
            self.absorbed,
            self.seconds
        );
    }
}
