//! The handler's good paths, through an in-memory queue: what each kind of request puts on the queue.

use intercom_relay_lambda::queue::QueuedMessage;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{ALLOWED_ORIGIN, Captured, WRITE_KEY, envelope_events, fixture, memory_app, post, request, send};

fn events_of(messages: Vec<QueuedMessage>) -> Vec<Value> {
    envelope_events(messages.into_iter().map(|m| m.body))
}

fn at(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}")), &Rfc3339).unwrap()
}

#[tokio::test]
async fn each_type_is_accepted_on_its_endpoint_and_queued_once() {
    for (kind, ordering_key) in [
        ("identify", "user-1001"),
        ("track", "user-1001"),
        ("page", "anon-3c9f"),
        ("screen", "user-1001"),
        ("group", "user-1001"),
        ("alias", "user-1001"),
    ] {
        let app = memory_app();
        let answer = send(&app, fixture(&format!("{kind}.json"))).await;
        assert_eq!((answer.status.as_u16(), &answer.body), (200, &json!({"success": true})), "{kind}");
        let messages = app.queue().messages();
        assert_eq!(messages.len(), 1, "{kind}");
        assert_eq!(messages[0].event_type.as_str(), kind);
        assert_eq!(messages[0].ordering_key, ordering_key, "{kind}");
        let event = &events_of(messages)[0];
        assert_eq!(event["type"], kind);
        assert!(event["receivedAt"].is_string() && event["timestamp"].is_string(), "{event}");
    }
}

#[tokio::test]
async fn clock_skew_is_corrected_and_the_client_time_kept() {
    let app = memory_app();
    let before = OffsetDateTime::now_utc();
    send(&app, fixture("identify.json")).await;
    let event = &events_of(app.queue().messages())[0];
    // The client made the event 880 ms before it sent it; its own clock is not trusted for anything else.
    let lag = at(&event["receivedAt"]) - at(&event["timestamp"]);
    assert_eq!(lag.whole_milliseconds(), 880, "{event}");
    assert!(at(&event["receivedAt"]) >= before - time::Duration::milliseconds(1));
    assert_eq!(event["originalTimestamp"], "2024-05-01T11:59:58.120Z");
    assert_eq!(event["sentAt"], "2024-05-01T11:59:59.000Z");
}

#[tokio::test]
async fn an_analytics_python_batch_gets_the_batch_context_and_sent_at() {
    let app = memory_app();
    let answer = send(&app, fixture("batch.json")).await;
    assert_eq!((answer.status.as_u16(), &answer.body), (200, &json!({"success": true})));
    let events = events_of(app.queue().messages());
    let ids: Vec<&str> = events.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["msg-py-1", "msg-py-2", "msg-py-3", "msg-py-4"]);
    for event in &events {
        assert_eq!(event["context"]["locale"], "en-GB", "batch context merged: {event}");
        assert_eq!(event["context"]["ip"], "203.0.113.7", "the event's own context kept: {event}");
        assert_eq!(event["sentAt"], "2024-05-01T11:59:59.000Z");
    }
    let keys: Vec<String> = app.queue().messages().into_iter().map(|m| m.ordering_key).collect();
    assert_eq!(keys, ["user-2001", "user-2001", "user-2001", "anon-77aa"]);
}

#[tokio::test]
async fn a_gzipped_rudderstack_batch_has_its_context_traits_merged_into_identify() {
    let app = memory_app();
    let answer = send(&app, fixture("batch-gzip.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let events = events_of(app.queue().messages());
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["traits"], json!({"email": "linus@example.com", "plan": "free", "name": "Linus Pauling"}));
    assert_eq!(events[0]["rudderId"], "b7d3c4e2-0000-4000-8000-000000000001", "unknown fields are kept");
    assert_eq!(events[1]["traits"], Value::Null, "only identify gets context traits merged");
    assert_eq!(events[1]["originalTimestamp"], "2024-05-01T12:00:01.000Z");
}

#[tokio::test]
async fn a_beacon_authenticates_with_the_body_key_which_is_never_queued() {
    let app = memory_app();
    let answer = send(&app, fixture("track-beacon.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    let messages = app.queue().messages();
    assert_eq!(messages.len(), 1);
    assert!(!messages[0].body.contains(WRITE_KEY), "{}", messages[0].body);
    assert!(!messages[0].body.contains("writeKey"), "{}", messages[0].body);
}

#[tokio::test]
async fn a_partly_invalid_batch_queues_the_valid_events_and_lists_the_others() {
    let app = memory_app();
    let answer = send(&app, fixture("batch-partly-invalid.json")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["success"], true);
    assert_eq!(answer.body["accepted"], 1);
    let rejected = answer.body["rejected"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str)> = rejected
        .iter()
        .map(|r| {
            (r["index"].as_u64().unwrap(), r["messageId"].as_str().unwrap(), r["errors"][0]["path"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [(1, "msg-partial-2", "event"), (2, "msg-partial-3", "userId"), (3, "msg-partial-4", "timestamp")]
    );
    let events = events_of(app.queue().messages());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["messageId"], "msg-partial-1");
}

#[tokio::test]
async fn an_event_over_32_kb_in_a_batch_is_refused_alone() {
    let app = memory_app();
    let big = json!({"type": "track", "userId": "u", "event": "Big", "messageId": "big-1", "properties": {"blob": "x".repeat(33 * 1024)}});
    let small = json!({"type": "track", "userId": "u", "event": "Small", "messageId": "small-1"});
    let answer = send(&app, post("/v1/batch", &json!({"batch": [small, big]}).to_string())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 1);
    let rejected = &answer.body["rejected"][0];
    assert_eq!((&rejected["index"], &rejected["messageId"]), (&json!(1), &json!("big-1")));
    let message = rejected["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the event is 338") && message.ends_with("the limit is 32768 bytes per event"),
        "{message}"
    );
    assert_eq!(app.queue().messages()[0].message_id, "small-1");
}

#[tokio::test]
async fn a_body_starting_with_a_byte_order_mark_is_read() {
    let app = memory_app();
    let answer = send(&app, post("/v1/track", "\u{feff}{\"userId\":\"u\",\"event\":\"Saved\"}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.queue().len(), 1);
}

#[tokio::test]
async fn numeric_ids_become_strings_and_a_message_id_is_made_when_absent() {
    let app = memory_app();
    let answer = send(&app, post("/v1/group/", r#"{"userId": 1001, "groupId": 77, "traits": {"name": "Acme"}}"#)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let event = &events_of(app.queue().messages())[0];
    assert_eq!((&event["userId"], &event["groupId"]), (&json!("1001"), &json!("77")));
    let message_id = event["messageId"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(message_id).unwrap().get_version_num(), 4);
}

#[tokio::test]
async fn a_cors_preflight_is_answered_for_an_allowed_origin() {
    let app = memory_app();
    let answer = send(
        &app,
        request(
            "OPTIONS",
            "/v1/batch",
            &[
                ("origin", ALLOWED_ORIGIN),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_eq!(answer.headers["access-control-allow-methods"], "GET, POST, OPTIONS");
    assert_eq!(
        answer.headers["access-control-allow-headers"],
        "authorization, content-type, content-encoding, x-retry-count, anonymousid, sentat, rsa-retry-attempt, \
         rsa-retry-reason, rsa-since-first-attempt, rsa-since-last-attempt, rsa-recovered"
    );
    assert_eq!(answer.headers["access-control-max-age"], "86400");
    assert_eq!(answer.headers["vary"], "Origin");
    assert!(app.queue().is_empty());
}

#[tokio::test]
async fn logs_carry_one_line_per_request_and_never_a_key_or_personal_data() {
    let (captured, _guard) = Captured::start(tracing::Level::DEBUG, false);
    let app = memory_app();
    let requests = [
        fixture("identify.json"),
        fixture("track-beacon.json"),
        fixture("batch.json"),
        fixture("invalid/wrong-write-key.json"),
        fixture("invalid/no-write-key.json"),
        post(
            "/v1/identify",
            r#"{"userId":"u","traits":{"email":"secret.person@example.com"},"timestamp":"not-a-time"}"#,
        ),
    ];
    let count = requests.len();
    for request in requests {
        send(&app, request).await;
    }
    let logs = captured.text();
    assert_eq!(logs.matches("Ingest request handled.").count(), count, "{logs}");
    assert!(logs.contains("status=401") && logs.contains("accepted=4"), "{logs}");
    for secret in [
        WRITE_KEY,
        "dGVzdC13cml0ZS1rZXk6",
        "not-the-key",
        "ada@example.com",
        "secret.person@example.com",
        "Ada Lovelace",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs:\n{logs}");
    }
}
