//! The paths, headers and answers of the browser and mobile SDKs (docs/sdks.md cites where each comes from), at the
//! handler: what each path queues, the keys of beacons and settings, CORS on every route and every answer.

use intercom_relay_lambda::ingest::{CorsHeaders, Ingest, IngestOptions};
use intercom_relay_lambda::queue::{MemoryQueue, SqsQueue};
use serde_json::json;

use crate::helpers::{
    ALLOWED_ORIGIN, BASIC_AUTH, Captured, WRITE_KEY, envelope_events, memory_app, options, request, send,
};

const TEXT: (&str, &str) = ("content-type", "text/plain");
const ORIGIN: (&str, &str) = ("origin", ALLOWED_ORIGIN);

fn queued(app: &Ingest<MemoryQueue>) -> Vec<serde_json::Value> {
    envelope_events(app.queue().messages().into_iter().map(|m| m.body))
}

#[tokio::test]
async fn analytics_js_short_paths_queue_one_event_of_the_letters_type() {
    let app = memory_app();
    let bodies = [
        ("/v1/i", json!({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}})),
        ("/v1/t", json!({"type": "track", "userId": "u1", "event": "Clicked"})),
        ("/v1/p", json!({"type": "page", "userId": "u1", "name": "Docs"})),
        ("/v1/s", json!({"type": "screen", "userId": "u1", "name": "Home"})),
        ("/v1/g", json!({"type": "group", "userId": "u1", "groupId": "g1"})),
        ("/v1/a", json!({"type": "alias", "userId": "u1", "previousId": "anon-1"})),
    ];
    for (path, mut body) in bodies {
        // As analytics.js sends it: text/plain, Basic auth, and the key in the body too.
        body["writeKey"] = WRITE_KEY.into();
        let headers = [TEXT, ORIGIN, ("authorization", BASIC_AUTH)];
        let answer = send(&app, request("POST", path, &headers, Some(body.to_string().as_bytes()))).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN, "{path}");
    }
    let types: Vec<_> = queued(&app).iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["identify", "track", "page", "screen", "group", "alias"]);
    let wrong = json!({"type": "track", "userId": "u1", "event": "e", "writeKey": WRITE_KEY});
    let answer = send(&app, request("POST", "/v1/i", &[TEXT], Some(wrong.to_string().as_bytes()))).await;
    assert_eq!(answer.status, 400, "a track on the identify path: {}", answer.body);
}

#[tokio::test]
async fn the_batch_paths_of_analytics_js_the_mobile_sdks_and_rudderstacks_beacon() {
    let app = memory_app();
    let batch = json!({"batch": [{"type": "track", "anonymousId": "a1", "event": "One"}], "writeKey": WRITE_KEY});
    let answer = send(&app, request("POST", "/v1/b", &[TEXT], Some(batch.to_string().as_bytes()))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // RudderStack's beacon: text/plain, no header can be set, the key only in the query string.
    let beacon =
        json!({"batch": [{"type": "track", "anonymousId": "a1", "event": "Two"}], "sentAt": "2026-01-01T00:00:00Z"});
    let path = format!("/beacon/v1/batch?writeKey={WRITE_KEY}");
    let answer = send(&app, request("POST", &path, &[TEXT, ORIGIN], Some(beacon.to_string().as_bytes()))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let names: Vec<_> = queued(&app).iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["One", "Two"]);
    for (query, message) in [("writeKey=wrong", "not valid"), ("writeKey=", "is required"), ("other=1", "is required")]
    {
        let path = format!("/beacon/v1/batch?{query}");
        let answer = send(&app, request("POST", &path, &[TEXT], Some(beacon.to_string().as_bytes()))).await;
        assert_eq!(answer.status, 401, "{query}");
        assert!(answer.body["error"]["message"].as_str().unwrap().contains(message), "{query}: {}", answer.body);
    }
    assert_eq!(app.queue().len(), 2, "nothing more was queued");
}

#[tokio::test]
async fn a_key_in_the_query_string_is_never_logged() {
    let (captured, _guard) = Captured::start(tracing::Level::TRACE, true);
    let app = memory_app();
    let beacon = json!({"batch": [{"type": "track", "anonymousId": "a1", "event": "Two"}]});
    for key in [WRITE_KEY, "wrong-key-canary"] {
        let path = format!("/beacon/v1/batch?writeKey={key}");
        send(&app, request("POST", &path, &[TEXT], Some(beacon.to_string().as_bytes()))).await;
    }
    send(&app, request("GET", "/v1/projects/settings-key-canary/settings", &[], None)).await;
    // A 64-character key, and an SDK whose base lacks /v1 (a 404 path), are masked too.
    let long_key = "long-key-canary-".repeat(4);
    send(&app, request("GET", &format!("/v1/projects/{long_key}/settings"), &[], None)).await;
    send(&app, request("GET", &format!("/projects/{WRITE_KEY}/settings"), &[], None)).await;
    let logs = captured.text();
    assert!(logs.contains("Ingest request handled."), "{logs}");
    for secret in [WRITE_KEY, "wrong-key-canary", "settings-key-canary", "long-key-canary"] {
        assert!(!logs.contains(secret), "{secret} was logged: {logs}");
    }
}

#[tokio::test]
async fn analytics_js_metrics_are_answered_without_a_key_and_queue_nothing() {
    let app = memory_app();
    let metrics = json!({"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1, "tags": {}}]});
    // RudderStack's error reports go to /rsaMetrics when a source configuration turns them on.
    for path in ["/v1/m", "/rsaMetrics"] {
        let answer = send(&app, request("POST", path, &[TEXT, ORIGIN], Some(metrics.to_string().as_bytes()))).await;
        assert_eq!((answer.status.as_u16(), &answer.body), (200, &json!({"success": true})), "{path}");
        assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN, "{path}");
    }
    assert!(app.queue().is_empty());
}

#[tokio::test]
async fn a_preflight_for_any_path_is_answered_so_the_post_that_follows_gets_a_readable_404() {
    let app = memory_app();
    let preflight =
        [ORIGIN, ("access-control-request-method", "POST"), ("access-control-request-headers", "authorization")];
    let answer = send(&app, request("OPTIONS", "/v1/nowhere", &preflight, None)).await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    let answer = send(&app, request("POST", "/v1/nowhere", &[ORIGIN, TEXT], Some(b"{}"))).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN, "the page can read why");
    assert_eq!(answer.headers["access-control-expose-headers"], "retry-after");
    // An origin not listed learns nothing, preflight or not: no Access-Control-Allow-Origin, so the browser refuses.
    let evil = ("origin", "https://evil.example.net");
    let answer = send(&app, request("OPTIONS", "/v1/nowhere", &[evil], None)).await;
    assert_eq!(answer.status, 403);
    assert!(!answer.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_503_asks_for_a_wait_the_page_may_read() {
    // A queue that refuses every entry: SQS's endpoint is a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let queue = SqsQueue::new(
        crate::sqs::client(&endpoint),
        format!("{endpoint}/123456789012/events.fifo"),
        crate::sqs::fast_retry(),
        std::time::Duration::from_secs(5),
    );
    let app = Ingest::new(options(), queue);
    let body = json!({"type": "track", "userId": "u1", "event": "e", "writeKey": WRITE_KEY});
    let answer = send(&app, request("POST", "/v1/t", &[TEXT, ORIGIN], Some(body.to_string().as_bytes()))).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.headers["retry-after"], "5");
    assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_eq!(answer.headers["access-control-expose-headers"], "retry-after", "analytics.js reads the wait");
}

#[tokio::test]
async fn behind_a_function_url_doing_cors_the_function_writes_no_cors_header_and_still_refuses_strangers() {
    let app = Ingest::new(IngestOptions { cors_headers: CorsHeaders::FunctionUrl, ..options() }, MemoryQueue::new());
    let body = json!({"type": "track", "userId": "u1", "event": "e", "writeKey": WRITE_KEY});
    let answer = send(&app, request("POST", "/v1/t", &[TEXT, ORIGIN], Some(body.to_string().as_bytes()))).await;
    assert_eq!(answer.status, 200);
    let cors: Vec<_> = answer.headers.keys().filter(|k| k.as_str().starts_with("access-control-")).collect();
    assert!(cors.is_empty(), "{cors:?}");
    let evil = [TEXT, ("origin", "https://evil.example.net")];
    let answer = send(&app, request("POST", "/v1/t", &evil, Some(body.to_string().as_bytes()))).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(app.queue().len(), 1);
}

#[tokio::test]
async fn segment_mobile_settings_enable_the_destination_on_the_apps_host_and_need_a_valid_key() {
    let app = memory_app();
    let path = format!("/v1/projects/{WRITE_KEY}/settings");
    let answer = send(&app, request("GET", &path, &[("host", "relay.example.com")], None)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // No apiHost: the SDKs keep the host the app was given (a custom domain, a CDN), which the relay cannot know.
    let segment = &answer.body["integrations"]["Segment.io"];
    assert_eq!(segment, &json!({"apiKey": WRITE_KEY}));
    assert_eq!(answer.body["metrics"]["sampleRate"], 0, "Swift's and Kotlin's telemetry stays off");
    let answer = send(&app, request("GET", "/v1/projects/not-a-key/settings", &[], None)).await;
    assert_eq!(answer.status, 401);
    assert!(app.queue().is_empty());
}

#[tokio::test]
async fn rudderstacks_mobile_source_config_is_enabled_for_a_valid_key_only() {
    let app = memory_app();
    let answer =
        send(&app, request("GET", "/sourceConfig?p=android&v=1.28.0", &[("authorization", BASIC_AUTH)], None)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["source"]["enabled"], true);
    assert_eq!(answer.body["source"]["destinations"], json!([]));
    let answer = send(&app, request("GET", "/sourceConfig?p=ios", &[], None)).await;
    assert_eq!(answer.status, 401);
    let wrong = ("authorization", "Basic d3Jvbmc6");
    assert_eq!(send(&app, request("GET", "/sourceConfig", &[wrong], None)).await.status, 401);
}

#[tokio::test]
async fn a_browser_key_is_a_browser_key_on_every_path_and_in_the_query() {
    use intercom_relay_lambda::envelope::{Envelope, KeyKind};
    use intercom_relay_lambda::ingest::WriteKeys;
    use secrecy::SecretString;
    let keys = WriteKeys::with_browser_keys(&[SecretString::from("server-key")], &[SecretString::from("page-key")]);
    let app = Ingest::new(IngestOptions { write_keys: keys.unwrap(), ..options() }, MemoryQueue::new());
    let event = json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}});
    let beacon = json!({"batch": [event]});
    let path = "/beacon/v1/batch?writeKey=page-key";
    assert_eq!(send(&app, request("POST", path, &[TEXT], Some(beacon.to_string().as_bytes()))).await.status, 200);
    let short = json!({"type": "identify", "userId": "u1", "writeKey": "page-key"});
    assert_eq!(send(&app, request("POST", "/v1/i", &[TEXT], Some(short.to_string().as_bytes()))).await.status, 200);
    let server = json!({"batch": [event], "writeKey": "server-key"});
    assert_eq!(send(&app, request("POST", "/v1/b", &[TEXT], Some(server.to_string().as_bytes()))).await.status, 200);
    let kinds: Vec<KeyKind> =
        app.queue().messages().iter().map(|m| Envelope::from_body(&m.body).unwrap().key).collect();
    assert_eq!(kinds, [KeyKind::Browser, KeyKind::Browser, KeyKind::Server]);
}
