//! The `intercom-relay` binary as a user runs it: `replay` of events/ and of hand-made files, `serve` fed over HTTP as
//! the SDKs send, `sandbox` alone; what the sandbox ends up holding, the report's figures and the exit statuses.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use intercom_relay::local::{Destination, ReplayOptions, Tally, replay};
use intercom_relay::sandbox::{Faults, SandboxOptions, SandboxServer, SandboxState};
use serde_json::{Value, json};

use crate::helpers::{BASIC_AUTH, events_dir, options};

pub(crate) fn relay() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_intercom-relay"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("WRITE_KEYS").env_remove("RUST_LOG");
    command
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `intercom-relay ARGS` to the end (on a blocking thread, so a sandbox in this process keeps answering).
pub(crate) async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = relay();
    command.args(args).envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs")).await.unwrap()
}

pub(crate) fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
}

/// A fresh directory under the target directory, for files a test writes.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn by_external_id(state: &SandboxState) -> BTreeMap<String, &intercom_relay::sandbox::Contact> {
    state.contacts.values().filter_map(|c| Some((c.external_id.clone()?, c))).collect()
}

/// The company ids of `company_id`'s contacts, as external ids.
pub(crate) fn members(state: &SandboxState, company_id: &str) -> BTreeSet<String> {
    let id = &state.companies.values().find(|c| c.company_id == company_id).expect(company_id).id;
    state.contacts.values().filter(|c| c.companies.contains(id)).filter_map(|c| c.external_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_events_leaves_the_people_companies_and_events_of_the_samples_in_intercom() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let output = run(
        &["replay", "events/", "--intercom-url", &sandbox.url, "--json"],
        &[("INTERCOM_ACCESS_TOKEN", &sandbox.token())],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report(&output);
    let state = sandbox.state();

    let users = by_external_id(&state);
    let expected: BTreeSet<&str> = [
        "1002",
        "u-1",
        "u-2",
        "user-1001",
        "user-1002",
        "user-1003",
        "user-1004",
        "user-1005",
        "user-1006",
        "user-1007",
        "user-1008",
        "user-1009",
        "user-2001",
        "user-3001",
        "user-4001",
        "user-5001",
        "user-5002",
    ]
    .into();
    assert_eq!(users.keys().map(String::as_str).collect::<BTreeSet<_>>(), expected);
    let leads: BTreeSet<_> =
        state.contacts.values().filter(|c| c.role == "lead").filter_map(|c| c.email.as_deref()).collect();
    assert_eq!(leads, ["lead@example.com", "rudder@example.com"].into());
    let ada = users["user-1001"];
    assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
    assert_eq!(ada.fields["name"], "Augusta Ada King", "the later identify's name");
    assert_eq!((&ada.custom_attributes["plan"], &ada.custom_attributes["logins"]), (&json!("pro"), &json!(42)));

    assert_eq!(state.companies.len(), 6, "detaching from org-old creates no company");
    assert_eq!(members(&state, "org-77"), ["user-1001".to_owned(), "user-1007".to_owned()].into());
    assert_eq!(members(&state, "org-88"), ["user-1008".to_owned(), "user-2001".to_owned()].into());
    assert_eq!(members(&state, "4242"), ["user-1002".to_owned()].into());
    // Two samples of the same second update org-77 for two people (a group: enterprise, 250; an identify's company:
    // growth, 120). People are forwarded concurrently, so either may land last: the company holds the last update. (A
    // company with a change is written whole, never as changes alone: each upsert carries both fields.)
    let upserts: Vec<Value> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/companies" && r.status == 200)
        .filter_map(|r| r.body.filter(|body| body["company_id"] == "org-77"))
        .collect();
    let sent: BTreeSet<String> = upserts.iter().map(|b| format!("{} {}", b["plan"], b["size"])).collect();
    assert!(sent.contains(r#""enterprise" 250"#) && sent.contains(r#""growth" 120"#), "{sent:?}");
    let last = upserts.last().unwrap();
    let org_77 = state.companies.values().find(|c| c.company_id == "org-77").unwrap();
    assert_eq!((&org_77.fields["plan"], &org_77.fields["size"]), (&last["plan"], &last["size"]));

    let event = |user: &str, name: &str| {
        let contact = &users[user].id;
        let found = state.events.iter().find(|e| &e.contact_id == contact && e.event_name == name);
        found.unwrap_or_else(|| panic!("{user} {name}: {:?}", state.events)).metadata.clone()
    };
    assert_eq!(
        Value::Object(event("user-1001", "order completed")),
        json!({"price": {"amount": 4250, "currency": "eur"}, "order_id": "ord-5001", "coupon": "SPRING"})
    );
    assert_eq!(Value::Object(event("user-2001", "report exported")), json!({"format": "csv", "rows": 1200}));
    assert_eq!(
        Value::Object(event("u-2", "page_viewed")),
        json!({"url": "https://example.com/pricing", "name": "Pricing"})
    );
    assert_eq!(state.events.len(), 24);

    // Every accepted event ended one way, and every call the sandbox answered is in the report.
    let (accepted, delivered) = (report["accepted"].as_u64().unwrap(), report["delivered"].as_u64().unwrap());
    let (skipped, dead) = (report["skipped"].as_array().unwrap(), report["dead_lettered"].as_array().unwrap());
    assert_eq!((accepted, delivered, skipped.len(), dead.len()), (60, 49, 10, 1));
    // Without settings, only the events' own integrations objects skip anything.
    let by_rule: BTreeMap<&str, &str> =
        skipped.iter().filter_map(|s| Some((s["message_id"].as_str()?, s.get("skipped_by")?.as_str()?))).collect();
    assert_eq!(
        by_rule,
        [("rules-all-off", "integrations.All"), ("rules-intercom-off", "integrations.Intercom")].into()
    );
    assert_eq!(accepted, delivered + skipped.len() as u64 + dead.len() as u64);
    assert_eq!(report["events"].as_array().unwrap().len() as u64, accepted);
    let calls = &report["intercom_calls"];
    assert_eq!(calls["total"].as_u64().unwrap() as usize, sandbox.requests().len());
    assert_eq!(
        calls["total"],
        calls["by_endpoint"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum::<u64>()
    );
    let per_event: usize =
        report["events"].as_array().unwrap().iter().map(|e| e["calls"].as_array().unwrap().len()).sum();
    assert_eq!(per_event, sandbox.requests().len());
    assert_eq!(dead[0]["reason"]["error_code"], "malformed_envelope");
    assert_eq!(dead[0]["source"], "events/sqs/batch.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_on_the_built_in_sandbox_reports_each_event_and_strict_fails_on_rejections() {
    // Intercom's search index lags minutes; 30 s is enough to outlast the whole run.
    let output = run(&["replay", "events/", "--search-lag", "30"], &[]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("-> 400"), "no request the sandbox refuses for a contract rule: {stdout}");
    // The aliases of an unknown previous id are skipped at once: the identity store (in memory) holds the visitor for
    // the user instead of handing the alias back for ALIAS_WAIT. Nothing is handed back.
    let summary = stdout.lines().find(|line| line.starts_with("60 accepted")).unwrap_or_else(|| panic!("{stdout}"));
    let (counts, rest) = summary.split_once("; ").map(|(_, rest)| rest.split_once("; ").unwrap()).unwrap();
    assert_eq!(counts, "49 delivered, 10 skipped, 1 dead-lettered", "no hand-backs: {stdout}");
    assert!(
        rest.ends_with(" Intercom calls.") && rest.split(' ').next().unwrap().parse::<usize>().is_ok(),
        "{summary}"
    );
    assert!(stdout.contains("Intercom: the sandbox at http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("it holds 19 contacts (2 leads), 6 companies, 24 events"), "{stdout}");
    let track = "delivered     track    msg-track-1001  (events/requests/track.json)\n    POST /events -> 202\n";
    assert!(stdout.contains(track), "{stdout}");
    assert!(stdout.contains("rejected      events/requests/invalid/wrong-write-key.json: the write key is not valid"));

    let strict = run(&["replay", "events/", "--strict", "--json"], &[]).await;
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict.stderr));
    assert_eq!(report(&strict)["rejected"].as_array().unwrap().len(), 17);
    let clean = run(&["replay", "events/segment", "--strict"], &[]).await;
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_ndjson_arrays_and_batches_and_names_each_events_place() {
    let dir = scratch("replay-shapes");
    let track = |id: &str, user: &str| json!({"type": "track", "userId": user, "event": "Signed In", "messageId": id});
    let batch_line = json!({"sentAt": "2026-11-22T10:00:00Z", "batch": [track("n-3", "nd-2")]});
    let ndjson =
        format!("{}\n\n{}\n{batch_line}\n", track("n-1", "nd-1"), json!({"type": "track", "messageId": "n-2"}));
    std::fs::write(dir.join("events.ndjson"), ndjson).unwrap();
    std::fs::write(dir.join("list.json"), json!([track("a-1", "ar-1"), track("a-2", "ar-2")]).to_string()).unwrap();
    std::fs::write(dir.join("notes.txt"), "not walked: only .json, .ndjson and .jsonl").unwrap();
    let batch = json!({"batch": [track("b-1", "ba-1"), {"type": "identify", "messageId": "b-2"}], "context": {"ip": "203.0.113.9"}});
    std::fs::write(dir.join("batch.json"), batch.to_string()).unwrap();
    let output = run(&["replay", dir.to_str().unwrap(), "--json", "--show-requests"], &[]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report(&output);
    let sources: Vec<(&str, &str, &str)> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["source"].as_str().unwrap(), e["message_id"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    let d = dir.display();
    let (batch, ndjson, list) =
        (format!("{d}/batch.json [0]"), format!("{d}/events.ndjson:1"), format!("{d}/list.json"));
    assert_eq!(
        sources,
        [
            (batch.as_str(), "b-1", "delivered"),
            (ndjson.as_str(), "n-1", "delivered"),
            (&format!("{d}/events.ndjson:4 [0]"), "n-3", "delivered"),
            (&format!("{list} [0]"), "a-1", "delivered"),
            (&format!("{list} [1]"), "a-2", "delivered")
        ]
    );
    let rejected: Vec<(&str, u64)> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["source"].as_str().unwrap(), r["index"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(rejected, [(format!("{d}/batch.json").as_str(), 1), (format!("{d}/events.ndjson:3").as_str(), 0)]);
    let paths: Vec<&Value> = report["rejected"][1]["errors"].as_array().unwrap().iter().map(|e| &e["path"]).collect();
    assert_eq!(paths, [&json!("userId"), &json!("event")]);
    // Each track of a new user: 404, create the contact, then the event; the bodies are the requests Intercom got.
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 15);
    let of_b1: Vec<(&str, &str, u64, &Value)> = requests
        .iter()
        .filter(|r| r["message_id"] == "b-1")
        .map(|r| {
            let (method, path) = (r["method"].as_str().unwrap(), r["path"].as_str().unwrap());
            (method, path, r["status"].as_u64().unwrap(), &r["body"])
        })
        .collect();
    let statuses: Vec<(&str, &str, u64)> = of_b1.iter().map(|(m, p, s, _)| (*m, *p, *s)).collect();
    assert_eq!(statuses, [("POST", "/events", 404), ("POST", "/contacts", 200), ("POST", "/events", 202)]);
    assert_eq!((&of_b1[1].3["external_id"], &of_b1[2].3["event_name"]), (&json!("ba-1"), &json!("Signed In")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_replay_cannot_read_is_named_and_nothing_is_sent() {
    let dir = scratch("replay-unknown");
    std::fs::write(dir.join("a-good.json"), json!({"type": "track", "userId": "u", "event": "E"}).to_string()).unwrap();
    std::fs::write(dir.join("b-unknown.json"), json!({"user": "u"}).to_string()).unwrap();
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let output = run(
        &["replay", dir.to_str().unwrap(), "--intercom-url", &sandbox.url],
        &[("INTERCOM_ACCESS_TOKEN", &sandbox.token())],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("b-unknown.json: is a JSON object of no shape replay knows: expected a Segment event"),
        "{stderr}"
    );
    assert!(sandbox.requests().is_empty(), "nothing may be sent when an input is unreadable");

    let missing = run(&["replay", "no/such/dir"], &[]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no/such/dir: No such file or directory"), "{}", text(&missing.stderr));
    let usage = run(&["replay"], &[]).await;
    assert_eq!(usage.status.code(), Some(2));
    assert!(text(&usage.stderr).contains("the following required arguments were not provided"));
    let live_by_url = run(&["replay", "events/segment", "--intercom-url", "https://api.intercom.io"], &[]).await;
    assert_eq!(live_by_url.status.code(), Some(2));
    assert!(text(&live_by_url.stderr).contains("is the real Intercom: use --live"), "{}", text(&live_by_url.stderr));
    let no_dlq = run(&["serve", "--port", "0"], &[("QUEUE_URL", "http://127.0.0.1:9/000000000000/events.fifo")]).await;
    assert_eq!(no_dlq.status.code(), Some(2));
    assert!(text(&no_dlq.stderr).contains("with QUEUE_URL set, DLQ_URL must name the dead-letter queue too"));
    let live = run(&["replay", "events/segment", "--live"], &[("INTERCOM_ACCESS_TOKEN", "")]).await;
    assert_eq!(live.status.code(), Some(2));
    assert!(text(&live.stderr).contains("INTERCOM_ACCESS_TOKEN is not set"), "{}", text(&live.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_as_a_library_leaves_the_built_in_sandbox_to_look_at() {
    let tally = Arc::new(Tally::new(true, false));
    let options = ReplayOptions {
        paths: vec![events_dir().join("requests/batch.json")],
        destination: Destination::Sandbox { rate_limit: 1666, search_lag: 5 },
        write_keys: options().write_keys,
    };
    let local = replay(options, |_| None, tally.clone()).await.unwrap();
    let state = local.sandbox.as_ref().unwrap().state();
    assert_eq!(by_external_id(&state).keys().collect::<Vec<_>>(), ["user-2001"]);
    assert_eq!(members(&state, "org-88"), ["user-2001".to_owned()].into());
    let report = tally.report();
    assert_eq!((report.accepted, report.delivered, report.skipped.len()), (4, 3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_hands_back_what_fails_keeps_each_persons_order_and_dead_letters_past_the_horizon() {
    // Every call about u-bad fails with 500/503; u-ok's succeed.
    let faults = Faults { seed: 7, server_errors: 1.0, only_matching: Some("u-bad".into()), ..Faults::default() };
    let sandbox = SandboxServer::start(SandboxOptions { faults, ..SandboxOptions::default() }, 0).await.unwrap();
    let dir = scratch("replay-faults");
    let track = |id: &str, user: &str| json!({"type": "track", "userId": user, "event": "Tried", "messageId": id});
    let lines = [track("bad-1", "u-bad"), track("ok-1", "u-ok"), track("bad-2", "u-bad"), track("ok-2", "u-ok")];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("events.ndjson"), text).unwrap();
    let token = sandbox.token();
    let env = move |name: &str| match name {
        "INTERCOM_ACCESS_TOKEN" => Some(token.clone()),
        "INTERCOM_RETRY_ATTEMPTS" => Some("1".to_owned()),
        // The deployed rules with time compressed: tried for 2 s, 200 ms to 500 ms apart.
        "RETRY_HORIZON" => Some("2s".to_owned()),
        "RETRY_BACKOFF_MIN" => Some("200ms".to_owned()),
        "RETRY_BACKOFF_MAX" => Some("500ms".to_owned()),
        _ => None,
    };
    let tally = Arc::new(Tally::new(true, false));
    let options = ReplayOptions {
        paths: vec![dir],
        destination: Destination::Url(sandbox.url.clone()),
        write_keys: options().write_keys,
    };
    replay(options, env, tally.clone()).await.unwrap();
    let report = tally.report();
    assert_eq!((report.accepted, report.delivered, report.dead_lettered.len()), (4, 2, 2));
    assert!(report.handed_back >= 6, "bad-1 tried again and again for 2 s, bad-2 behind it: {}", report.handed_back);
    assert_eq!(report.accepted, report.finished());
    let dead: Vec<(&str, &Value)> =
        report.dead_lettered.iter().map(|d| (d.message_id.as_deref().unwrap(), &d.reason["error_code"])).collect();
    assert_eq!(dead, [("bad-1", &json!("retries_exhausted")), ("bad-2", &json!("retries_exhausted"))]);
    let users = by_external_id(&sandbox.state()).into_keys().collect::<Vec<_>>();
    assert_eq!(users, ["u-ok"]);
}

/// `intercom-relay serve` on a free port, sending to `sandbox`; its stdout's first line gives the URL.
pub(crate) struct Served {
    child: Child,
    pub(crate) url: String,
    stdout: BufReader<std::process::ChildStdout>,
}

pub(crate) const KEY: &str = "test-write-key";

pub(crate) fn start_serve(intercom_url: &str, token: &str) -> Served {
    start_serve_with(intercom_url, token, &[])
}

pub(crate) fn start_serve_with(intercom_url: &str, token: &str, env: &[(&str, &str)]) -> Served {
    let mut child = relay()
        .args(["serve", "--port", "0", "--intercom-url", intercom_url])
        .envs(env.iter().copied())
        .env("INTERCOM_ACCESS_TOKEN", token)
        .env("WRITE_KEYS", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let url = first.trim().rsplit(' ').next().expect("a URL").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    Served { child, url, stdout }
}

impl Served {
    /// SIGTERM, then everything it printed after the first line (stdout) and its log (stderr).
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        let killed = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        self.stdout.read_to_string(&mut stdout).unwrap();
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (status, stdout, stderr)
    }
}

/// Posts `batch` to `/v1/batch` of `url` with the test write key as Basic auth, as analytics-python does.
pub(crate) async fn post_batch(url: &str, batch: &Value) -> reqwest::StatusCode {
    let request =
        reqwest::Client::new().post(format!("{url}/v1/batch")).header("authorization", BASIC_AUTH).json(batch);
    request.send().await.unwrap().status()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_batches_as_the_sdks_send_them_and_forwards_what_is_queued_before_it_stops() {
    // Every answer 300 ms late: forwarding is still under way when serve is told to stop.
    let faults = Faults { slow: 1.0, slow_by: std::time::Duration::from_millis(300), ..Faults::default() };
    let sandbox = SandboxServer::start(SandboxOptions { faults, ..SandboxOptions::default() }, 0).await.unwrap();
    let served = tokio::task::spawn_blocking({
        let url = sandbox.url.clone();
        let token = sandbox.token();
        move || start_serve(&url, &token)
    });
    let served = served.await.unwrap();
    let http = reqwest::Client::new();
    // As analytics-python sends: Basic auth, a JSON batch with sentAt and a batch-level context.
    let python = json!({
        "batch": [
            {"type": "identify", "userId": "py-1", "messageId": "py-m-1", "traits": {"email": "py@example.com", "plan": "pro"}},
            {"type": "track", "userId": "py-1", "event": "Report Exported", "messageId": "py-m-2", "properties": {"rows": 3}},
        ],
        "sentAt": "2026-11-22T10:00:00.000Z",
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
    });
    let answer = http
        .post(format!("{}/v1/batch", served.url))
        .header("authorization", BASIC_AUTH)
        .json(&python)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap(), json!({"success": true}));
    // As analytics-node and RudderStack's SDKs send: gzip, the write key in the body.
    let node = json!({
        "batch": [
            {"type": "group", "userId": "node-1", "groupId": "org-9", "messageId": "node-m-1", "traits": {"name": "Nine"}},
            {"type": "page", "userId": "node-1", "name": "Pricing", "messageId": "node-m-2", "properties": {"path": "/pricing"}},
        ],
        "writeKey": KEY,
    });
    let answer = http
        .post(format!("{}/v1/batch", served.url))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(node.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let refused = http.post(format!("{}/v1/track", served.url)).basic_auth("wrong", Some("")).json(&json!({})).send();
    assert_eq!(refused.await.unwrap().status(), 401);

    // Stopped at once: what was accepted is forwarded before the process ends.
    let forwarded_before_stop = sandbox.state().events.len();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || served.stop()).await.unwrap();
    assert!(forwarded_before_stop < 2, "the stop must come while forwarding is under way");
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("Stopped. 4 accepted, 1 rejected; 4 delivered, 0 skipped, 0 dead-lettered"), "{stdout}");
    assert_eq!(stderr.matches("Delivered.").count(), 4, "one log line per delivered event: {stderr}");
    let state = sandbox.state();
    let users = by_external_id(&state);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["node-1", "py-1"]);
    assert_eq!(users["py-1"].custom_attributes["plan"], "pro");
    assert_eq!(members(&state, "org-9"), ["node-1".to_owned()].into());
    let names: BTreeSet<&str> = state.events.iter().map(|e| e.event_name.as_str()).collect();
    assert_eq!(names, ["page_viewed", "report exported"].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_queue_url_goes_through_sqs_and_deletes_what_it_forwarded() {
    let endpoint = crate::sqs::endpoint();
    let sqs = crate::sqs::client(&endpoint);
    let (queue_url, dlq_url) =
        (crate::forward_batch::fifo_queue(&sqs, 30).await, crate::forward_batch::fifo_queue(&sqs, 30).await);
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let (url, token) = (sandbox.url.clone(), sandbox.token());
    let env: Vec<(String, String)> = vec![
        ("QUEUE_URL".into(), queue_url.clone()),
        ("DLQ_URL".into(), dlq_url.clone()),
        ("AWS_ENDPOINT_URL_SQS".into(), endpoint.clone()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ];
    let served = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        start_serve_with(&url, &token, &env)
    })
    .await
    .unwrap();
    let batch = json!({"batch": [
        {"type": "identify", "userId": "sqs-1", "messageId": "sqs-m-1", "traits": {"email": "sqs@example.com"}},
        {"type": "track", "userId": "sqs-1", "event": "Queued", "messageId": "sqs-m-2"},
        {"type": "track", "userId": "sqs-2", "event": "Queued", "messageId": "sqs-m-3"},
    ]});
    assert_eq!(post_batch(&served.url, &batch).await, 200);
    // SQS keeps what is not forwarded when serve stops, so wait for the sandbox to hold all three.
    for _ in 0..200 {
        if sandbox.state().events.len() == 2 && sandbox.state().contacts.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || served.stop()).await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("queue:     SQS http://"), "{stdout}");
    assert!(stdout.contains("3 accepted, 0 rejected; 3 delivered"), "{stdout}\n{stderr}");
    let state = sandbox.state();
    assert_eq!(by_external_id(&state).keys().collect::<Vec<_>>(), ["sqs-1", "sqs-2"]);
    assert!(crate::sqs::drain(&sqs, &queue_url).await.is_empty(), "forwarded messages are deleted");
    assert!(crate::sqs::drain(&sqs, &dlq_url).await.is_empty());
}

/// Starts `intercom-relay ARGS` and reads the first `count` lines it prints; the caller stops it.
fn first_lines(args: &[&str], count: usize) -> (Child, String) {
    let mut child = relay().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("the binary starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = String::new();
    for _ in 0..count {
        stdout.read_line(&mut lines).unwrap();
    }
    (child, lines)
}

#[test]
fn serve_makes_a_write_key_when_none_is_set_and_prints_it() {
    let (mut child, lines) = first_lines(&["serve", "--port", "0"], 4);
    child.kill().unwrap();
    child.wait().unwrap();
    let key = lines.lines().find_map(|l| l.trim().strip_prefix("write key: ")).expect(&lines);
    assert!(key.starts_with("local-") && key.contains("(made for this run; set WRITE_KEYS to choose)"), "{lines}");
    assert!(lines.contains("Intercom:  the sandbox at http://127.0.0.1:"), "{lines}");
}

#[test]
fn sandbox_alone_prints_its_url_and_token_and_serves_its_state() {
    // docs/local.md's second `sandbox` command, as written.
    let args = ["sandbox", "--port", "0", "--token", "my-token", "--rate-limit", "100", "--search-lag", "60"];
    let (mut child, lines) = first_lines(&args, 2);
    let url = lines.lines().next().and_then(|l| l.rsplit(' ').next()).unwrap().to_owned();
    let (created, limit, searched, found, state, requests) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::new();
        let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
            let request = http.request(method, format!("{url}{path}")).bearer_auth("my-token");
            let request = request.header("Intercom-Version", "2.16");
            match body {
                Some(body) => request.json(&body).send(),
                None => request.send(),
            }
        };
        let created = call(reqwest::Method::POST, "/contacts", Some(json!({"role": "user", "external_id": "alone-1"})))
            .await
            .unwrap();
        let limit = created.headers()["x-ratelimit-limit"].to_str().unwrap().to_owned();
        let query = json!({"query": {"field": "external_id", "operator": "=", "value": "alone-1"}});
        let searched = call(reqwest::Method::POST, "/contacts/search", Some(query)).await.unwrap();
        let searched: Value = searched.json().await.unwrap();
        let found = call(reqwest::Method::GET, "/contacts/find_by_external_id/alone-1", None).await.unwrap().status();
        let get = |path: &'static str| {
            let http = http.clone();
            let url = url.clone();
            async move { http.get(format!("{url}{path}")).send().await.unwrap().json::<Value>().await.unwrap() }
        };
        (created.status(), limit, searched, found, get("/_sandbox/state").await, get("/_sandbox/requests").await)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lines.contains("token: my-token"), "{lines}");
    assert_eq!((created.as_u16(), limit.as_str()), (200, "100"));
    assert_eq!(searched["total_count"], 0, "the search index lags 60 s behind: {searched}");
    assert_eq!(found.as_u16(), 200, "find_by_external_id reads no index");
    let contacts: Vec<&Value> = state["contacts"].as_object().unwrap().values().collect();
    assert_eq!((contacts.len(), &contacts[0]["external_id"]), (1, &json!("alone-1")));
    assert_eq!(requests.as_array().unwrap().len(), 3);
    assert_eq!(
        requests[0],
        json!({"method": "POST", "path": "/contacts", "status": 200, "body": {"role": "user", "external_id": "alone-1"}})
    );
}

#[tokio::test]
async fn generate_prints_the_same_day_for_the_same_seed_and_replay_accounts_for_every_event() {
    let args = |seed: &'static str| ["generate", "--events", "300", "--users", "40", "--seed", seed];
    let (first, again, other) = (run(&args("9"), &[]).await, run(&args("9"), &[]).await, run(&args("10"), &[]).await);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(first.stdout, again.stdout, "the same seed gives the same bytes");
    assert_ne!(first.stdout, other.stdout, "another seed gives another day");
    let events: Vec<Value> = text(&first.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(events.len(), 300);
    let users: BTreeSet<&str> = events.iter().filter_map(|e| e["userId"].as_str()).collect();
    assert!(users.len() <= 40 && users.len() > 20, "{} people", users.len());

    let file = scratch("generate").join("day.ndjson");
    std::fs::write(&file, &first.stdout).unwrap();
    let output = run(&["replay", "--json", "--rate-limit", "100000000", file.to_str().unwrap()], &[]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report(&output);
    assert_eq!(report["rejected"], json!([]), "every generated event is valid");
    assert_eq!(report["accepted"], 300);
    assert_eq!(report["dead_lettered"], json!([]));
    let skipped = report["skipped"].as_array().unwrap().len() as u64;
    assert_eq!(report["delivered"].as_u64().unwrap() + skipped, 300, "each event delivered or skipped");
}
