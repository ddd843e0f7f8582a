//! Segment's and RudderStack's mobile SDKs, as they reach `intercom-relay serve`: first their start-up request, then an
//! upload, each with the path, headers, encoding and body layout their source gives (cited per SDK below), and what
//! the sandbox ends up holding. These SDKs run on phones, not here, so their requests are rebuilt byte for byte in
//! layout; the versions read are those of docs/sdks.md. The User-Agent and library versions are what those releases
//! send: their version constants lag their tags (analytics-swift 1.10.0 says 1.9.4, analytics-kotlin 1.25.0 1.24.1).

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::GzEncoder;
use intercom_relay::sandbox::{SandboxOptions, SandboxServer, SandboxState};
use serde_json::{Value, json};

use crate::cli::{KEY, by_external_id, members, start_serve};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One person's session as a mobile app records it: identify, a screen, a track, a group.
fn session(sdk: &str, library: &str, version: &str) -> Vec<Value> {
    let user = format!("{sdk}-user");
    let common = |n: usize| {
        json!({
            "messageId": format!("{sdk}-{n}"),
            "anonymousId": format!("{sdk}-anon"),
            "userId": user,
            "timestamp": format!("2026-01-01T00:00:0{n}.000Z"),
            "context": {"library": {"name": library, "version": version}, "instanceId": "8a4c3e2f"},
            "integrations": {},
            "_metadata": {"bundled": [], "unbundled": [], "bundledIds": []},
        })
    };
    let merge = |mut base: Value, extra: Value| {
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        base
    };
    vec![
        merge(
            common(1),
            json!({"type": "identify", "traits": {"email": format!("{user}@example.com"), "plan": "pro"}}),
        ),
        merge(common(2), json!({"type": "screen", "name": "Home", "properties": {}})),
        merge(common(3), json!({"type": "track", "event": "Order Completed", "properties": {"total": 42}})),
        merge(common(4), json!({"type": "group", "groupId": format!("{sdk}-org"), "traits": {"name": "Org"}})),
    ]
}

/// analytics-swift 1.10.0 `Storage/Types/DirectoryStore.swift`: `{ "batch": [`, a newline, one event per line (the
/// second on prefixed with `,`), then `],"sentAt":…,"writeKey":…}` and a newline.
fn swift_body(events: &[Value]) -> Vec<u8> {
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    format!(
        "{{ \"batch\": [\n{}\n],\"sentAt\":\"2026-01-01T00:00:05.000Z\",\"writeKey\":\"{KEY}\"}}\n",
        lines.join("\n,")
    )
    .into_bytes()
}

/// What an SDK sends at start and then as its upload.
struct Sdk {
    name: &'static str,
    startup: reqwest::RequestBuilder,
    upload: reqwest::RequestBuilder,
}

fn segment_sdks(client: &reqwest::Client, url: &str) -> Vec<Sdk> {
    let settings = format!("{url}/v1/projects/{KEY}/settings");
    let upload = format!("{url}/v1/b");
    let compact = |sdk: &str, library: &str, version: &str| {
        json!({"batch": session(sdk, library, version), "sentAt": "2026-01-01T00:00:05.000Z", "writeKey": KEY})
            .to_string()
    };
    vec![
        // analytics-swift `HTTPClient.swift` configuredRequest(): JSON, its User-Agent, no Authorization, no gzip.
        Sdk {
            name: "swift",
            startup: client.get(&settings).header("content-type", "application/json; charset=utf-8"),
            upload: client
                .post(&upload)
                .header("content-type", "application/json; charset=utf-8")
                .header("user-agent", "analytics-ios/1.9.4")
                .header("accept-encoding", "gzip")
                .body(swift_body(&session("swift", "analytics-swift", "1.9.4"))),
        },
        // analytics-kotlin 1.25.0 `HTTPClient.kt` RequestFactory.upload: text/plain, gzipped, its User-Agent.
        Sdk {
            name: "kotlin",
            startup: client.get(&settings).header("user-agent", "analytics-kotlin/1.24.1"),
            upload: client
                .post(&upload)
                .header("content-type", "text/plain")
                .header("content-encoding", "gzip")
                .header("user-agent", "analytics-kotlin/1.24.1")
                .body(gzip(compact("kotlin", "analytics-kotlin", "1.24.1").as_bytes())),
        },
        // analytics-react-native 2.24.1 `src/api.ts` uploadEvents: fetch with JSON, keepalive, no gzip.
        Sdk {
            name: "react-native",
            startup: client.get(&settings).header("cache-control", "no-cache"),
            upload: client.post(&upload).header("content-type", "application/json; charset=utf-8").body(compact(
                "react-native",
                "analytics-react-native",
                "2.21.4",
            )),
        },
    ]
}

/// rudder-sdk-android 1.28 `RudderNetworkManager.java` (iOS 1.31 `RSNetworkManager.m` the same, without the space after
/// `"batch":`): `GET /sourceConfig` first, then `POST /v1/batch`, gzipped, Basic auth, the anonymousId base64 in a
/// header, no writeKey in the body.
fn rudderstack_sdks(client: &reqwest::Client, url: &str) -> Vec<Sdk> {
    let basic = format!("Basic {}", STANDARD.encode(format!("{KEY}:")));
    let mut sdks = Vec::new();
    for (name, platform, gap) in [("rudder-android", "android", " "), ("rudder-ios", "ios", "")] {
        let mut events = session(name, &format!("rudder-{platform}-library"), "1.0.0");
        for event in &mut events {
            event["channel"] = json!("mobile");
            event["integrations"] = json!({"All": true});
        }
        let events: Vec<String> = events.iter().map(Value::to_string).collect();
        let body = format!("{{\"sentAt\":\"2026-01-01T00:00:05.000Z\",\"batch\":{gap}[{}]}}", events.join(","));
        sdks.push(Sdk {
            name,
            startup: client
                .get(format!("{url}/sourceConfig?p={platform}&v=1.28.0&bv=34"))
                .header("authorization", &basic),
            upload: client
                .post(format!("{url}/v1/batch"))
                .header("authorization", &basic)
                .header("content-type", "application/json")
                .header("anonymousid", STANDARD.encode(format!("{name}-anon")))
                .header("content-encoding", "gzip")
                .body(gzip(body.as_bytes())),
        });
    }
    sdks
}

fn assert_delivered(state: &SandboxState, sdk: &str) {
    let users = by_external_id(state);
    let user = format!("{sdk}-user");
    let contact = users.get(&user).unwrap_or_else(|| panic!("{sdk}: no contact; {:?}", users.keys()));
    assert_eq!(contact.email.as_deref(), Some(format!("{user}@example.com").as_str()), "{sdk}");
    assert_eq!(contact.custom_attributes["plan"], json!("pro"), "{sdk}");
    assert_eq!(members(state, &format!("{sdk}-org")), [user.clone()].into(), "{sdk}");
    let mut names: Vec<&str> =
        state.events.iter().filter(|e| e.contact_id == contact.id).map(|e| e.event_name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["order completed", "screen_viewed"], "{sdk}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobile_sdks_start_and_upload_through_serve_and_everything_lands() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let (url, token) = (sandbox.url.clone(), sandbox.token());
    let served = tokio::task::spawn_blocking(move || start_serve(&url, &token)).await.unwrap();
    let client = reqwest::Client::new();
    for sdk in segment_sdks(&client, &served.url) {
        let settings: Value = sdk.startup.send().await.unwrap().json().await.unwrap();
        // The destination on, without an apiHost (which would override the app's own host), telemetry off.
        let segment = &settings["integrations"]["Segment.io"];
        assert_eq!(segment, &json!({"apiKey": KEY}), "{}", sdk.name);
        assert_eq!(settings["metrics"]["sampleRate"], 0, "{}", sdk.name);
        let answer = sdk.upload.send().await.unwrap();
        assert_eq!(answer.status(), 200, "{}: {}", sdk.name, answer.text().await.unwrap());
    }
    for sdk in rudderstack_sdks(&client, &served.url) {
        let config: Value = sdk.startup.send().await.unwrap().json().await.unwrap();
        assert_eq!(config["source"]["enabled"], true, "{}", sdk.name);
        let answer = sdk.upload.send().await.unwrap();
        // These SDKs take exactly 200 as success and retry anything else.
        assert_eq!(answer.status(), 200, "{}: {}", sdk.name, answer.text().await.unwrap());
    }
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || served.stop()).await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("20 accepted, 0 rejected; 20 delivered"), "{stdout}");
    let state = sandbox.state();
    for sdk in ["swift", "kotlin", "react-native", "rudder-android", "rudder-ios"] {
        assert_delivered(&state, sdk);
    }
}
