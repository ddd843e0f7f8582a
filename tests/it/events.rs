//! Every file in events/ is exercised: each request is answered as its name says and the queue holds what it should;
//! each SQS event is forwarded to the sandbox with the outcomes listed.

use std::path::Path;
use std::time::Duration;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use intercom_relay_lambda::forward::ForwardOptions;
use intercom_relay_lambda::queue::{MemoryDeadLetter, SqsEvent};

use crate::helpers::{events_dir, fixture, forwarder, memory_app, send};

/// Each request file, its expected status and how many events it queues.
const REQUESTS: &[(&str, u16, usize)] = &[
    ("alias.json", 200, 1),
    ("batch-gzip.json", 200, 3),
    ("batch-partly-invalid.json", 200, 1),
    ("batch.json", 200, 4),
    ("group.json", 200, 1),
    ("identify.json", 200, 1),
    ("page.json", 200, 1),
    ("screen.json", 200, 1),
    ("track-beacon.json", 200, 1),
    ("track.json", 200, 1),
    ("invalid/all-events-invalid.json", 400, 0),
    ("invalid/bad-base64.json", 400, 0),
    ("invalid/bad-gzip.json", 400, 0),
    ("invalid/bad-timestamp.json", 400, 0),
    ("invalid/malformed-json.json", 400, 0),
    ("invalid/missing-ids.json", 400, 0),
    ("invalid/no-write-key.json", 401, 0),
    ("invalid/oversize-event.json", 413, 0),
    ("invalid/track-without-event.json", 400, 0),
    ("invalid/type-mismatch.json", 400, 0),
    ("invalid/unknown-path.json", 404, 0),
    ("invalid/wrong-method.json", 405, 0),
    ("invalid/wrong-write-key.json", 401, 0),
];

fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), &format!("{name}/"), out);
        } else if name.ends_with(".json") {
            out.push(name);
        }
    }
}

#[test]
fn every_request_file_is_in_the_table() {
    let mut files = Vec::new();
    files_under(&events_dir().join("requests"), "", &mut files);
    files.sort();
    let mut listed: Vec<String> = REQUESTS.iter().map(|(name, ..)| (*name).to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed, "add new files in events/requests to REQUESTS");
}

#[tokio::test]
async fn every_request_file_is_answered_as_expected() {
    for (name, status, queued) in REQUESTS {
        let app = memory_app();
        let answer = send(&app, fixture(name)).await;
        assert_eq!(answer.status.as_u16(), *status, "{name}: {}", answer.body);
        assert_eq!(app.queue().len(), *queued, "{name}");
        let success = *status == 200;
        assert_eq!(answer.body["success"], success, "{name}: {}", answer.body);
        if !success {
            assert!(answer.body["error"]["code"].is_string() && answer.body["error"]["message"].is_string(), "{name}");
        }
    }
}

/// Each SQS event file (what Lambda hands the forward function) and the outcome of each of its records, in order.
const SQS_EVENTS: &[(&str, &[&str])] =
    &[("batch.json", &["delivered", "delivered", "delivered", "delivered", "skipped", "dead_lettered"])];

#[test]
fn every_sqs_event_file_is_in_the_table() {
    let mut files = Vec::new();
    files_under(&events_dir().join("sqs"), "", &mut files);
    files.sort();
    let listed: Vec<String> = SQS_EVENTS.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(files, listed, "add new files in events/sqs to SQS_EVENTS");
}

#[tokio::test]
async fn every_sqs_event_file_is_forwarded_to_the_sandbox_as_expected() {
    for (name, expected) in SQS_EVENTS {
        let text = std::fs::read_to_string(events_dir().join("sqs").join(name)).unwrap();
        let event: SqsEvent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
        let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), ForwardOptions::default());
        let report = forwarder.handle(&event, tokio::time::Instant::now() + Duration::from_secs(30)).await;
        let outcomes: Vec<String> = report
            .records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap()["outcome"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&outcomes, expected, "{name}: {report:?}");
        let dead = forwarder.dead_letter().letters().len();
        assert_eq!(dead, expected.iter().filter(|o| **o == "dead_lettered").count(), "{name}");
        assert!(!sandbox.state().contacts.is_empty(), "{name}: Intercom holds what was delivered");
    }
}
