//! The browser SDKs in a real browser: Debian's Chromium, driven by puppeteer-core (`tests/browser/run.mjs`), loads
//! analytics.js 2.0 and RudderStack's JS SDK v3 from a page on another 127.0.0.1 origin, set up as docs/sdks.md says,
//! each in its default and its batching (or beacon) mode, against `intercom-relay serve`. Chromium resolves no host but
//! 127.0.0.1. The test asserts what the sandbox holds and that the browser saw no CORS, network or console error.

use std::collections::BTreeMap;
use std::process::Command;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer, SandboxState};
use serde_json::{Value, json};

use crate::cli::{KEY, by_external_id, members, start_serve_with};
use crate::sdks::installed;

/// The runs of the harness: each is a page (a fresh browser profile) with its own people, named after the run.
const RUNS: [&str; 5] = ["ajs-default", "ajs-batching", "rs-xhr", "rs-batch", "rs-beacon"];
/// The last run sends one track with every retry header of both SDKs.
const PROBE: &str = "retry-headers";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What one run's visitor became: the user, with the visitor's lead merged in (its address replaced by the user's),
/// the page view and the track on them, and the company they joined.
fn assert_delivered(state: &SandboxState, run: &str) {
    let users = by_external_id(state);
    let user = format!("{run}-user");
    let contact = users.get(&user).unwrap_or_else(|| panic!("{run}: no user {user}; users: {:?}", users.keys()));
    assert_eq!(contact.role, "user", "{run}");
    assert_eq!(contact.email.as_deref(), Some(format!("{user}@example.com").as_str()), "{run}");
    assert_eq!(contact.fields.get("name"), Some(&json!(format!("Ada {run}"))), "{run}");
    assert_eq!(contact.custom_attributes["plan"], json!("pro"), "{run}");
    let visitor = format!("{run}-visitor@example.com");
    let left: Vec<_> = state.contacts.values().filter(|c| c.email.as_deref() == Some(visitor.as_str())).collect();
    assert!(left.is_empty(), "{run}: the visitor's lead was not merged into the user: {left:?}");
    assert_eq!(members(state, &format!("{run}-org")), [user.clone()].into(), "{run}");
    let events: BTreeMap<&str, &serde_json::Map<String, Value>> = state
        .events
        .iter()
        .filter(|e| e.contact_id == contact.id)
        .map(|e| (e.event_name.as_str(), &e.metadata))
        .collect();
    assert_eq!(events.get("report exported").map(|m| &m["rows"]), Some(&json!(3)), "{run}: {events:?}");
    assert!(events.contains_key("page_viewed"), "{run}: {events:?}");
}

/// What the browser saw in one run: every request to the relay answered 2xx, nothing else went wrong or out.
fn assert_clean(run: &Value) {
    let name = run["name"].as_str().unwrap();
    assert_eq!(run["error"], Value::Null, "{name}");
    for list in ["consoleErrors", "failedRequests", "outsideRequests", "pageErrors"] {
        assert_eq!(run[list], json!([]), "{name}: {list}");
    }
    let requests = run["requests"].as_array().unwrap();
    let events: usize = requests.iter().map(|r| r["events"].as_array().map_or(0, Vec::len)).sum();
    let expected = if name == PROBE { 1 } else { 8 };
    assert!(events >= expected, "{name}: {events} events sent: {requests:?}");
    for request in requests {
        assert!(request["status"].as_u64().is_some_and(|s| (200..300).contains(&s)), "{name}: {request}");
    }
}

/// How many of serve's request lines (`Ingest request handled.`) are of `method`.
fn handled(log: &str, method: &str) -> usize {
    let marker = format!("method={method} ");
    log.lines().filter(|l| l.contains("Ingest request handled.") && l.contains(&marker)).count()
}

/// One pass of the harness against its own `serve` and sandbox, with `CORS_ALLOWED_ORIGINS` set to `origins` (the
/// page's own origin when `None`); checks what the browser saw and what the sandbox holds.
async fn pass(origins: Option<&'static str>) -> Value {
    let (node, chromium) = (installed("SDK_NODE"), installed("CHROMIUM_PATH"));
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let (url, token) = (sandbox.url.clone(), sandbox.token());
    let page_port = free_port();
    let (output, stopped) = tokio::task::spawn_blocking(move || {
        let origin = origins.map_or_else(|| format!("http://127.0.0.1:{page_port}"), str::to_owned);
        let served = start_serve_with(&url, &token, &[("CORS_ALLOWED_ORIGINS", &origin)]);
        let harness = format!("{}/tests/browser/run.mjs", env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(node)
            .args([&harness, &served.url, KEY, "--page-port", &page_port.to_string()])
            .env("CHROMIUM_PATH", chromium)
            .output()
            .unwrap();
        (output, served.stop())
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let (status, summary, log) = stopped;
    assert!(status.success(), "{log}");
    let runs = report["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, [&RUNS[..], &[PROBE]].concat());
    for run in runs {
        assert_clean(run);
    }
    assert!(summary.contains(", 0 rejected;"), "{summary}");
    let state = sandbox.state();
    for run in RUNS {
        assert_delivered(&state, run);
    }
    let users = by_external_id(&state);
    let probe = users.get("retry-headers-user").expect("the retried track made its user");
    assert!(state.events.iter().any(|e| e.contact_id == probe.id && e.event_name == "retried"));
    // The preflights the browser sent are the ones serve answered (with the function URL's CORS, Lambda answers them).
    let preflights: u64 = runs.iter().map(|r| r["preflights"].as_u64().unwrap()).sum();
    assert_eq!(handled(&log, "OPTIONS") as u64, preflights, "{log}");
    assert!(handled(&log, "POST") > 0);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_js_and_rudderstack_in_chromium_put_everything_a_page_sends_into_intercom() {
    // The template's default (any origin), then only the page's origin listed.
    pass(Some("*")).await;
    let report = pass(None).await;
    std::fs::write(format!("{}/browser-test.json", env!("CARGO_TARGET_TMPDIR")), report.to_string()).unwrap();
}
