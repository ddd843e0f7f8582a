//! Issue 24's scenario as deployed, with processes: a standalone sandbox whose search lags 60 s, moto's SQS (a FIFO
//! queue and its DLQ) and DynamoDB (the identity table), and two `intercom-relay serve` on that queue and table
//! (`ALIAS_WAIT` at its deployed 5 minutes), one of them killed midway and replaced. Twelve people in each case: two
//! devices' email-only identifies make one lead; an email-only identify of a user's address makes no lead; a visitor's
//! lead is merged into the user on alias and on identify(userId, anonymousId), their events with it; aliases before any
//! identify are never handed back; the replacement makes no lookup for people the store knows. And with DynamoDB down
//! or throttling, everything is still delivered, with a WARN naming the identity store.
//!
//! Every check is recorded before any fails (`Checks`), so one run says which hold; the waits only give up, nothing is
//! timed.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use intercom_relay::sandbox::{SandboxOptions, SandboxServer, serve_http};
use intercom_relay_lambda::identity::{contact_key, visitor_key};
use intercom_relay_lambda::mapping::ContactKey;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::helpers::{BASIC_AUTH, WRITE_KEY};
use crate::sqs::endpoint;
use crate::suppression::{dynamodb, table};

const PEOPLE: usize = 12;

/// What the forwarder logs for each record handed back to SQS, and its reason for an alias.
const HANDED_BACK: &str = "Handed back to SQS.";
const ALIAS_HANDED_BACK: &str = "alias: Intercom does not hold the previous contact yet";

/// The checks of one test, each recorded (and printed) before any fails.
#[derive(Default)]
struct Checks(Vec<(String, bool, String)>);

impl Checks {
    fn check(&mut self, what: &str, held: bool, detail: impl std::fmt::Display) {
        self.0.push((what.to_owned(), held, detail.to_string()));
    }

    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, found: T, expected: T) {
        let held = found == expected;
        self.check(what, held, format!("{found:?} (expected {expected:?})"));
    }

    /// Fails listing every check, those that held too, and where the processes' logs are.
    fn assert_all(self, logs: &[&Process]) {
        let failed = self.0.iter().filter(|(_, held, _)| !held).count();
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|(what, held, detail)| format!("  {} {what}: {detail}", if *held { "PASS" } else { "FAIL" }))
            .collect();
        let logs: Vec<String> = logs.iter().map(|p| p.stderr.display().to_string()).collect();
        assert!(failed == 0, "{failed} of {} checks failed:\n{}\nlogs: {logs:?}", self.0.len(), lines.join("\n"));
    }
}

/// A process of the binary, its output in files (a pipe nobody reads would fill and stop it); killed when dropped.
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// The URL its first line ends with.
    url: String,
}

impl Process {
    async fn start(name: &str, args: &[&str], env: &[(&str, String)]) -> Process {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("two_forwarders");
        std::fs::create_dir_all(&dir).unwrap();
        let run = uuid::Uuid::new_v4().simple().to_string();
        let (stdout, stderr) = (dir.join(format!("{name}-{run}.out")), dir.join(format!("{name}-{run}.err")));
        let child = Command::new(env!("CARGO_BIN_EXE_intercom-relay"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("WRITE_KEYS")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("the binary starts");
        let mut process = Process { child, stdout, stderr, url: String::new() };
        let until = Instant::now() + Duration::from_secs(60);
        while !process.out().contains('\n') {
            let exited = process.child.try_wait().unwrap();
            assert!(exited.is_none() && Instant::now() < until, "{name} did not start: {}", process.err());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first = process.out().lines().next().unwrap().to_owned();
        process.url = first.rsplit(' ').next().unwrap().to_owned();
        assert!(process.url.starts_with("http://127.0.0.1:"), "{name}: {first}");
        process
    }

    fn out(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL: a forwarder that dies, its batch in hand left to SQS.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and its end (serve prints its summary).
    async fn stop(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let until = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < until, "serve did not stop: {}", self.err());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The records it handed back to SQS: all of them, and those of aliases.
    fn hand_backs(&self) -> (usize, usize) {
        let log = self.err();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(HANDED_BACK)).collect();
        (lines.len(), lines.iter().filter(|l| l.contains(ALIAS_HANDED_BACK)).count())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials, region and DynamoDB's endpoint as the AWS CLI reads them.
fn aws_env(dynamodb: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.to_owned()),
    ]
}

/// `intercom-relay serve` forwarding to `intercom` (with `token`), its store `table` at `dynamodb`, and `env` besides.
async fn serve(
    name: &str,
    intercom: &str,
    token: &str,
    table: &str,
    dynamodb: &str,
    env: &[(&str, String)],
) -> Process {
    let mut all = aws_env(dynamodb);
    all.extend([
        ("INTERCOM_ACCESS_TOKEN", token.to_owned()),
        ("WRITE_KEYS", WRITE_KEY.to_owned()),
        ("IDENTITY_TABLE", table.to_owned()),
        ("ALIAS_WAIT", "5m".to_owned()),
    ]);
    all.extend(env.iter().cloned());
    Process::start(name, &["serve", "--port", "0", "--intercom-url", intercom], &all).await
}

/// Posts `events` to serve's `/v1/batch` with the write key, as analytics-python does.
async fn post(url: &str, events: Vec<Value>) {
    let batch: Vec<Value> = events
        .into_iter()
        .map(|mut event| {
            event["messageId"] = json!(uuid::Uuid::new_v4().to_string());
            event
        })
        .collect();
    let request = reqwest::Client::new().post(format!("{url}/v1/batch")).header("authorization", BASIC_AUTH);
    let answer = request.json(&json!({"batch": batch})).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
}

/// Sends each `(which serve, event)` to that serve, a batch per serve.
async fn send(serves: [&Process; 2], events: Vec<(usize, Value)>) {
    for (n, serve) in serves.iter().enumerate() {
        let theirs: Vec<Value> = events.iter().filter(|(to, _)| *to == n).map(|(_, e)| e.clone()).collect();
        post(&serve.url, theirs).await;
    }
}

fn identify_visitor(anonymous_id: &str, email: &str, traits: Value) -> Value {
    let mut traits = traits;
    traits["email"] = json!(email);
    json!({"type": "identify", "anonymousId": anonymous_id, "traits": traits})
}

fn identify_user(user_id: &str, traits: Value) -> Value {
    json!({"type": "identify", "userId": user_id, "traits": traits})
}

fn track_visitor(anonymous_id: &str, email: &str, name: &str) -> Value {
    json!({"type": "track", "anonymousId": anonymous_id, "event": name, "context": {"traits": {"email": email}}})
}

fn track_user(user_id: &str, name: &str) -> Value {
    json!({"type": "track", "userId": user_id, "event": name})
}

fn alias(user_id: &str, previous_id: &str) -> Value {
    json!({"type": "alias", "userId": user_id, "previousId": previous_id})
}

/// Before the replacement: (a) each person's two devices identify with one address, through the two serves at once;
/// (b) users with an address; (c) visitors who gave an address (a lead) and viewed a page, and (for the alias) the
/// user they are about to become, without that address.
fn first_half() -> Vec<(usize, Value)> {
    let mut events = Vec::new();
    for i in 0..PEOPLE {
        let (p, to) = (format!("{i:02}"), i % 2);
        let email = format!("a-{p}@example.com");
        events.push((0, identify_visitor(&format!("a-{p}-phone"), &email, json!({"name": "Phone"}))));
        events.push((1, identify_visitor(&format!("a-{p}-laptop"), &email, json!({"name": "Laptop"}))));
        events.push((to, identify_user(&format!("b-user-{p}"), json!({"email": format!("b-{p}@example.com")}))));
        for c in ["ca", "ci"] {
            let (visitor, email) = (format!("{c}-anon-{p}"), format!("{c}-{p}@example.com"));
            events.push((to, identify_visitor(&visitor, &email, json!({}))));
            events.push((to, track_visitor(&visitor, &email, "Viewed Pricing")));
        }
        events.push((1 - to, identify_user(&format!("ca-user-{p}"), json!({"name": format!("User {p}")}))));
    }
    events
}

/// After it, through the survivor and the replacement: (a) a device again; (b) an email-only identify of each user's
/// address; (c) the alias, and identify(userId, anonymousId), each followed by a track of the user; (d) an alias of a
/// visitor who never gave an address, then the user's identify and track.
fn second_half() -> Vec<(usize, Value)> {
    let mut events = Vec::new();
    for i in 0..PEOPLE {
        let (p, to) = (format!("{i:02}"), i % 2);
        let again = identify_visitor(&format!("a-{p}-laptop"), &format!("a-{p}@example.com"), json!({"plan": "team"}));
        events.push((to, again));
        let email_only =
            identify_visitor(&format!("b-anon-{p}"), &format!("b-{p}@example.com"), json!({"plan": "pro"}));
        events.push((1 - to, email_only));
        events.push((to, alias(&format!("ca-user-{p}"), &format!("ca-anon-{p}"))));
        events.push((to, track_user(&format!("ca-user-{p}"), "Signed Up")));
        let (user, visitor) = (format!("ci-user-{p}"), format!("ci-anon-{p}"));
        let became = json!({"type": "identify", "userId": user, "anonymousId": visitor, "traits": {"name": "Ci"}});
        events.push((1 - to, became));
        events.push((1 - to, track_user(&user, "Signed Up")));
        let user = format!("d-user-{p}");
        events.push((to, alias(&user, &format!("d-anon-{p}"))));
        events.push((to, identify_user(&user, json!({"email": format!("d-{p}@example.com")}))));
        events.push((to, track_user(&user, "Signed Up")));
    }
    events
}

/// The first half's people by each name a lookup could ask about (userIds, addresses, anonymousIds), with the key the
/// identity store holds it under.
fn first_half_names() -> Vec<(String, String)> {
    let (user, email) = (|id: String| ContactKey::ExternalId(id), |id: String| ContactKey::Email(id));
    let mut names = Vec::new();
    for i in 0..PEOPLE {
        let p = format!("{i:02}");
        for key in [user(format!("b-user-{p}")), user(format!("ca-user-{p}"))] {
            names.push((key_text(&key), contact_key(&key)));
        }
        for c in ["a", "b", "ca", "ci"] {
            let key = email(format!("{c}-{p}@example.com"));
            names.push((key_text(&key), contact_key(&key)));
        }
        for visitor in [format!("a-{p}-phone"), format!("a-{p}-laptop"), format!("ca-anon-{p}"), format!("ci-anon-{p}")]
        {
            names.push((visitor.clone(), visitor_key(&visitor)));
        }
    }
    names
}

fn key_text(key: &ContactKey) -> String {
    match key {
        ContactKey::ExternalId(text) | ContactKey::Email(text) => text.clone(),
    }
}

/// The keys the identity table holds a contact for (not a claim only).
async fn stored_keys(table: &str) -> BTreeSet<String> {
    let scanned = dynamodb("Scan", json!({"TableName": table})).await;
    let items = scanned["Items"].as_array().unwrap().iter().filter(|item| item["id"]["S"].is_string());
    items.filter_map(|item| item["key"]["S"].as_str().map(str::to_owned)).collect()
}

/// What the sandbox holds, over HTTP.
async fn sandbox_state(url: &str) -> Value {
    reqwest::get(format!("{url}/_sandbox/state")).await.unwrap().json().await.unwrap()
}

/// How many messages `queue` holds: visible, in flight (or handed back) and delayed.
async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> usize {
    let answer = sqs.get_queue_attributes().queue_url(queue).attribute_names(QueueAttributeName::All).send().await;
    let attributes = answer.unwrap().attributes().cloned().unwrap_or_default();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .map(|name| attributes.get(name).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0))
    .sum()
}

/// Waits until the queue is empty (every message deleted: delivered, skipped or dead-lettered), giving up after
/// `patience`: whether it emptied.
async fn drained(sqs: &aws_sdk_sqs::Client, queue: &str, patience: Duration) -> bool {
    let until = Instant::now() + patience;
    while Instant::now() < until {
        if queue_depth(sqs, queue).await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// One call a proxy passed on: method, path and JSON body.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// A proxy in front of the sandbox that keeps every call one forwarder makes.
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn recorder(upstream: String) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (client, kept) = (reqwest::Client::new(), seen.clone());
    let task = serve_http(listener, move |request| pass_on(client.clone(), upstream.clone(), kept.clone(), request));
    Recorder { url, seen, _task: task }
}

async fn pass_on(
    client: reqwest::Client,
    upstream: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Seen { method: parts.method.to_string(), path: path.clone(), body });
    let mut forward = client.request(parts.method, format!("{upstream}{path}")).body(bytes);
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.send().await.expect("the sandbox answers");
    let mut response = http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding") {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    Ok(response.body(Full::new(bytes)).unwrap())
}

/// Whom a lookup asks about: the external id of `find_by_external_id`, the values a search matches.
fn looked_up(call: &Seen) -> Option<Vec<String>> {
    if call.method == "GET"
        && let Some(id) = call.path.strip_prefix("/contacts/find_by_external_id/")
    {
        return Some(vec![id.split('?').next().unwrap_or(id).to_owned()]);
    }
    if call.method != "POST" || !call.path.starts_with("/contacts/search") {
        return None;
    }
    fn values(query: &Value, out: &mut Vec<String>) {
        match query {
            Value::Object(members) => members.iter().for_each(|(key, value)| match (key.as_str(), value) {
                ("value", Value::String(text)) => out.push(text.clone()),
                _ => values(value, out),
            }),
            Value::Array(items) => items.iter().for_each(|item| values(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    values(&call.body["query"], &mut out);
    Some(out)
}

/// The sandbox's contacts (as JSON) whose `field` is `value`.
fn contacts_with<'a>(state: &'a Value, field: &str, value: &str) -> Vec<&'a Value> {
    let contacts = state["contacts"].as_object().unwrap();
    contacts.values().filter(|c| c[field].as_str() == Some(value)).collect()
}

/// The names of the events held for the contact `id`, lower-cased as Intercom keeps them.
fn events_of(state: &Value, id: &str) -> BTreeSet<String> {
    let events = state["events"].as_array().unwrap().iter().filter(|e| e["contact_id"] == id);
    events.filter_map(|e| e["event_name"].as_str()).map(str::to_lowercase).collect()
}

/// The people of case `c` (`ca` by alias, `ci` by identify): their lead merged into the user, its event with it.
fn merged_people(checks: &mut Checks, state: &Value, c: &str) {
    let (mut merged, mut leads_left, mut with_events) = (0, 0, 0);
    for i in 0..PEOPLE {
        let p = format!("{i:02}");
        let email = format!("{c}-{p}@example.com");
        leads_left += contacts_with(state, "email", &email).iter().filter(|l| l["role"] == "lead").count();
        let Some(user) = contacts_with(state, "external_id", &format!("{c}-user-{p}")).first().copied() else {
            continue;
        };
        let id = user["id"].as_str().unwrap();
        let into_user = state["merged_into"].as_object().unwrap().values().filter(|into| *into == id).count();
        merged += usize::from(into_user == 1);
        let wanted: BTreeSet<String> = ["viewed pricing", "signed up"].map(str::to_owned).into();
        with_events += usize::from(events_of(state, id) == wanted);
    }
    checks.equal(&format!("({c}) users with exactly one visitor's lead merged into them"), merged, PEOPLE);
    checks.equal(&format!("({c}) visitors' leads left beside their users"), leads_left, 0);
    checks.equal(&format!("({c}) users holding the visitor's event and their own"), with_events, PEOPLE);
}

/// What the sandbox holds at the end, case by case.
fn check_held(checks: &mut Checks, state: &Value) {
    let (mut one_lead, mut second_write) = (0, 0);
    let (mut no_lead_beside, mut user_updated) = (0, 0);
    let mut d_users = 0;
    for i in 0..PEOPLE {
        let p = format!("{i:02}");
        let devices = contacts_with(state, "email", &format!("a-{p}@example.com"));
        one_lead += usize::from(devices.len() == 1 && devices[0]["role"] == "lead");
        second_write += usize::from(devices.iter().all(|c| c["custom_attributes"]["plan"] == "team"));
        let held = contacts_with(state, "email", &format!("b-{p}@example.com"));
        no_lead_beside += usize::from(held.iter().all(|c| c["role"] == "user"));
        let user = contacts_with(state, "external_id", &format!("b-user-{p}"));
        user_updated += usize::from(user.len() == 1 && user[0]["custom_attributes"]["plan"] == "pro");
        let d = contacts_with(state, "external_id", &format!("d-user-{p}"));
        let signed_up = |u: &Value| events_of(state, u["id"].as_str().unwrap()).contains("signed up");
        d_users += usize::from(d.len() == 1 && d[0]["email"] == format!("d-{p}@example.com") && signed_up(d[0]));
    }
    checks.equal("(a) addresses identified from two devices holding exactly one lead", one_lead, PEOPLE);
    checks.equal("(a) of those, the lead written to again from a device (plan team)", second_write, PEOPLE);
    checks.equal("(b) users' addresses with no lead beside the user", no_lead_beside, PEOPLE);
    checks.equal("(b) users updated by the email-only identify (plan pro)", user_updated, PEOPLE);
    merged_people(checks, state, "ca");
    merged_people(checks, state, "ci");
    checks.equal("(d) users whose alias came first, made with their address and event", d_users, PEOPLE);
    let contacts = state["contacts"].as_object().unwrap();
    let count = |role: &str| contacts.values().filter(|c| c["role"] == role).count();
    checks.equal("contacts by role (users, leads)", (count("user"), count("lead")), (4 * PEOPLE, PEOPLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_forwarders_one_replaced_midway_make_no_twin_and_hand_no_alias_back() {
    let mut checks = Checks::default();
    let sqs = crate::sqs::client(&endpoint());
    let (queue, dlq) =
        (crate::forward_batch::fifo_queue(&sqs, 30).await, crate::forward_batch::fifo_queue(&sqs, 30).await);
    let table = table().await;
    let sandbox = Process::start("sandbox", &["sandbox", "--port", "0", "--search-lag", "60"], &[]).await;
    let token = "sandbox-token";
    let queues = [("QUEUE_URL", queue.clone()), ("DLQ_URL", dlq.clone()), ("AWS_ENDPOINT_URL_SQS", endpoint())];
    let dynamodb = endpoint();
    let mut first = serve("first", &sandbox.url, token, &table, &dynamodb, &queues).await;
    let mut second = serve("second", &sandbox.url, token, &table, &dynamodb, &queues).await;

    send([&first, &second], first_half()).await;
    let half = drained(&sqs, &queue, Duration::from_secs(90)).await;
    checks.check(
        "the first half forwarded (the queue emptied)",
        half,
        format!("{} left", queue_depth(&sqs, &queue).await),
    );

    // A forwarder dies; its replacement reaches the sandbox through a proxy that keeps what it asks. The people the
    // store knows: those whose keys the table holds now (each of them, once the first half is through).
    first.kill();
    let stored = stored_keys(&table).await;
    let names = first_half_names();
    let known: BTreeSet<String> =
        names.iter().filter(|(_, key)| stored.contains(key)).map(|(name, _)| name.clone()).collect();
    let missing: Vec<&String> = names.iter().filter(|(name, _)| !known.contains(name)).map(|(name, _)| name).collect();
    checks.check(
        "every name of the first half's people in the identity table",
        missing.is_empty(),
        format!("missing: {missing:?}"),
    );
    let proxy = recorder(sandbox.url.clone()).await;
    let mut replacement = serve("replacement", &proxy.url, token, &table, &dynamodb, &queues).await;
    send([&second, &replacement], second_half()).await;
    let all = drained(&sqs, &queue, Duration::from_secs(75)).await;
    checks.check("everything forwarded (the queue emptied)", all, format!("{} left", queue_depth(&sqs, &queue).await));
    checks.equal("dead letters", queue_depth(&sqs, &dlq).await, 0);

    check_held(&mut checks, &sandbox_state(&sandbox.url).await);
    let seen = proxy.seen.lock().unwrap().clone();
    let lookups: Vec<Vec<String>> = seen.iter().filter_map(looked_up).collect();
    let of_known: Vec<&Vec<String>> = lookups.iter().filter(|whom| whom.iter().any(|w| known.contains(w))).collect();
    let writes = seen.iter().filter(|s| s.method != "GET" && !s.path.starts_with("/contacts/search")).count();
    checks.check("the replacement forwarded some of the second half", writes > 0, format!("{writes} writes"));
    checks.check("the replacement's lookups of people the store knows", of_known.is_empty(), format!("{of_known:?}"));
    checks.check("the replacement's lookups, all (for the record)", true, format!("{lookups:?}"));

    second.stop().await;
    replacement.stop().await;
    let processes = [&first, &second, &replacement];
    let hand_backs: Vec<(usize, usize)> = processes.iter().map(|p| p.hand_backs()).collect();
    let total: usize = hand_backs.iter().map(|(all, _)| all).sum();
    let of_aliases: usize = hand_backs.iter().map(|(_, aliases)| aliases).sum();
    checks.equal("records handed back (first, second, replacement: all, aliases')", hand_backs, vec![(0, 0); 3]);
    checks.equal("records handed back, all", total, 0);
    checks.equal("aliases handed back", of_aliases, 0);
    checks.assert_all(&processes);
}

/// A proxy answering every DynamoDB call with throttling, counting its answers.
async fn throttling() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let task = serve_http(listener, move |_request: http::Request<Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let body = json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded."
        });
        let response = http::Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.0")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    (url, answered, task)
}

/// Forwards a few people through `serve` (its queue in memory) whose identity store is at `dynamodb`, which fails:
/// checks what the sandbox holds and serve's summary; returns serve's log.
async fn delivered_with_the_store_failing(checks: &mut Checks, dynamodb: &str) -> String {
    let sandbox =
        SandboxServer::start(SandboxOptions { search_lag: 60, ..SandboxOptions::default() }, 0).await.unwrap();
    let mut served = serve("failing-store", &sandbox.url, &sandbox.token(), "identities", dynamodb, &[]).await;
    let visitor = identify_visitor("anon-2", "bob@example.com", json!({}));
    let user = identify_user("u-1", json!({"email": "ada@example.com"}));
    post(&served.url, vec![user, visitor, track_user("u-1", "Signed In")]).await;
    // The lead first: the identify that merges it travels in another lane.
    let until = Instant::now() + Duration::from_secs(60);
    while sandbox.state().contacts.len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second_device = identify_visitor("anon-3", "bob@example.com", json!({"plan": "pro"}));
    let became = json!({"type": "identify", "userId": "u-2", "anonymousId": "anon-2", "traits": {"name": "Bob"}});
    post(&served.url, vec![second_device, became]).await;
    served.stop().await;
    let out = served.out();
    let summary = "5 accepted, 0 rejected; 5 delivered, 0 skipped, 0 dead-lettered";
    checks.check(
        "serve's summary",
        out.contains(summary),
        out.lines().find(|l| l.starts_with("Stopped.")).unwrap_or(&out),
    );
    let state = sandbox.state();
    let mut held: Vec<(String, Option<String>)> =
        state.contacts.values().map(|c| (c.role.clone(), c.external_id.clone())).collect();
    held.sort();
    let users = vec![("user".to_owned(), Some("u-1".to_owned())), ("user".to_owned(), Some("u-2".to_owned()))];
    checks.equal("contacts held (the lead merged into u-2)", held, users);
    let u2 = state.contacts.values().find(|c| c.external_id.as_deref() == Some("u-2"));
    checks.equal(
        "u-2's plan (from the second device)",
        u2.map(|c| c.custom_attributes["plan"].clone()),
        Some(json!("pro")),
    );
    checks.equal("events held", state.events.len(), 1);
    let log = served.err();
    let warned = log.contains("The identity store failed; going on without it.")
        && log.contains("the identity store (DynamoDB table identities)");
    checks.check(
        "a WARN naming the identity store",
        warned,
        log.lines().find(|l| l.contains("WARN")).unwrap_or("none"),
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dynamodb_down_serve_delivers_everything_and_warns() {
    let mut checks = Checks::default();
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    delivered_with_the_store_failing(&mut checks, &format!("http://127.0.0.1:{port}")).await;
    checks.assert_all(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dynamodb_throttling_serve_delivers_everything_and_warns() {
    let mut checks = Checks::default();
    let (url, answered, _task) = throttling().await;
    let log = delivered_with_the_store_failing(&mut checks, &url).await;
    checks.check("the WARN says DynamoDB throttled", log.contains("ProvisionedThroughputExceededException"), "");
    // The SDK tries throttling again (src/aws/dynamo.rs: three tries a call), then the store gives up with one WARN.
    let warnings = log.lines().filter(|l| l.contains("The identity store failed")).count();
    checks.equal("throttled answers (three per store call that warned)", answered.load(Ordering::SeqCst), 3 * warnings);
    checks.assert_all(&[]);
}
