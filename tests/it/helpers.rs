//! Building function-URL requests the way Lambda delivers them, and reading the answers.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use intercom_relay::sandbox::SandboxServer;
use intercom_relay_lambda::forward::{Executor, ForwardOptions, Forwarder};
use intercom_relay_lambda::ingest::{AllowedOrigins, Ingest, IngestOptions, WriteKeys, guard_base64};
use intercom_relay_lambda::intercom::{ApiVersion, IntercomClient};
use intercom_relay_lambda::queue::DeadLetter;
use intercom_relay_lambda::queue::{Enqueue, MemoryQueue};
use lambda_http::Request;
use lambda_http::http::{HeaderMap, StatusCode};
use lambda_http::request::LambdaRequest;
use secrecy::SecretString;
use serde_json::{Value, json};

pub(crate) const WRITE_KEY: &str = "test-write-key";
/// `Basic base64("test-write-key:")`, as analytics-python and RudderStack's SDKs send it.
pub(crate) const BASIC_AUTH: &str = "Basic dGVzdC13cml0ZS1rZXk6";
pub(crate) const ALLOWED_ORIGIN: &str = "https://www.example.com";

pub(crate) fn options() -> IngestOptions {
    IngestOptions {
        write_keys: WriteKeys::new(&[SecretString::from(WRITE_KEY)]).expect("one key"),
        allowed_origins: AllowedOrigins::parse(ALLOWED_ORIGIN).expect("a valid origin"),
        cors_headers: Default::default(),
    }
}

/// The handler in front of an in-memory queue.
pub(crate) fn memory_app() -> Ingest<MemoryQueue> {
    Ingest::new(options(), MemoryQueue::new())
}

pub(crate) fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("events")
}

/// A function-URL request from `events/requests/NAME`.
pub(crate) fn fixture(name: &str) -> Request {
    let path = events_dir().join("requests").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let event: LambdaRequest = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    guard_base64(event).into()
}

/// A function-URL request (payload format 2.0), read by lambda_http as the Lambda would read it.
pub(crate) fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Request {
    let (body, base64) = match body {
        None => (Value::Null, false),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Value::String(text.to_owned()), false),
            Err(_) => (Value::String(STANDARD.encode(bytes)), true),
        },
    };
    encoded_request(method, path, headers, body, base64)
}

/// A function-URL request whose `body` text Lambda marked (`isBase64Encoded`) as base64 or not, read as the ingest
/// function reads it: through [`guard_base64`], then lambda_http.
pub(crate) fn encoded_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
    base64: bool,
) -> Request {
    let headers: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), Value::String((*v).to_owned()))).collect();
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "test"},
            "requestId": "req-test",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": 1714564800000u64
        },
        "body": body,
        "isBase64Encoded": base64
    });
    let event: LambdaRequest = serde_json::from_value(event).expect("a valid function URL event");
    guard_base64(event).into()
}

/// A POST with the write key as Basic auth and a JSON content type.
pub(crate) fn post(path: &str, body: &str) -> Request {
    request("POST", path, &[("authorization", BASIC_AUTH), ("content-type", "application/json")], Some(body.as_bytes()))
}

/// What the handler answered.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub(crate) async fn send<Q: Enqueue>(app: &Ingest<Q>, request: Request) -> Answer {
    let response = app.handle(request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {bytes:?}"))
    };
    Answer { status, headers, body }
}

/// The events (envelope `event` objects) of a list of SQS-bound bodies.
pub(crate) fn envelope_events(bodies: impl IntoIterator<Item = String>) -> Vec<Value> {
    bodies
        .into_iter()
        .map(|body| {
            let envelope: Value = serde_json::from_str(&body).expect("an envelope is JSON");
            assert_eq!(envelope["version"], 1, "{envelope}");
            assert_eq!(envelope["message_id"], envelope["event"]["messageId"], "{envelope}");
            envelope["event"].clone()
        })
        .collect()
}

/// The real Intercom client pointed at a sandbox, authenticating with `token` (the sandbox's own, or a wrong one).
pub(crate) fn sandbox_client(sandbox: &SandboxServer, token: &str, timeout: Duration) -> IntercomClient {
    IntercomClient::new(&sandbox.url, SecretString::from(token), ApiVersion::V2_16, timeout).expect("a client")
}

/// A forwarder (one cold start) for `sandbox`, creating missing custom attributes.
pub(crate) fn forwarder<D: DeadLetter>(
    sandbox: &SandboxServer,
    dead_letter: D,
    options: ForwardOptions,
) -> Forwarder<IntercomClient, D> {
    let client = sandbox_client(sandbox, &sandbox.token(), options.call_timeout);
    Forwarder::new(Executor::new(client, true, NonZeroUsize::new(1000).unwrap()), dead_letter, options)
}

/// What the code logs while the guard lives, in memory (tracing's default subscriber for this thread).
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures at `level`, as JSON lines (what CloudWatch receives) or plain text.
    pub(crate) fn start(level: tracing::Level, json: bool) -> (Captured, tracing::subscriber::DefaultGuard) {
        // tracing caches each callsite's interest for the whole process, computed when the callsite is first hit, by
        // whichever thread hits it first. A sibling test's thread with no subscriber would cache `never`, and this
        // capture would silently miss the line. A global subscriber that takes everything (and writes nothing) keeps
        // every callsite's interest open; installing it rebuilds the interest of callsites already cached.
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        });
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt().with_max_level(level).with_ansi(false);
        let guard = if json {
            tracing::subscriber::set_default(builder.json().with_writer(move || writer.clone()).finish())
        } else {
            tracing::subscriber::set_default(builder.with_writer(move || writer.clone()).finish())
        };
        (captured, guard)
    }

    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("logs are UTF-8")
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The section under `heading` (a whole heading line, e.g. `## Secrets in Secrets Manager`) of README.md or of a page
/// in docs/: its text after the heading, up to the next heading of level 2 or 3. A heading found in no file, or more
/// than once, panics naming it: each heading a test reads is in exactly one place.
pub(crate) fn doc_section(heading: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if line.trim_end() == heading {
                found.push((
                    file.strip_prefix(root).unwrap().display().to_string(),
                    text[offset + line.trim_end().len()..].to_owned(),
                ));
            }
            offset += line.len();
        }
    }
    let places: Vec<&str> = found.iter().map(|(file, _)| file.as_str()).collect();
    assert!(
        found.len() == 1,
        "`{heading}` must be a heading of exactly one place in README.md and docs/*.md: {places:?}"
    );
    let section = found.remove(0).1;
    let end = ["\n## ", "\n### "].iter().filter_map(|next| section.find(next)).min();
    section[..end.unwrap_or(section.len())].to_owned()
}

/// The commands of each `sh` block of `section`, as a shell reads them: continuation lines joined; blank lines (as
/// empty commands) and comments kept.
pub(crate) fn sh_blocks(section: &str) -> Vec<Vec<String>> {
    let blocks = section.split("```sh\n").skip(1).map(|rest| rest.split("\n```").next().unwrap());
    blocks
        .map(|block| {
            let mut commands = vec![String::new()];
            for line in block.lines() {
                let last = commands.last_mut().unwrap();
                match line.strip_suffix('\\') {
                    Some(part) => last.push_str(part),
                    None => {
                        last.push_str(line);
                        commands.push(String::new());
                    }
                }
            }
            commands.pop();
            commands
        })
        .collect()
}

/// A command of [`sh_blocks`] without its comment (` # …`), `None` for a blank line or a comment alone.
pub(crate) fn without_comment(command: &str) -> Option<String> {
    let command = command.split(" #").next().unwrap().trim_end();
    (!command.trim().is_empty() && !command.trim_start().starts_with('#')).then(|| command.to_owned())
}
