//! Fuzzes the ingest body path: the parsers on their own, then the whole handler (content type, gzip, size limits,
//! writeKey in the body) in front of an in-memory queue. Every answer is a 2xx or a 4xx with a JSON error, a refused
//! request queues nothing, and every queued event reads back as the forwarder reads it and maps within the contract.
#![no_main]

use std::io::Write;
use std::sync::LazyLock;

use flate2::Compression;
use flate2::write::GzEncoder;
use intercom_relay_lambda::envelope::Envelope;
use intercom_relay_lambda::event::{parse_batch, parse_single};
use intercom_relay_lambda::ingest::{AllowedOrigins, Ingest, IngestOptions, WriteKeys, accept_events};
use intercom_relay_lambda::mapping::map_event;
use intercom_relay_lambda::queue::MemoryQueue;
use lambda_http::Body;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use serde_json::Value;
use time::OffsetDateTime;

#[path = "../../tests/it/contract.rs"]
mod contract;

const ROUTES: [&str; 17] = [
    "/v1/identify",
    "/v1/track",
    "/v1/page",
    "/v1/screen",
    "/v1/group",
    "/v1/alias",
    "/v1/batch",
    "/v1/import",
    "/v1/i",
    "/v1/t",
    "/v1/p",
    "/v1/s",
    "/v1/g",
    "/v1/a",
    "/v1/b",
    "/v1/m",
    "/beacon/v1/batch?writeKey=test-write-key",
];
const CONTENT_TYPES: [Option<&str>; 4] = [Some("application/json"), Some("text/plain"), None, Some("image/png")];

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"));
static OPTIONS: LazyLock<IngestOptions> = LazyLock::new(|| IngestOptions {
    write_keys: WriteKeys::new(&[SecretString::from("test-write-key")]).expect("one key"),
    allowed_origins: AllowedOrigins::parse("https://www.example.com").expect("an origin"),
    cors_headers: Default::default(),
});

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).expect("in memory");
    encoder.finish().expect("in memory")
}

/// Every queued message reads back as the forwarder reads it, and maps to requests Intercom allows.
fn check_queued(body: &str) {
    let envelope =
        Envelope::from_body(body).unwrap_or_else(|e| panic!("a queued event does not read back ({e}): {body}"));
    if let Ok(plan) = map_event(&envelope.event) {
        if let Err(problem) = contract::plan_keeps_the_contract(&plan) {
            panic!("{problem} in {body}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The last byte picks the route, the encoding and the content type; the whole input is the body, so seed files
    // (JSON ending in '}' or a newline) are read intact.
    let Some(&mode) = data.last() else { return };
    if let Ok(text) = std::str::from_utf8(data) {
        let received_at = OffsetDateTime::from_unix_timestamp(1_714_564_800).expect("a time");
        for batch in [parse_single(text), parse_batch(text)].into_iter().flatten() {
            if let Ok((messages, _)) =
                accept_events(&batch, None, received_at, intercom_relay_lambda::envelope::KeyKind::Server)
            {
                messages.iter().for_each(|message| check_queued(&message.body));
            }
        }
    }

    let path = ROUTES[usize::from(mode) % ROUTES.len()];
    let (encoding, body) = match (mode >> 3) % 4 {
        0 => (None, data.to_vec()),
        1 => (Some("gzip"), data.to_vec()),
        2 => (Some("gzip"), gzip(data)),
        _ => (Some("identity"), data.to_vec()),
    };
    let mut request = lambda_http::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", "Basic dGVzdC13cml0ZS1rZXk6");
    if let Some(content_type) = CONTENT_TYPES[usize::from(mode >> 5) % CONTENT_TYPES.len()] {
        request = request.header("content-type", content_type);
    }
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let request = request.body(Body::from(body)).expect("a request");
    let app = Ingest::new(OPTIONS.clone(), MemoryQueue::new());
    let response = RUNTIME.block_on(app.handle(request));
    let status = response.status().as_u16();
    let answer: Value = match response.body() {
        Body::Empty => Value::Null,
        body => serde_json::from_slice(body.as_ref()).unwrap_or_else(|e| panic!("status {status}: not JSON ({e})")),
    };
    match status {
        200..=299 => {
            let queued = app.queue().messages();
            assert!(!queued.is_empty(), "a 2xx queued nothing: {answer}");
            if let Some(accepted) = answer["accepted"].as_u64() {
                assert_eq!(queued.len() as u64, accepted, "{answer}");
            }
            queued.iter().for_each(|message| check_queued(&message.body));
        }
        400..=499 => {
            assert_eq!(answer["success"], false, "{answer}");
            assert!(answer["error"]["code"].is_string(), "{answer}");
            assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
            assert!(app.queue().is_empty(), "a refused request queued events: {answer}");
        }
        _ => panic!("status {status}: {answer}"),
    }
});
