//! Every file in events/ is exercised: each request is answered as its name says, and the queue holds what it should.

use std::path::Path;

use crate::helpers::{events_dir, fixture, memory_app, send};

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
