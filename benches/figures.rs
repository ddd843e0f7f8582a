//! The relay's figures for BENCHMARKS.md, printed: Intercom calls per event on a generated day, throughput under a
//! rate limit, calls against the floor on a day of page loads and on the mix (with and without the identity store),
//! the Lambda binaries' start-up, memory, invocation times and sizes against a local Runtime API, the criterion results
//! next to RudderStack's transformer, and the AWS cost per million events they imply.
//! `scripts/bench` runs it (after the criterion benches, whose results it reads) with moto for the ingest function.

// A bench's whole job is to print its figures.
#![allow(clippy::print_stdout)]

#[path = "support/floor.rs"]
mod floor;
#[path = "support/payloads.rs"]
mod payloads;
#[path = "support/runtime_api.rs"]
mod runtime_api;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use intercom_relay::sandbox::{Faults, SandboxOptions, SandboxServer};
use serde_json::Value;

use payloads::{batch_request, generated, sqs_event};
use runtime_api::{Running, RuntimeApi};

const RELAY: &str = env!("CARGO_BIN_EXE_intercom-relay");
static INGEST: LazyLock<String> = LazyLock::new(|| runtime_api::lambda_binary("ingest"));
static FORWARD: LazyLock<String> = LazyLock::new(|| runtime_api::lambda_binary("forward"));
const WAIT: Duration = Duration::from_secs(60);
/// The generated day every figure is measured on.
const DAY: [&str; 6] = ["--events", "10000", "--users", "1000", "--seed", "42"];
/// The day of page loads held against its floor (`generate --page-loads`: each load an identify and a page, half the
/// users a group, the same traits every time).
const PAGE_LOADS: [&str; 7] = ["--page-loads", "--events", "2000", "--users", "200", "--seed", "42"];
/// The identity store's settings each day is replayed under, side by side: the baseline writes every identify and
/// group again (as before the store), the other leaves the variables unset.
const STORE_SETTINGS: [(&str, &[(&str, &str)]); 2] =
    [("baseline", &[("IDENTITY_REFRESH", "0s"), ("LAST_SEEN_RESOLUTION", "0s")]), ("store's defaults", &[])];
/// The variables of the identity store (and its table): never taken from the shell that runs the bench.
const STORE_VARIABLES: [&str; 3] = ["IDENTITY_REFRESH", "LAST_SEEN_RESOLUTION", "IDENTITY_TABLE"];
/// The last_seen_at resolution the floor counts with: the store's default, an hour.
const FLOOR_LAST_SEEN_S: i64 = 3_600;
/// Intercom's rate limit per app, calls a minute.
const INTERCOM_PER_MINUTE: u64 = 10_000;
/// Calls per event of the peers' Intercom destinations (Segment's, RudderStack's); pages, screens and aliases they drop.
const PEERS: [(&str, &str); 6] = [
    ("identify", "2"),
    ("track", "1"),
    ("group", "3"),
    ("page", "not delivered"),
    ("screen", "not delivered"),
    ("alias", "not delivered"),
];
/// RudderStack's transformer, events per second per core.
const RUDDERSTACK: [(&str, f64); 2] = [("track", 23_000.0), ("identify", 9_400.0)];
/// Start-up runs per binary.
const STARTS: usize = 20;
/// Warm invocations timed per case.
const WARM: usize = 40;
/// What a call to Intercom takes in the "with latency" cases (injected by the sandbox).
const INTERCOM_LATENCY: Duration = Duration::from_millis(100);

/// Every section, in the order printed; `FIGURES=floor,sizes` runs only those named (throughput and cost also run
/// what they are computed from).
const SECTIONS: [&str; 9] =
    ["calls", "throughput", "floor", "startup", "forward", "ingest", "sizes", "criterion", "cost"];

fn wanted(section: &str) -> bool {
    let Ok(list) = std::env::var("FIGURES") else { return true };
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|name| !name.is_empty()).collect();
    for name in &names {
        assert!(SECTIONS.contains(name), "FIGURES names {name:?}; the sections: {SECTIONS:?}");
    }
    names.is_empty() || names.contains(&section)
}

#[tokio::main]
async fn main() {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    std::fs::create_dir_all(&work).expect("a work directory");
    println!("# intercom-relay figures\n");
    println!("binaries: {RELAY}, {}, {}\n", *INGEST, *FORWARD);
    let day = work.join("day.ndjson");
    let ndjson = command(RELAY, &[&["generate"], &DAY[..]].concat(), &[]);
    std::fs::write(&day, ndjson).expect("the day written");

    let calls = ["calls", "throughput", "cost"].into_iter().any(wanted).then(|| calls_per_event(&day));
    if let Some(calls) = calls.as_ref().filter(|_| wanted("throughput")) {
        throughput(&day, calls.total).await;
    }
    if wanted("floor") {
        against_the_floor(&work, &day);
    }
    if wanted("startup") {
        startup().await;
    }
    let forward = if wanted("forward") || wanted("cost") { Some(forward_invocations().await) } else { None };
    let ingest = if wanted("ingest") || wanted("cost") { Some(ingest_invocations().await) } else { None };
    if wanted("sizes") {
        sizes();
    }
    if wanted("criterion") {
        criterion();
    }
    if let (Some(calls), Some(forward), Some(ingest), true) = (&calls, &forward, &ingest, wanted("cost")) {
        cost(calls, forward, ingest);
    }
}

/// Runs `binary args` with `env` added (and the identity store's variables only from `env`), to the end; its stdout
/// (a failure stops the bench).
fn command(binary: &str, args: &[&str], env: &[(&str, String)]) -> Vec<u8> {
    let mut child = Command::new(binary);
    for name in STORE_VARIABLES {
        child.env_remove(name);
    }
    let output = child
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{binary} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

struct Calls {
    total: u64,
    per_event: f64,
}

/// Intercom calls per event, overall and per type, on the generated day with no rate limit.
fn calls_per_event(day: &Path) -> Calls {
    let started = Instant::now();
    let args = ["replay", day.to_str().expect("UTF-8"), "--rate-limit", "100000000", "--json"];
    let report: Value = serde_json::from_slice(&command(RELAY, &args, &[])).expect("a JSON report");
    let took = started.elapsed();
    println!("## Intercom calls per event\n");
    println!("`intercom-relay generate {}` (a day of 10,000 events from 1,000 people), then", DAY.join(" "));
    println!("`intercom-relay replay day.ndjson --rate-limit 100000000 --json` (release build, {took:.1?}):\n");
    #[derive(Default)]
    struct Row {
        events: u64,
        delivered: u64,
        skipped: u64,
        calls: u64,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for event in report["events"].as_array().expect("events[]") {
        let row = rows.entry(event["type"].as_str().unwrap_or("unknown").to_owned()).or_default();
        row.events += 1;
        match event["outcome"].as_str() {
            Some("delivered") => row.delivered += 1,
            Some("skipped") => row.skipped += 1,
            _ => {}
        }
        row.calls += event["calls"].as_array().map_or(0, |calls| calls.len() as u64);
    }
    println!("| type | events | delivered | skipped | calls | calls per event | per delivered event | peers |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let mut all = Row::default();
    for (kind, row) in &rows {
        let peers = PEERS.iter().find(|(k, _)| k == kind).map_or("", |(_, p)| p);
        println!(
            "| {kind} | {} | {} | {} | {} | {:.2} | {:.2} | {peers} |",
            row.events,
            row.delivered,
            row.skipped,
            row.calls,
            ratio(row.calls, row.events),
            ratio(row.calls, row.delivered)
        );
        all.events += row.events;
        all.delivered += row.delivered;
        all.skipped += row.skipped;
        all.calls += row.calls;
    }
    println!(
        "| **all** | {} | {} | {} | {} | **{:.2}** | {:.2} | |\n",
        all.events,
        all.delivered,
        all.skipped,
        all.calls,
        ratio(all.calls, all.events),
        ratio(all.calls, all.delivered)
    );
    let by_endpoint = &report["intercom_calls"]["by_endpoint"];
    println!("By endpoint: {by_endpoint}\n");
    let reasons = report["skipped"].as_array().into_iter().flatten().fold(BTreeMap::new(), |mut counts, skip| {
        *counts.entry(format!("{} {}", skip["type"], skip["reason"])).or_insert(0) += 1;
        counts
    });
    println!(
        "Skips by type and reason: {reasons:?}; dead letters: {}\n",
        report["dead_lettered"].as_array().map_or(0, Vec::len)
    );
    Calls { total: all.calls, per_event: ratio(all.calls, all.events) }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The generated day replayed against a sandbox whose limit per 10-second window makes the run last about a minute.
async fn throughput(day: &Path, calls: u64) {
    let limit = calls.div_ceil(6);
    let sandbox = SandboxServer::start(SandboxOptions { rate_limit: limit, ..SandboxOptions::default() }, 0)
        .await
        .expect("a sandbox");
    let args = [
        "replay".to_owned(),
        day.to_str().expect("UTF-8").to_owned(),
        "--intercom-url".to_owned(),
        sandbox.url.clone(),
        "--json".to_owned(),
    ];
    let env = [("INTERCOM_ACCESS_TOKEN", sandbox.token())];
    let started = Instant::now();
    let stdout = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        command(RELAY, &args, &env)
    })
    .await
    .expect("the replay ran");
    let took = started.elapsed();
    let report: Value = serde_json::from_slice(&stdout).expect("a JSON report");
    let requests = sandbox.requests();
    let mut windows: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for request in &requests {
        let window = windows.entry(request.at_ms / 10_000).or_default();
        if request.status == 429 { window.1 += 1 } else { window.0 += 1 }
    }
    let limited: u64 = windows.values().map(|w| w.1).sum();
    let answered: u64 = windows.values().map(|w| w.0).sum();
    // The first and last windows are partly outside the run: the share is taken over the full ones between.
    let full: Vec<u64> = windows.values().skip(1).take(windows.len().saturating_sub(2)).map(|w| w.0).collect();
    let share = full.iter().sum::<u64>() as f64 / (full.len().max(1) as u64 * limit) as f64;
    let accepted = report["accepted"].as_u64().unwrap_or(0);
    let delivered = report["delivered"].as_u64().unwrap_or(0);
    let skipped = report["skipped"].as_array().map_or(0, Vec::len) as u64;
    let dead = report["dead_lettered"].as_array().map_or(0, Vec::len) as u64;
    println!("## Throughput under Intercom's rate limit\n");
    println!(
        "The same day replayed with `--intercom-url` at an in-process sandbox allowing {limit} calls per 10-s window"
    );
    println!(
        "(a sixth of the calls the day needs, so the run spans about six windows); the whole day is queued at once.\n"
    );
    println!(
        "- run: {took:.1?}; {answered} calls answered, {limited} answered 429; handed back {}",
        report["handed_back"]
    );
    println!("- calls answered per window (limit {limit}): {:?}", windows.values().map(|w| w.0).collect::<Vec<_>>());
    println!("- share of the limit used over the {} full windows: **{:.1}%**", full.len(), share * 100.0);
    println!(
        "- accepted {accepted} = delivered {delivered} + skipped {skipped} + dead-lettered {dead}: {}\n",
        if accepted == delivered + skipped + dead { "nothing lost" } else { "MISMATCH" }
    );
}

/// One replay of a day: the calls it made, in all and by event type, and what became of the events.
struct Replayed {
    events: u64,
    calls: u64,
    /// Per event type: events, calls.
    by_type: BTreeMap<String, (u64, u64)>,
    by_endpoint: Value,
    delivered: u64,
    /// Delivered with no call at all (what the store already held).
    delivered_without_a_call: u64,
    skipped: u64,
    dead_lettered: u64,
    handed_back: u64,
    took: Duration,
}

/// `day` replayed against the built-in sandbox with no rate limit, with the identity store's `settings`.
fn replay_with(day: &Path, settings: &[(&str, &str)]) -> Replayed {
    let args = ["replay", day.to_str().expect("UTF-8"), "--rate-limit", "100000000", "--json"];
    let env: Vec<(&str, String)> = settings.iter().map(|(name, value)| (*name, (*value).to_owned())).collect();
    let started = Instant::now();
    let report: Value = serde_json::from_slice(&command(RELAY, &args, &env)).expect("a JSON report");
    let took = started.elapsed();
    let mut by_type: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut delivered_without_a_call = 0;
    let events = report["events"].as_array().expect("events[]");
    for event in events {
        let calls = event["calls"].as_array().map_or(0, Vec::len) as u64;
        let row = by_type.entry(event["type"].as_str().unwrap_or("unknown").to_owned()).or_default();
        row.0 += 1;
        row.1 += calls;
        delivered_without_a_call += u64::from(calls == 0 && event["outcome"] == "delivered");
    }
    let count = |name: &str| report[name].as_array().map_or(0, Vec::len) as u64;
    Replayed {
        events: events.len() as u64,
        // Every call, those no event is charged with (the workspace's attribute list) included.
        calls: report["intercom_calls"]["total"].as_u64().unwrap_or(0),
        by_type,
        by_endpoint: report["intercom_calls"]["by_endpoint"].clone(),
        delivered: report["delivered"].as_u64().unwrap_or(0),
        delivered_without_a_call,
        skipped: count("skipped"),
        dead_lettered: count("dead_lettered"),
        handed_back: report["handed_back"].as_u64().unwrap_or(0),
        took,
    }
}

/// The events of an NDJSON file.
fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the day read");
    text.lines().map(|line| serde_json::from_str(line).expect("an event")).collect()
}

/// A day of page loads and the generated mix, each replayed under [`STORE_SETTINGS`], side by side, with the floor
/// each day's events imply (benches/support/floor.rs).
fn against_the_floor(work: &Path, mix: &Path) {
    let loads = work.join("page-loads.ndjson");
    std::fs::write(&loads, command(RELAY, &[&["generate"], &PAGE_LOADS[..]].concat(), &[])).expect("the day written");
    println!("## Calls against the floor: the identity store (issue 24)\n");
    println!("`intercom-relay generate {}` (each load an identify and a page, half the users a", PAGE_LOADS.join(" "));
    println!("group, the same traits every time) and the mix above, each replayed as above");
    println!("(`replay DAY --rate-limit 100000000 --json`), once with `IDENTITY_REFRESH=0s LAST_SEEN_RESOLUTION=0s`");
    println!("(the baseline: every identify and group written again) and once with the store's defaults (unset).");
    println!("The floor is worked out from the events alone (benches/support/floor.rs): 1 call per page, screen or");
    println!("track of a user; 1 per identify or group that changed its person or company (the first included; an");
    println!("identify also when last_seen_at moved an hour or more since last written); 1 per first tie of a user");
    println!("and a company; 1 per new custom attribute name.\n");
    let mut columns = Vec::new();
    for (name, path) in [("page loads", loads.as_path()), ("mix", mix)] {
        let floor = floor::floor(&read_events(path), FLOOR_LAST_SEEN_S);
        println!("- floor of the {name}: {}", floor::describe(&floor));
        for (setting, env) in STORE_SETTINGS {
            columns.push((format!("{name}, {setting}"), floor.clone(), replay_with(path, env)));
        }
    }
    println!();
    print_against_the_floor(&columns);
    print_calls_by_type(&columns);
    for (name, _, run) in &columns {
        println!(
            "- {name}: replay {:.1?}; delivered {} ({} with no call), skipped {}, dead-lettered {}, handed back {}; by endpoint: {}",
            run.took,
            run.delivered,
            run.delivered_without_a_call,
            run.skipped,
            run.dead_lettered,
            run.handed_back,
            run.by_endpoint
        );
    }
    println!();
    print_targets(&columns);
}

/// Events a minute that `calls` for `events` allow under Intercom's limit.
fn per_minute(events: u64, calls: u64) -> u64 {
    (events * INTERCOM_PER_MINUTE).checked_div(calls).unwrap_or(0)
}

/// A cell of the side-by-side table, from a day's floor and one replay of it.
type Cell = dyn Fn(&floor::Floor, &Replayed) -> String;

/// The side-by-side table: a row per figure, a column per day and setting.
fn print_against_the_floor(columns: &[(String, floor::Floor, Replayed)]) {
    let rows: [(&str, &Cell); 7] = [
        ("events", &|_, run| run.events.to_string()),
        ("Intercom calls", &|_, run| run.calls.to_string()),
        ("calls per event", &|_, run| format!("**{:.2}**", ratio(run.calls, run.events))),
        ("floor (calls)", &|floor, _| floor.calls().to_string()),
        ("calls / floor", &|floor, run| format!("**{:.2}×**", ratio(run.calls, floor.calls()))),
        ("events a minute under 10,000 calls a minute", &|_, run| per_minute(run.events, run.calls).to_string()),
        ("… at the floor", &|floor, run| per_minute(run.events, floor.calls()).to_string()),
    ];
    let names: Vec<&str> = columns.iter().map(|(name, ..)| name.as_str()).collect();
    println!("| | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for (label, cell) in rows {
        let cells: Vec<String> = columns.iter().map(|(_, floor, run)| cell(floor, run)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
    println!();
}

/// Calls per event by type, a column per day and setting.
fn print_calls_by_type(columns: &[(String, floor::Floor, Replayed)]) {
    let names: Vec<&str> = columns.iter().map(|(name, ..)| name.as_str()).collect();
    println!("| calls per event (events) | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    let mut kinds: Vec<&String> = columns.iter().flat_map(|(.., run)| run.by_type.keys()).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let cells: Vec<String> = columns
            .iter()
            .map(|(.., run)| match run.by_type.get(kind) {
                Some((events, calls)) => format!("{:.2} ({events})", ratio(*calls, *events)),
                None => String::new(),
            })
            .collect();
        println!("| {kind} | {} |", cells.join(" | "));
    }
    println!();
}

/// Issue 24's targets, read with the store's defaults.
fn print_targets(columns: &[(String, floor::Floor, Replayed)]) {
    let column = |name: &str| columns.iter().find(|(n, ..)| n == name);
    let met = |ok: bool| if ok { "met" } else { "not met" };
    if let Some((name, floor, run)) = column("page loads, store's defaults") {
        let times = ratio(run.calls, floor.calls());
        println!("- target ≤ 1.10× the floor on the page-load day ({name}): {times:.2}×, {}", met(times <= 1.10));
    }
    if let Some((name, _, run)) = column("mix, store's defaults") {
        let per_event = ratio(run.calls, run.events);
        println!("- target ≤ 0.90 calls per event on the mix ({name}): {per_event:.2}, {}", met(per_event <= 0.90));
    }
    println!();
}

fn hello_runtime() -> Option<String> {
    std::env::var("HELLO_RUNTIME").ok().filter(|path| Path::new(path).exists())
}

/// One binary of the start-up figures: its row's name, the path, the event it is handed and its own variables.
struct Started {
    name: String,
    path: String,
    event: Value,
    env: Vec<(&'static str, String)>,
    /// Per start: to the first poll, to the answer to the first event.
    times: Vec<(Duration, Duration)>,
}

/// Time from spawning each binary to its first poll of the Runtime API and to its answer to one real event, queued
/// before the process starts so that it is handed out at that first poll: work put off to the first invocation is
/// counted. Ingest queues into a stand-in for SQS answering at once, forward calls a sandbox answering at once (one
/// per start: a fresh workspace each time); the starts take turns, so that the machine's noise falls on all alike.
/// `STARTUP_BEFORE=DIR` adds the `ingest` and `forward` binaries in DIR (an earlier build) as rows of their own.
async fn startup() {
    let sqs = instant_sqs().await.expect("a stand-in for SQS");
    let line = generated(1, 1, 42);
    let request = batch_request(&line, "bench-write-key");
    let batch = serde_json::to_value(sqs_event(&line, "startup")).expect("JSON");
    let kind = serde_json::from_str::<Value>(&line[0]).expect("JSON")["type"].clone();
    let ingest_env = vec![
        ("WRITE_KEYS", "bench-write-key".to_owned()),
        ("QUEUE_URL", format!("{}/123456789012/events.fifo", sqs.0)),
        ("AWS_ENDPOINT_URL_SQS", sqs.0.clone()),
    ];
    let forward_env = vec![("DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events-dlq.fifo".into())];
    let mut builds = vec![("", INGEST.to_owned(), FORWARD.to_owned())];
    if let Ok(dir) = std::env::var("STARTUP_BEFORE") {
        builds.push((" (before)", format!("{dir}/ingest"), format!("{dir}/forward")));
    }
    let mut rows = Vec::new();
    for (suffix, ingest, forward) in builds {
        let row = |name: &str, path: String, event: &Value, env: &Vec<(&'static str, String)>| Started {
            name: format!("{name}{suffix}"),
            path,
            event: event.clone(),
            env: env.clone(),
            times: Vec::new(),
        };
        rows.push(row("ingest", ingest, &request, &ingest_env));
        rows.push(row("forward", forward, &batch, &forward_env));
    }
    let hello = hello_runtime();
    if let Some(path) = &hello {
        let env = Vec::new();
        rows.push(Started {
            name: "hello-world".into(),
            path: path.clone(),
            event: request.clone(),
            env,
            times: Vec::new(),
        });
    }
    for _ in 0..STARTS {
        for row in &mut rows {
            row.times.push(start_once(row).await);
        }
    }
    print_startup(&rows, &kind, hello.is_some());
    sqs.1.abort();
}

/// One start of `row`'s binary: to its first poll and to its answer to its event.
async fn start_once(row: &Started) -> (Duration, Duration) {
    let api = RuntimeApi::start().await.expect("a Runtime API");
    let id = api.invoke(&row.event);
    let mut env = api.env();
    env.extend(row.env.iter().cloned());
    let sandbox = if row.name.starts_with("forward") {
        let options = SandboxOptions { rate_limit: 100_000_000, ..SandboxOptions::default() };
        let sandbox = SandboxServer::start(options, 0).await.expect("a sandbox");
        env.extend([("INTERCOM_ACCESS_TOKEN", sandbox.token()), ("INTERCOM_BASE_URL", sandbox.url.clone())]);
        Some(sandbox)
    } else {
        None
    };
    let running = Running::spawn(&row.path, env).expect("the binary starts");
    let polled = api.first_poll(WAIT).await.expect("the binary polls");
    let answer = api.answer_to(&id, WAIT).await.expect("an answer");
    assert_eq!(answer.kind, "response", "{}: {:?}", row.name, answer.body);
    if !row.name.starts_with("hello") {
        check_answer(if row.name.starts_with("forward") { &FORWARD } else { &INGEST }, &answer.body);
    }
    drop(sandbox);
    (polled - running.started, answer.at - running.started)
}

/// The start-up table: each column's median, min and max, and each median against hello-world's.
fn print_startup(rows: &[Started], kind: &Value, hello: bool) {
    println!("## Start-up: process start to the first poll, and to the answer to the first event\n");
    println!("{STARTS} starts each (taking turns) against a local Runtime API (benches/support/runtime_api.rs) that");
    println!("hands out one event at the first poll, release build. The event: ingest, a `/v1/batch` of 1 ({kind})");
    println!(
        "queued into a stand-in for SQS answering at once; forward, an SQS event of that event, its Intercom calls"
    );
    println!("to an in-process sandbox answering at once (no identity table); hello-world, ingest's event, echoed.\n");
    if !hello {
        println!("hello-world not measured: set HELLO_RUNTIME (scripts/bench does).\n");
    }
    let base = rows.iter().find(|row| row.name == "hello-world").map(|row| medians(&row.times));
    println!("| binary | to first poll: median | min | max | to first answer: median | min | max | × hello-world |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (poll, answer): (Vec<Duration>, Vec<Duration>) = row.times.iter().copied().unzip();
        let spread = |mut times: Vec<Duration>| {
            times.sort();
            format!("{:.2?} | {:.2?} | {:.2?}", times[times.len() / 2], times[0], times[times.len() - 1])
        };
        let times = base.map_or(String::new(), |(base_poll, base_answer)| {
            let (poll, answer) = medians(&row.times);
            format!(
                "{:.2}× / **{:.2}×**",
                poll.as_secs_f64() / base_poll.as_secs_f64(),
                answer.as_secs_f64() / base_answer.as_secs_f64()
            )
        });
        println!("| {} | {} | {} | {times} |", row.name, spread(poll), spread(answer));
    }
    println!("\n(× hello-world: to the first poll / to the first answer, medians.)\n");
}

fn medians(times: &[(Duration, Duration)]) -> (Duration, Duration) {
    let (poll, answer): (Vec<Duration>, Vec<Duration>) = times.iter().copied().unzip();
    (median(poll), median(answer))
}

/// A stand-in for SQS on 127.0.0.1 answering every `SendMessageBatch` at once with each entry taken (moto takes
/// milliseconds a batch, which would hide the function's own time): its URL, and the task serving it.
async fn instant_sqs() -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task =
        intercom_relay::sandbox::serve_http(listener, |request: hyper::Request<hyper::body::Incoming>| async move {
            use http_body_util::BodyExt;
            let bytes = request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let taken: Vec<Value> = body["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    let id = uuid::Uuid::new_v4().to_string();
                    serde_json::json!({"Id": entry["Id"], "MessageId": id, "MD5OfMessageBody": "0".repeat(32)})
                })
                .collect();
            let answer = serde_json::json!({"Successful": taken, "Failed": []}).to_string();
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .header("content-type", "application/x-amz-json-1.0")
                    .body(http_body_util::Full::new(hyper::body::Bytes::from(answer)))
                    .expect("a valid response"),
            )
        });
    Ok((url, task))
}

/// Per case: the warm invocations' median duration and the log bytes per event.
struct Invocations {
    cases: Vec<(String, Duration, f64)>,
}

impl Invocations {
    fn median(&self, name: &str) -> Option<Duration> {
        self.cases.iter().find(|(n, ..)| n == name).map(|(_, d, _)| *d)
    }

    fn log_bytes(&self, name: &str) -> f64 {
        self.cases.iter().find(|(n, ..)| n == name).map_or(0.0, |(.., bytes)| *bytes)
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn percentile(mut times: Vec<Duration>, p: usize) -> Duration {
    times.sort();
    times[(times.len() * p / 100).min(times.len() - 1)]
}

/// Runs `payloads` through one process of `binary`, one invocation after another: the first's duration and RSS,
/// the warm ones' median and p90, the peak RSS at the end. With `drain`, the queue is emptied after each invocation
/// (untimed), as the forwarder would: moto scans every message in a FIFO queue on each send, so a growing queue
/// would make its answers slower with every request (10 messages: 13 ms; 500: 430 ms), which real SQS does not.
async fn invocations(
    binary: &str,
    env: Vec<(&'static str, String)>,
    payloads: Vec<Value>,
    drain: Option<(&aws_sdk_sqs::Client, &str)>,
) -> Measured {
    let api = RuntimeApi::start().await.expect("a Runtime API");
    let mut all = api.env();
    all.extend(env);
    let running = Running::spawn(binary, all).expect("the binary starts");
    let mut times = Vec::new();
    let mut first_rss = 0;
    for (index, payload) in payloads.iter().enumerate() {
        let id = api.invoke(payload);
        let answer = api.answer_to(&id, WAIT).await.expect("an answer");
        assert_eq!(answer.kind, "response", "{binary}: {:?}", answer.body);
        check_answer(binary, &answer.body);
        times.push(answer.took);
        if index == 0 {
            first_rss = running.peak_rss_kib().unwrap_or(0);
        }
        if let Some((sqs, queue)) = drain {
            drain_queue(sqs, queue).await;
        }
    }
    let peak = running.peak_rss_kib().unwrap_or(0);
    let first = times.remove(0);
    let log_bytes = running.output().len() as u64;
    Measured { first, first_rss, warm: times, peak, log_bytes }
}

/// One process's invocations: the first's duration and peak RSS, the warm ones' durations, the peak RSS at the end
/// and the bytes it logged (stdout and stderr, which Lambda sends to CloudWatch Logs).
struct Measured {
    first: Duration,
    first_rss: u64,
    warm: Vec<Duration>,
    peak: u64,
    log_bytes: u64,
}

/// Receives and deletes every message in `queue`.
async fn drain_queue(sqs: &aws_sdk_sqs::Client, queue: &str) {
    loop {
        let received = sqs.receive_message().queue_url(queue).max_number_of_messages(10).send().await.expect("receive");
        let messages = received.messages();
        if messages.is_empty() {
            return;
        }
        let mut delete = sqs.delete_message_batch().queue_url(queue);
        for (index, message) in messages.iter().enumerate() {
            delete = delete.entries(
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(message.receipt_handle().expect("a receipt handle"))
                    .build()
                    .expect("an entry"),
            );
        }
        delete.send().await.expect("delete");
    }
}

/// The answer says every event was taken: nothing handed back, no 5xx.
fn check_answer(binary: &str, body: &Value) {
    if binary == *FORWARD {
        assert_eq!(body["batchItemFailures"], serde_json::json!([]), "forward handed back records");
    } else {
        assert_eq!(body["statusCode"], 200, "ingest answered {body}");
    }
}

/// A table row; `events` is how many events all the invocations carried, for the log bytes per event.
fn print_invocations(name: &str, measured: &Measured, events: usize) {
    println!(
        "| {name} | {:.2?} | {:.2?} | {:.2?} | {:.1} MiB | {:.1} MiB | {:.0} |",
        measured.first,
        median(measured.warm.clone()),
        percentile(measured.warm.clone(), 90),
        measured.first_rss as f64 / 1024.0,
        measured.peak as f64 / 1024.0,
        measured.log_bytes as f64 / events as f64
    );
}

/// The forward function fed SQS batches of 10 from the generated mix, against the sandbox answering at once and with
/// [`INTERCOM_LATENCY`] per call.
async fn forward_invocations() -> Invocations {
    println!("## Forward function: one SQS batch of 10 per invocation\n");
    println!(
        "The release `forward` binary under a local Runtime API, {WARM} warm batches after the first, each 10 events"
    );
    println!(
        "of the generated mix (from 300 people), against an in-process sandbox (`DLQ_URL` unused: no dead letters),"
    );
    println!("with the identity store as deployed (`IDENTITY_TABLE`, a table on moto's DynamoDB server).\n");
    println!(
        "| Intercom answers | first batch | warm median | warm p90 | VmHWM after the first | VmHWM after all | log bytes per event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let lines = generated(10 * (WARM + 1), 300, 43);
    let batches: Vec<Value> = lines
        .chunks(10)
        .enumerate()
        .map(|(index, chunk)| serde_json::to_value(sqs_event(chunk, &index.to_string())).expect("JSON"))
        .collect();
    let mut cases = Vec::new();
    for (name, faults) in [
        ("at once", Faults::default()),
        ("after 100 ms", Faults { slow: 1.0, slow_by: INTERCOM_LATENCY, ..Faults::default() }),
    ] {
        let options = SandboxOptions { rate_limit: 100_000_000, faults, ..SandboxOptions::default() };
        let sandbox = SandboxServer::start(options, 0).await.expect("a sandbox");
        let mut env = vec![
            ("INTERCOM_ACCESS_TOKEN", sandbox.token()),
            ("INTERCOM_BASE_URL", sandbox.url.clone()),
            ("DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events-dlq.fifo".into()),
        ];
        env.extend(identity_table().await);
        let figures = invocations(&FORWARD, env, batches.clone(), None).await;
        print_invocations(name, &figures, lines.len());
        cases.push((name.to_owned(), median(figures.warm), figures.log_bytes as f64 / lines.len() as f64));
    }
    println!();
    Invocations { cases }
}

/// The forward function's identity store as the template sets it: a new table on moto's DynamoDB server (the one
/// `scripts/bench` starts for SQS), named in `IDENTITY_TABLE`; none without moto (aliases are then handed back).
async fn identity_table() -> Vec<(&'static str, String)> {
    let Ok(endpoint) = std::env::var("SQS_ENDPOINT_URL") else { return Vec::new() };
    // A table per sandbox: ids another sandbox made mean nothing here.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    let table = format!("identities-{now}");
    let create = serde_json::json!({"TableName": table, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}]});
    let created = reqwest::Client::new()
        .post(format!("{}/", endpoint.trim_end_matches('/')))
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", "DynamoDB_20120810.CreateTable")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/dynamodb/aws4_request, Signature=x",
        )
        .body(create.to_string())
        .send()
        .await
        .expect("moto answers");
    assert!(created.status().is_success(), "moto's CreateTable: {}", created.text().await.unwrap_or_default());
    vec![
        ("IDENTITY_TABLE", table),
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoint),
        ("AWS_ACCESS_KEY_ID", "bench".into()),
        ("AWS_SECRET_ACCESS_KEY", "bench".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// The ingest function fed `/v1/batch` requests of 1 and 20 events, queuing into moto's SQS.
async fn ingest_invocations() -> Invocations {
    println!("## Ingest function: one function-URL request per invocation\n");
    let Ok(endpoint) = std::env::var("SQS_ENDPOINT_URL") else {
        println!("Not measured: SQS_ENDPOINT_URL is not set (scripts/bench starts moto and sets it).\n");
        return Invocations { cases: Vec::new() };
    };
    println!(
        "The release `ingest` binary under a local Runtime API, queuing into a FIFO queue on moto's SQS server at"
    );
    println!(
        "{endpoint} (moto answers in a few ms; SQS itself takes ~5–20 ms), {WARM} warm requests after the first:\n"
    );
    println!(
        "| request | first | warm median | warm p90 | VmHWM after the first | VmHWM after all | log bytes per event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "bench"))
            .build(),
    );
    let mut cases = Vec::new();
    for size in [1, 20] {
        let queue = sqs
            .create_queue()
            .queue_name(format!("bench-{}.fifo", uuid::Uuid::new_v4().simple()))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .expect("a queue on moto");
        let lines = generated(size * (WARM + 1), 300, 44 + size as u64);
        let requests: Vec<Value> = lines.chunks(size).map(|chunk| batch_request(chunk, "bench-write-key")).collect();
        let env = vec![
            ("WRITE_KEYS", "bench-write-key".into()),
            ("QUEUE_URL", queue.queue_url().expect("a URL").to_owned()),
            ("AWS_ENDPOINT_URL_SQS", endpoint.clone()),
        ];
        let queue_url = queue.queue_url().expect("a URL");
        let figures = invocations(&INGEST, env, requests, Some((&sqs, queue_url))).await;
        let name = format!("batch of {size}");
        print_invocations(&name, &figures, lines.len());
        cases.push((name, median(figures.warm), figures.log_bytes as f64 / lines.len() as f64));
    }
    println!();
    Invocations { cases }
}

fn sizes() {
    println!("## Binary sizes (release profile: lto, codegen-units = 1, strip)\n");
    let mut binaries =
        vec![("intercom-relay", RELAY.to_owned()), ("ingest", INGEST.to_owned()), ("forward", FORWARD.to_owned())];
    binaries.extend(hello_runtime().map(|path| ("hello_runtime", path)));
    for (name, path) in binaries {
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        println!("- {name}: {:.1} MiB ({bytes} bytes)", bytes as f64 / 1_048_576.0);
    }
    println!();
}

/// The criterion results `scripts/bench` produced before this ran, per event, next to RudderStack's transformer.
fn criterion() {
    println!("## CPU per event (criterion, one core) next to RudderStack's transformer\n");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").join("criterion");
    let mut results = Vec::new();
    for group in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for bench in std::fs::read_dir(group.path()).into_iter().flatten().flatten() {
            let new = bench.path().join("new");
            let read = |name: &str| -> Option<Value> {
                serde_json::from_str(&std::fs::read_to_string(new.join(name)).ok()?).ok()
            };
            let (Some(info), Some(estimates)) = (read("benchmark.json"), read("estimates.json")) else { continue };
            let elements = info["throughput"]["Elements"].as_f64().unwrap_or(1.0);
            let nanos = estimates["mean"]["point_estimate"].as_f64().unwrap_or(0.0) / elements;
            results.push((info["full_id"].as_str().unwrap_or_default().to_owned(), nanos));
        }
    }
    if results.is_empty() {
        println!(
            "No criterion results in {}: run `cargo bench --bench ingest_events --bench mapping --bench forward_batch` first.\n",
            dir.display()
        );
        return;
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    println!("| benchmark | per event | events/s/core | vs RudderStack |");
    println!("|---|---:|---:|---|");
    for (id, nanos) in results {
        let per_second = 1e9 / nanos;
        let compared = RUDDERSTACK
            .iter()
            .filter(|(kind, _)| id.contains(kind) || id.starts_with("forward"))
            .map(|(kind, theirs)| format!("{:.0}× its {kind} ({theirs:.0}/s)", per_second / theirs))
            .collect::<Vec<_>>()
            .join(", ");
        println!("| {id} | {:.2} µs | {per_second:.0} | {compared} |", nanos / 1000.0);
    }
    println!();
}

/// AWS prices (us-east-1).
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const GB_SECOND_X86: f64 = 0.000_016_666_7;
const GB_SECOND_ARM: f64 = 0.000_013_333_4;
const SQS_FIFO_REQUEST: f64 = 0.50 / 1e6;
const MEMORY_GB: f64 = 128.0 / 1024.0;
/// CloudWatch Logs, standard class, per GB ingested.
const LOGS_GB: f64 = 0.50;

/// The cost of a million events from the measured durations, for a few request sizes and Intercom latencies.
fn cost(calls: &Calls, forward: &Invocations, ingest: &Invocations) {
    println!("## Cost per million events on AWS\n");
    println!(
        "128 MB functions billed per ms; Lambda $0.20 per 1M requests, $0.0000166667 (x86) / $0.0000133334 (arm64)"
    );
    println!("per GB-s; SQS FIFO $0.50 per 1M requests (each 64 KB chunk; an event is well under 6 KB, so a batch of");
    println!("10 is one). SQS per event: SendMessageBatch (ingest, ⌈events per request / 10⌉ per request),");
    println!(
        "ReceiveMessage and DeleteMessageBatch (Lambda's event source, one each per batch of 10). CloudWatch Logs"
    );
    println!("$0.50 per GB: the bytes both functions logged above (JSON at INFO, as template.yaml sets them; its");
    println!(
        "SystemLogLevel WARN keeps Lambda's own START and REPORT lines out). Free tiers and the event source's idle"
    );
    println!("long polls (a fixed ~$0.3/month) are left out.");
    println!("{:.2} Intercom calls per event.\n", calls.per_event);
    println!(
        "| ingest request | Intercom answers | ingest ms | forward ms per 10 | Lambda requests | GB-s | SQS requests | log MB | $ arm64 | $ x86 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let events = 1e6;
    for request in ["batch of 20", "batch of 1"] {
        let Some(ingest_time) = ingest.median(request) else { continue };
        let size: f64 = request.trim_start_matches("batch of ").parse().expect("a size");
        for answers in ["at once", "after 100 ms"] {
            let Some(forward_time) = forward.median(answers) else { continue };
            let ingest_ms = ingest_time.as_secs_f64() * 1000.0;
            let forward_ms = forward_time.as_secs_f64() * 1000.0;
            let ingest_requests = events / size;
            let batches = events / 10.0;
            let gb_seconds =
                (ingest_requests * ingest_ms.ceil() / 1000.0 + batches * forward_ms.ceil() / 1000.0) * MEMORY_GB;
            let lambda_requests = ingest_requests + batches;
            let sqs_requests = ingest_requests * (size / 10.0).ceil() + 2.0 * batches;
            let log_bytes = events * (ingest.log_bytes(request) + forward.log_bytes(answers));
            let log_gb = log_bytes / 1e9;
            let dollars = |gb_second: f64| {
                lambda_requests * LAMBDA_REQUEST
                    + gb_seconds * gb_second
                    + sqs_requests * SQS_FIFO_REQUEST
                    + log_gb * LOGS_GB
            };
            println!(
                "| {request} | {answers} | {ingest_ms:.1} | {forward_ms:.1} | {lambda_requests:.0} | {gb_seconds:.0} | {sqs_requests:.0} | {:.0} | **${:.2}** | ${:.2} |",
                log_bytes / 1e6,
                dollars(GB_SECOND_ARM),
                dollars(GB_SECOND_X86)
            );
        }
    }
    println!();
}
