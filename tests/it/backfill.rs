//! Backfills from a CDP's archive: Segment's S3 layout and RudderStack's event replay archive, gzipped, into moto's SQS
//! with `--to-queue` (what the queue holds: bodies, message groups, deduplication ids, each person's order), resumed
//! after a failing queue, `--limit` and SIGINT (every event exactly once, the queue drained between runs, so moto's
//! deduplication cannot hide a repeat), `--since`/`--until`, bad lines named by file and line, and the in-process
//! sandbox; and docs/backfill.md's commands as written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use intercom_relay::local::checkpoint::Checkpoint;
use intercom_relay::local::{
    BackfillOptions, Destination, Ending, GenerateOptions, LineRejection, Progress, ReplayOptions, Tally, backfill,
    generate_archive, replay_archives,
};
use intercom_relay_lambda::event::{parse_single, parse_timestamp};
use intercom_relay_lambda::ingest::accept_events;
use intercom_relay_lambda::queue::SqsQueue;
use intercom_relay_lambda::retry::RetryPolicy;
use serde_json::{Value, json};

use crate::cli::{by_external_id, relay, report, run, scratch, text};
use crate::fault_proxy::{FaultProxy, Faults};
use crate::forward_batch::fifo_queue;
use crate::helpers::{doc_section, options, sh_blocks, without_comment};
use crate::sqs::{FAST_DEADLINE, Received, client, drain, endpoint, fast_retry};

/// What the binary needs to reach moto's SQS as the AWS CLI would reach SQS.
fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

async fn run_aws(args: &[&str]) -> std::process::Output {
    let env = aws_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(args, &env).await
}

fn gzip_file(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        encoder.write_all(line.as_bytes()).unwrap();
        encoder.write_all(b"\n").unwrap();
    }
    std::fs::write(path, encoder.finish().unwrap()).unwrap();
}

/// A generated archive in Segment's S3 layout under `dir/archive`; its events in the order a backfill reads them.
fn segment_archive(dir: &Path, events: usize, users: usize, days: u32) -> (PathBuf, Vec<Value>) {
    let start = parse_timestamp("2025-03-01T00:00:00Z").unwrap();
    let archive = dir.join("archive");
    let written = generate_archive(&GenerateOptions { events, users, seed: 7, start, days }, &archive).unwrap();
    assert_eq!((written.events, written.files > 3), (events, true), "{written:?}");
    (archive.clone(), archived_events(&archive))
}

/// Every line of the `.gz` files under `dir`, in path order.
fn archived_events(dir: &Path) -> Vec<Value> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    files.sort();
    let mut events = Vec::new();
    for file in files {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(file).unwrap()),
            &mut text,
        )
        .unwrap();
        events.extend(text.lines().map(|line| serde_json::from_str::<Value>(line).unwrap()));
    }
    events
}

/// The queue body ingest makes of an archived Segment event, received when the archive says it was.
fn ingested_body(event: &Value) -> String {
    let text = event.to_string();
    let received = parse_timestamp(event["receivedAt"].as_str().unwrap()).unwrap();
    let (mut messages, rejected) =
        accept_events(&parse_single(&text).unwrap(), None, received, intercom_relay_lambda::envelope::KeyKind::Server)
            .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    messages.remove(0).body
}

fn message_id(received: &Received) -> String {
    received.dedup_id.clone().expect("a FIFO message has a deduplication id")
}

/// Each person's message ids, in the order the queue handed them out.
fn per_person(received: &[&Received]) -> BTreeMap<String, Vec<String>> {
    let mut people: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in received {
        people.entry(message.group_id.clone().unwrap()).or_default().push(message_id(message));
    }
    people
}

/// Each person's message ids in archive order.
fn archive_order(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut people: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in events {
        let person = event["userId"].as_str().or(event["anonymousId"].as_str()).unwrap().to_owned();
        people.entry(person).or_default().push(event["messageId"].as_str().unwrap().to_owned());
    }
    people
}

fn fast(paths: Vec<PathBuf>, checkpoint: &Path) -> BackfillOptions {
    let mut options = BackfillOptions::new(paths);
    options.checkpoint = Some(checkpoint.to_owned());
    options.retry =
        RetryPolicy { attempts: 2, min_delay: Duration::from_millis(10), max_delay: Duration::from_millis(20) };
    options.batch = 100;
    options
}

fn ignore(_: &LineRejection) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_archive_lands_in_the_queue_as_ingest_would_queue_it_in_each_persons_order() {
    let dir = scratch("backfill-segment");
    let (archive, events) = segment_archive(&dir, 200, 30, 2);
    let sqs = client(&endpoint());
    let url = fifo_queue(&sqs, 60).await;

    let output = run_aws(&["replay", archive.to_str().unwrap(), "--to-queue", &url, "--json"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report(&output)["backfill"].clone();
    assert_eq!(report["status"], "finished", "{report}");
    assert_eq!(report["totals"]["sent"], 200);
    assert_eq!((report["totals"]["rejected"].as_u64(), report["totals"]["filtered"].as_u64()), (Some(0), Some(0)));
    // The default checkpoint: beside the archive, saying it finished.
    let checkpoint = Checkpoint::load(&dir.join("archive.checkpoint")).unwrap().expect("a checkpoint");
    assert!(checkpoint.finished && checkpoint.totals.sent == 200, "{checkpoint:?}");

    let received = drain(&sqs, &url).await;
    assert_eq!(received.len(), 200);
    let by_id: HashMap<String, &Received> = received.iter().map(|m| (message_id(m), m)).collect();
    for event in &events {
        let id = event["messageId"].as_str().unwrap();
        let message = by_id.get(id).unwrap_or_else(|| panic!("{id} is not in the queue"));
        // Exactly the body the ingest API queues for the event, received when Segment received it.
        assert_eq!(message.body, ingested_body(event), "{id}");
        let queued: Value = serde_json::from_str(&message.body).unwrap();
        assert_eq!(queued["received_at"].as_str(), event["receivedAt"].as_str(), "{id}");
        // Segment's skew-corrected timestamp is the one ingest's normalisation arrives at.
        let timestamp = |value: &Value| parse_timestamp(value.as_str().unwrap()).unwrap();
        assert_eq!(timestamp(&queued["event"]["timestamp"]), timestamp(&event["timestamp"]), "{id}");
        let person = event["userId"].as_str().or(event["anonymousId"].as_str()).unwrap();
        assert_eq!(message.group_id.as_deref(), Some(person), "{id}");
        assert_eq!(message.attributes["event_type"], event["type"].as_str().unwrap(), "{id}");
        assert_eq!(message.attributes.get("event_name").map(String::as_str), event["event"].as_str(), "{id}");
    }
    let all: Vec<&Received> = received.iter().collect();
    assert_eq!(per_person(&all), archive_order(&events), "each person's events in archive order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_stopped_by_a_failing_queue_resumes_and_the_queue_holds_every_event_once_in_order() {
    let dir = scratch("backfill-resume");
    let (archive, events) = segment_archive(&dir, 300, 25, 1);
    let sqs = client(&endpoint());
    let url = fifo_queue(&sqs, 60).await;
    let checkpoint = dir.join("backfill.ckpt");
    // SQS refuses every entry of the first person's events, from the first batch on: the others of that batch land.
    let first = events[0]["userId"].as_str().unwrap().to_owned();
    let faults = Faults { failing_calls: usize::MAX, group: Some(first.clone()), ..Faults::default() };
    let proxy = FaultProxy::start(endpoint(), faults).await;
    let failing = SqsQueue::new(client(&proxy.url), &url, fast_retry(), FAST_DEADLINE);
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let report =
        backfill(fast(vec![archive.clone()], &checkpoint), &failing, progress, stop.clone(), &ignore).await.unwrap();
    assert!(matches!(report.ending, Ending::QueueFailed { .. }), "{report:?}");
    assert!(report.next_step().unwrap().contains("run the same command to resume"), "{:?}", report.next_step());
    let first_run = drain(&sqs, &url).await;
    assert!(!first_run.is_empty() && first_run.len() < 100, "part of the first batch landed: {}", first_run.len());
    assert!(first_run.iter().all(|m| m.group_id.as_deref() != Some(first.as_str())));
    // The checkpoint is before the first batch, naming what of it SQS confirmed.
    let saved = Checkpoint::load(&checkpoint).unwrap().unwrap();
    let place = saved.current.expect("a place in the first file");
    assert_eq!((saved.files_done, place.lines, saved.totals.sent), (0, 0, 0));
    let sent: BTreeSet<String> = place.sent.into_iter().collect();
    assert_eq!(sent, first_run.iter().map(message_id).collect::<BTreeSet<_>>());

    // The same backfill, the queue working again.
    let working = SqsQueue::new(client(&endpoint()), &url, fast_retry(), FAST_DEADLINE);
    let report = backfill(fast(vec![archive], &checkpoint), &working, Arc::new(Progress::default()), stop, &ignore)
        .await
        .unwrap();
    assert_eq!(report.ending, Ending::Finished, "{report:?}");
    assert_eq!((report.totals.sent, report.totals.events, report.sent_this_run), (300, 300, 300 - sent.len() as u64));
    assert!(report.resumed_at.as_deref().unwrap().starts_with("the start of"), "{:?}", report.resumed_at);
    let second_run = drain(&sqs, &url).await;
    let mut ids: Vec<String> = first_run.iter().chain(&second_run).map(message_id).collect();
    ids.sort();
    let mut expected: Vec<String> = events.iter().map(|e| e["messageId"].as_str().unwrap().to_owned()).collect();
    expected.sort();
    assert_eq!(ids, expected, "every event exactly once");
    let both: Vec<&Received> = first_run.iter().chain(&second_run).collect();
    assert_eq!(per_person(&both), archive_order(&events), "each person's events in archive order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_run_and_an_interrupted_one_resume_where_they_stopped_and_a_finished_one_sends_nothing() {
    let dir = scratch("backfill-limit");
    let (archive, events) = segment_archive(&dir, 600, 60, 2);
    let archive = archive.to_str().unwrap();
    let sqs = client(&endpoint());
    let url = fifo_queue(&sqs, 60).await;
    let checkpoint = dir.join("limit.ckpt");
    let checkpoint_arg = checkpoint.to_str().unwrap();
    let args = ["replay", archive, "--to-queue", &url, "--checkpoint", checkpoint_arg, "--batch", "50"];

    let limited = run_aws(&[&args[..], &["--limit", "120"]].concat()).await;
    assert!(limited.status.success(), "{}", text(&limited.stderr));
    let stderr = text(&limited.stderr);
    assert!(stderr.contains("Stopped after 120 events (--limit); the checkpoint"), "{stderr}");
    assert!(stderr.contains("run the same command to resume, without --limit to send the rest"), "{stderr}");
    let mut drained = drain(&sqs, &url).await;
    assert_eq!(drained.len(), 120);

    // Interrupted once some batches are in (SQS answering slowly, so that it is still under way): SIGINT finishes the
    // batch in flight and writes the checkpoint.
    let slow = Faults { delay: Duration::from_millis(150), ..Faults::default() };
    let proxy = FaultProxy::start(endpoint(), slow).await;
    let mut env = aws_env();
    env[0].1 = proxy.url.clone();
    let child = relay()
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waited = Duration::ZERO;
    loop {
        let saved = Checkpoint::load(&checkpoint).ok().flatten();
        if saved.is_some_and(|c| c.totals.sent >= 120 + 100) {
            break;
        }
        assert!(waited < Duration::from_secs(60), "no batch confirmed in a minute");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    // Meanwhile the same backfill again is refused: it would send the same events.
    let twice = run_aws(&args).await;
    assert_eq!(twice.status.code(), Some(2));
    assert!(text(&twice.stderr).contains("another run of this backfill is under way"), "{}", text(&twice.stderr));
    let signalled = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(signalled.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Stopping after the batch in flight"), "{stderr}");
    assert!(stderr.contains("Interrupted after") && stderr.contains("run the same command to resume"), "{stderr}");
    let saved = Checkpoint::load(&checkpoint).unwrap().unwrap();
    assert!(!saved.finished && saved.totals.sent < 600, "interrupted before the end: {saved:?}");
    let interrupted = drain(&sqs, &url).await;
    assert_eq!(interrupted.len() as u64, saved.totals.sent - 120, "what the checkpoint says is in the queue");
    drained.extend(interrupted);

    let rest = run_aws(&args).await;
    assert!(rest.status.success(), "{}", text(&rest.stderr));
    assert!(text(&rest.stdout).contains("events: 600 sent to"), "{}", text(&rest.stdout));
    drained.extend(drain(&sqs, &url).await);
    let mut ids: Vec<String> = drained.iter().map(message_id).collect();
    ids.sort();
    let mut expected: Vec<String> = events.iter().map(|e| e["messageId"].as_str().unwrap().to_owned()).collect();
    expected.sort();
    assert_eq!(ids, expected, "every event exactly once over three runs");
    let all: Vec<&Received> = drained.iter().collect();
    assert_eq!(per_person(&all), archive_order(&events));

    let again = run_aws(&args).await;
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("finished at") && text(&again.stderr).contains("nothing is sent again"));
    assert!(drain(&sqs, &url).await.is_empty());
}

/// A Segment event as its S3 destination stores it.
fn stored(id: &str, user: &str, original: &str, sent: &str, received: &str) -> Value {
    json!({"type": "track", "event": "Report Exported", "userId": user, "messageId": id, "properties": {"rows": 1},
           "originalTimestamp": original, "sentAt": sent, "receivedAt": received, "projectId": "src-1", "version": 2})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_until_keep_the_events_of_the_window_by_their_corrected_time_and_count_the_rest() {
    let dir = scratch("backfill-window");
    let lines = [
        stored("before", "u-1", "2025-01-31T23:59:59.999Z", "2025-01-31T23:59:59.999Z", "2025-01-31T23:59:59.999Z"),
        stored("first", "u-1", "2025-02-01T00:00:00.000Z", "2025-02-01T00:00:01Z", "2025-02-01T00:00:01Z"),
        // The client's clock is an hour slow: by its own clock this is January; corrected, it happened in February.
        stored("slow-clock", "u-2", "2025-01-31T23:30:00Z", "2025-01-31T23:30:05Z", "2025-02-01T00:30:05Z"),
        // No timestamps but when Segment received it.
        json!({"type": "identify", "userId": "u-3", "messageId": "received-only", "receivedAt": "2025-02-10T00:00:00Z"}),
        stored("last", "u-1", "2025-02-28T23:59:59.999Z", "2025-02-28T23:59:59.999Z", "2025-02-28T23:59:59.999Z"),
        stored("after", "u-1", "2025-03-01T00:00:00Z", "2025-03-01T00:00:00Z", "2025-03-01T00:00:00Z"),
        // Segment writes its archive at least once: the same event again.
        stored("first", "u-1", "2025-02-01T00:00:00.000Z", "2025-02-01T00:00:01Z", "2025-02-01T00:00:01Z"),
    ];
    let file = dir.join("segment-logs/src-1/1738368000000/1738368000000.abc.gz");
    gzip_file(&file, &lines.iter().map(Value::to_string).collect::<Vec<_>>());
    let sqs = client(&endpoint());
    let url = fifo_queue(&sqs, 60).await;
    let (since, until) = ("2025-02-01", "2025-03-01T00:00:00Z");
    let path = dir.join("segment-logs");
    let args = ["replay", path.to_str().unwrap(), "--to-queue", &url, "--since", since, "--until", until, "--json"];
    let output = run_aws(&args).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let totals = report(&output)["backfill"]["totals"].clone();
    assert_eq!(totals, json!({"lines": 7, "events": 7, "sent": 4, "filtered": 2, "rejected": 0, "duplicates": 1}));
    let ids: BTreeSet<String> = drain(&sqs, &url).await.iter().map(message_id).collect();
    assert_eq!(ids, ["first", "slow-clock", "received-only", "last"].map(String::from).into());

    let refused = run_aws(&["replay", path.to_str().unwrap(), "--to-queue", &url, "--since", "yesterday"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("neither an RFC 3339 time"), "{}", text(&refused.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudderstack_archive_records_are_read_as_the_gateway_stored_them() {
    let dir = scratch("backfill-rudderstack");
    let event = |id: &str, kind: &str| {
        json!({"type": kind, "event": "Order Completed", "userId": "rs-1", "anonymousId": "a-1", "messageId": id,
               "rudderId": "5e0c-…", "channel": "web", "properties": {"revenue": 9.5},
               "originalTimestamp": "2024-06-01T10:00:00.000Z", "sentAt": "2024-06-01T10:00:02.000Z",
               "request_ip": "203.0.113.7", "context": {"library": {"name": "RudderLabs JavaScript SDK"}}})
    };
    // As the archiver writes a gateway job today: the payload's receivedAt is when the gateway got the request.
    let current = json!({"userId": "<<>>a-1<<>>rs-1", "createdAt": "2024-06-01T10:00:03.100Z", "messageId": "rs-m-1",
        "payload": {"batch": [event("rs-m-1", "track")], "receivedAt": "2024-06-01T10:00:03.000Z",
                    "writeKey": "2abc", "requestIP": "203.0.113.7"}});
    // A job of its older backups of the jobs table: no receivedAt but the job's.
    let older = json!({"JobID": 17, "UserID": "rs-1", "CustomVal": "GW", "WorkspaceId": "ws",
        "EventPayload": {"batch": [event("rs-m-2", "track"), event("rs-m-3", "bogus")], "writeKey": "2abc"},
        "CreatedAt": "2024-06-01T11:00:00Z"});
    let file = dir.join("rudder-backups/src/gw/2024-06-01/10/instance/1717236000_1717239600_ws_x.json.gz");
    gzip_file(&file, &[current.to_string(), older.to_string()]);
    let sqs = client(&endpoint());
    let url = fifo_queue(&sqs, 60).await;
    let path = dir.join("rudder-backups");
    let output = run_aws(&["replay", path.to_str().unwrap(), "--to-queue", &url]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let name = file.display();
    assert!(
        stdout.contains(&format!("rejected      {name}:2 [1]: type: must be one of identify, track, page, screen")),
        "{stdout}"
    );
    let received = drain(&sqs, &url).await;
    let events: Vec<Value> = received.iter().map(|m| serde_json::from_str::<Value>(&m.body).unwrap()).collect();
    let summary: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            let event = &e["event"];
            (
                e["message_id"].as_str().unwrap(),
                e["received_at"].as_str().unwrap(),
                event["timestamp"].as_str().unwrap(),
                event["request_ip"].as_str().unwrap(),
            )
        })
        .collect();
    // Skew-corrected from the gateway's receipt (2 s after sentAt, the client's clock being a second slow).
    assert_eq!(
        summary,
        [
            ("rs-m-1", "2024-06-01T10:00:03.000Z", "2024-06-01T10:00:01.000Z", "203.0.113.7"),
            ("rs-m-2", "2024-06-01T11:00:00.000Z", "2024-06-01T10:59:58.000Z", "203.0.113.7"),
        ]
    );
    assert!(received.iter().all(|m| m.group_id.as_deref() == Some("rs-1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_named_by_file_and_line_and_passed_over_and_strict_stops_at_the_first() {
    let dir = scratch("backfill-bad");
    let good = |id: &str| stored(id, "u-1", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z");
    let day = dir.join("segment-logs/src-1/1735689600000");
    let first = day.join("1735689600000.a.gz");
    let lines = vec![
        good("ok-1").to_string(),
        "{\"type\": \"track\", \"userId\": ".to_owned(),
        json!({"type": "track", "event": "E", "messageId": "no-user"}).to_string(),
        json!({"type": "track", "event": "E", "userId": "u-1", "messageId": "bad-time", "timestamp": "monday"})
            .to_string(),
        String::new(),
        "[1, 2]".to_owned(),
        good("ok-2").to_string(),
    ];
    gzip_file(&first, &lines);
    // Not UTF-8, then a good line.
    let second = day.join("1735693200000.b.gz");
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(b"{\"type\": \"track\", \"userId\": \"\xff\"}\n").unwrap();
    encoder.write_all(format!("{}\n", good("ok-3")).as_bytes()).unwrap();
    std::fs::write(&second, encoder.finish().unwrap()).unwrap();
    // Cut short in the middle of its gzip stream.
    let third = day.join("1735696800000.c.gz");
    let many: Vec<String> = (0..300).map(|i| good(&format!("cut-{i:03}")).to_string()).collect();
    gzip_file(&third, &many);
    let bytes = std::fs::read(&third).unwrap();
    std::fs::write(&third, &bytes[..bytes.len() / 2]).unwrap();

    let sqs = client(&endpoint());
    let url = fifo_queue(&sqs, 60).await;
    let path = dir.join("segment-logs");
    let ckpt = dir.join("bad.ckpt");
    let args = ["replay", path.to_str().unwrap(), "--to-queue", &url, "--checkpoint", ckpt.to_str().unwrap()];
    let output = run_aws(&args).await;
    assert!(output.status.success(), "bad lines do not stop the run: {}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let rejected: Vec<&str> = stdout.lines().filter(|l| l.starts_with("rejected")).collect();
    let (a, b, c) = (first.display(), second.display(), third.display());
    assert_eq!(rejected.len(), 6, "{stdout}");
    assert!(rejected[0].starts_with(&format!("rejected      {a}:2: is not JSON: EOF while parsing")), "{stdout}");
    assert_eq!(
        rejected[1],
        format!("rejected      {a}:3: userId: userId or anonymousId is required (a non-empty string or a number)")
    );
    assert!(rejected[2].starts_with(&format!("rejected      {a}:4: timestamp: must be an RFC 3339 timestamp")));
    assert!(rejected[3].starts_with(&format!("rejected      {a}:6: holds a JSON array, not an object")));
    assert_eq!(rejected[4], format!("rejected      {b}:1: is not UTF-8 text (the first bad byte is at offset 29)"));
    assert!(rejected[5].starts_with(&format!("rejected      {c}:")), "{stdout}");
    assert!(rejected[5].contains("the file cannot be read past line"), "{stdout}");
    let ids: Vec<String> = drain(&sqs, &url).await.iter().map(message_id).collect();
    assert_eq!(ids[..3], ["ok-1", "ok-2", "ok-3"]);
    assert!(ids.len() > 50 && ids.len() < 303 && ids[3..].iter().all(|id| id.starts_with("cut-")), "{}", ids.len());

    // --dry-run names the same lines, and sends nothing.
    let dry = run_aws(&["replay", path.to_str().unwrap(), "--dry-run"]).await;
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let checked: Vec<String> =
        text(&dry.stdout).lines().filter(|l| l.starts_with("rejected")).map(str::to_owned).collect();
    assert_eq!(checked, rejected);
    assert!(text(&dry.stdout).contains("valid (--dry-run: nothing sent)"), "{}", text(&dry.stdout));

    // --strict: the first bad line stops the run; nothing of it or after it is sent; the checkpoint is before it.
    let strict_ckpt = dir.join("strict.ckpt");
    let strict = run_aws(&[
        "replay",
        path.to_str().unwrap(),
        "--to-queue",
        &url,
        "--strict",
        "--checkpoint",
        strict_ckpt.to_str().unwrap(),
    ])
    .await;
    assert_eq!(strict.status.code(), Some(1));
    assert!(text(&strict.stderr).contains(&format!("Stopped at {a}:2 (--strict)")), "{}", text(&strict.stderr));
    assert_eq!(drain(&sqs, &url).await.iter().map(message_id).collect::<Vec<_>>(), ["ok-1"]);
    let saved = Checkpoint::load(&strict_ckpt).unwrap().unwrap();
    assert_eq!(saved.current.map(|p| p.lines), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gz_replayed_into_the_built_in_sandbox_leaves_its_people_and_events_at_their_archived_times() {
    let dir = scratch("backfill-sandbox");
    let identify = json!({"type": "identify", "userId": "arch-1", "messageId": "arch-id-1",
        "traits": {"email": "ada@example.com", "plan": "pro"},
        "originalTimestamp": "2024-03-01T09:00:00Z", "sentAt": "2024-03-01T09:00:00Z", "receivedAt": "2024-03-01T09:00:00Z"});
    let track = stored("arch-tr-1", "arch-1", "2024-03-02T10:00:00Z", "2024-03-02T10:00:00Z", "2024-03-02T10:00:00Z");
    let late = stored("arch-tr-2", "arch-1", "2024-03-03T10:00:00Z", "2024-03-03T10:00:00Z", "2024-03-03T10:00:00Z");
    let file = dir.join("segment-logs/src/1709251200000/1709283600000.x.gz");
    gzip_file(&file, &[identify.to_string(), track.to_string(), late.to_string()]);
    let tally = Arc::new(Tally::new(false, false));
    let replay = ReplayOptions {
        paths: vec![dir.join("segment-logs")],
        destination: Destination::Sandbox { rate_limit: 1_000_000, search_lag: 0 },
        write_keys: options().write_keys,
    };
    let mut backfill_options = BackfillOptions::new(vec![dir.join("segment-logs")]);
    backfill_options.until = parse_timestamp("2024-03-03T00:00:00Z");
    let (local, report) = replay_archives(
        replay,
        backfill_options,
        |_| None,
        tally.clone(),
        Arc::new(Progress::default()),
        Arc::new(AtomicBool::new(false)),
        &ignore,
    )
    .await
    .unwrap();
    assert_eq!((report.ending, report.totals.sent, report.totals.filtered), (Ending::Finished, 2, 1));
    let forwarded = tally.report();
    assert_eq!((forwarded.accepted, forwarded.delivered), (2, 2));
    let state = local.sandbox.as_ref().unwrap().state();
    let ada = by_external_id(&state)["arch-1"];
    assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
    let events: Vec<(&str, i64)> = state.events.iter().map(|e| (e.event_name.as_str(), e.created_at)).collect();
    assert_eq!(events, [("report exported", parse_timestamp("2024-03-02T10:00:00Z").unwrap().unix_timestamp())]);
}

const SECTION: &str = "# Backfill from a CDP's archive";

/// Every file under `dir`, as paths.
fn walk(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

/// Runs `command` with `sh` in `dir`, `cargo run --` being the binary under test; its stdout.
fn sh(dir: &Path, command: &str, env: &[(&str, String)]) -> String {
    let binary = env!("CARGO_BIN_EXE_intercom-relay");
    let command = command.replace("cargo run --release --", binary).replace("cargo run --", binary);
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(output.status.success(), "{command}: {}{}", text(&output.stdout), text(&output.stderr));
    text(&output.stdout)
}

/// The `sh` blocks of docs/backfill.md, comments dropped.
fn readme_blocks() -> Vec<Vec<String>> {
    let blocks = sh_blocks(&doc_section(SECTION));
    blocks.iter().map(|block| block.iter().filter_map(|command| without_comment(command)).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_backfill_commands_run_as_written() {
    let blocks = readme_blocks();
    assert_eq!(blocks.len(), 2, "a local block and a deployed one: {blocks:?}");
    let dir = scratch("backfill-readme");
    // The local block, every command as written.
    let local: Vec<String> = blocks[0].iter().map(|command| sh(&dir, command, &[])).collect();
    assert!(local[0].contains("500 events in 48 files"), "{}", local[0]);
    let replayed = local.last().unwrap();
    assert!(replayed.contains("events: 250 sent to the built-in sandbox, 250 outside --since/--until"), "{replayed}");
    assert!(replayed.contains("250 accepted, 0 rejected"), "{replayed}");

    // The deployed block, against moto: the local block's archive as Segment's S3 destination left it, in a bucket of
    // moto's S3; the page's `aws s3 sync` (the AWS CLI); the backfill into the queue of a stack of the page's name.
    let deployed = &blocks[1];
    let region = "eu-west-2";
    let operator = crate::stack::operator(region);
    let bucket = format!("segment-{}", uuid::Uuid::new_v4().simple());
    let upload = format!(
        "aws s3 mb s3://{bucket} && aws s3 cp sample-archive/segment-logs/gen-source \
         s3://{bucket}/segment-logs/gen-source --recursive --quiet"
    );
    sh(&dir, &upload, &operator);
    let sync = deployed.iter().find(|c| c.starts_with("aws s3 sync ")).expect("an aws s3 sync command");
    let mut env = operator.clone();
    env.extend([("BUCKET", bucket), ("SOURCE_ID", "gen-source".into())]);
    sh(&dir, sync, &env);
    let synced = walk(&dir.join("archive")).into_iter().filter(|path| path.ends_with(".gz")).count();
    assert_eq!(synced, 48, "the archive's files, synced from S3");
    let backfill = deployed.iter().find(|c| c.contains(" backfill ")).expect("a backfill command");
    let url = crate::stack::deploy("intercom-relay", region, crate::stack::events_queue_output()).await;
    let output = sh(&dir, backfill, &operator);
    assert!(output.contains("events: 500 sent to"), "{output}");
    assert_eq!(crate::stack::held(&crate::stack::sqs_in(region), &url).await.len(), 500);
    assert!(dir.join("backfill.ckpt").exists());
}

#[tokio::test]
async fn a_line_too_long_before_the_checkpoint_is_not_met_again_and_a_strict_resume_goes_past_it() {
    let dir = scratch("backfill-too-long");
    let event = |id: &str| json!({"type": "track", "userId": "u-1", "event": "E", "messageId": id}).to_string();
    let long = "x".repeat(intercom_relay::local::archive::MAX_LINE_BYTES + 1);
    let lines = [event("m-1"), long, event("m-2"), event("m-3")];
    std::fs::create_dir_all(dir.join("archive")).unwrap();
    std::fs::write(dir.join("archive/a.ndjson"), lines.join("\n") + "\n").unwrap();
    let archive = dir.join("archive");
    let checkpoint = dir.join("long.ckpt");
    let sqs = client(&endpoint());
    let url = fifo_queue(&sqs, 60).await;
    let args = [
        "replay",
        archive.to_str().unwrap(),
        "--to-queue",
        &url,
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--json",
    ];
    let first = run_aws(&[&args[..], &["--limit", "2"]].concat()).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(report(&first)["backfill"]["totals"]["rejected"], json!(1), "the long line, once");
    let resumed = run_aws(&[&args[..], &["--strict"]].concat()).await;
    assert!(resumed.status.success(), "stopped at the line the first run passed: {}", text(&resumed.stdout));
    let totals = &report(&resumed)["backfill"]["totals"];
    assert_eq!((&totals["sent"], &totals["rejected"]), (&json!(3), &json!(1)), "{totals}");
    let ids: Vec<String> = drain(&sqs, &url).await.iter().map(message_id).collect();
    assert_eq!(ids, ["m-1", "m-2", "m-3"]);
}
