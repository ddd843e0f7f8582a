//! Property tests: arbitrary bytes and JSON at the ingest handler never panic and always get a 2xx, or a 4xx with a JSON
//! error and nothing queued; arbitrary valid events through the mapping (under the defaults and under random settings)
//! never panic and never plan a request Intercom's contract forbids.

use intercom_relay_lambda::envelope::Envelope;
use intercom_relay_lambda::event::{BatchDefaults, EventType, RawEvent, parse_event};
use intercom_relay_lambda::mapping::{Operation, map_with};
use intercom_relay_lambda::settings::Settings;
use lambda_http::Request;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

use crate::contract::plan_keeps_the_contract;
use crate::helpers::{BASIC_AUTH, memory_app, request, send};

const ROUTES: [&str; 8] =
    ["/v1/identify", "/v1/track", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias", "/v1/batch", "/v1/import"];

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// Any JSON value, nested a few levels, with the strings and numbers that trouble parsers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![Just("2024-05-01T12:00:00Z"), Just("1e400"), Just("\u{0}"), Just("a\r\nSet-Cookie: x"), Just("@")]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Object keys: Segment's own names half of the time, so the handler's field checks are reached.
fn key() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "type",
        "userId",
        "anonymousId",
        "event",
        "name",
        "groupId",
        "previousId",
        "traits",
        "properties",
        "context",
        "integrations",
        "timestamp",
        "sentAt",
        "messageId",
        "batch",
        "email",
        "revenue",
        "currency",
        "company",
        "page",
        "url",
        "createdAt",
        "price",
        "writeKey",
    ]);
    prop_oneof![known.prop_map(str::to_owned), ".{0,12}"]
}

/// A Segment-shaped event: the right members, each holding a plausible value or an arbitrary one.
fn segment_event() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(EventType::ALL.to_vec()).prop_map(|k| k.as_str().to_owned());
    let id = prop_oneof![
        3 => "[a-z0-9@._-]{1,20}".prop_map(Value::String),
        1 => any::<u32>().prop_map(Value::from),
        1 => any_json(),
    ];
    let object = prop_oneof![3 => prop::collection::vec((key(), any_json()), 0..14).prop_map(|m| Value::Object(m.into_iter().collect())), 1 => any_json()];
    (
        kind,
        prop::option::of(id.clone()),
        prop::option::of(id.clone()),
        prop::option::of(".{0,30}"),
        object.clone(),
        object.clone(),
        object,
        prop::option::of(id),
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(
                (prop::sample::select(vec!["timestamp", "sentAt", "originalTimestamp"]), moment()),
                1..3
            ),
        ],
    )
        .prop_map(|(kind, user, anonymous, name, traits, properties, context, group, times)| {
            let mut event = json!({"type": kind, "traits": traits, "properties": properties, "context": context});
            let members = event.as_object_mut().expect("an object");
            for (field, at) in times {
                members.insert(field.into(), at);
            }
            for (field, value) in
                [("userId", user), ("anonymousId", anonymous), ("groupId", group.clone()), ("previousId", group)]
            {
                if let Some(value) = value {
                    members.insert(field.into(), value);
                }
            }
            if let Some(name) = name {
                members.insert("event".into(), Value::String(name.clone()));
                members.insert("name".into(), Value::String(name));
            }
            event
        })
}

/// A point in time as a client might send it: ordinary, at the calendar's edges, in odd offsets, or not a time at all.
fn moment() -> impl Strategy<Value = Value> {
    // Mostly times, so the events that carry them are still accepted often enough to reach the queue and the mapping.
    prop_oneof![
        4 => prop::sample::select(vec![
            "2024-05-01T12:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "1969-12-31T23:59:59Z",
            "2024-05-01T00:00:00+14:00",
            "2024-05-01T23:59:59.123456789-12:00",
            "2024-02-29T00:00:00Z",
        ])
        .prop_map(Value::from),
        4 => (1i32..=9999, 1u8..=12, 1u8..=28, 0u8..24, -23i8..=23).prop_map(|(y, mo, d, h, off)| {
            Value::from(format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:00:00{}{:02}:00",
                if off < 0 { '-' } else { '+' },
                off.abs()
            ))
        }),
        1 => any_json(),
    ]
}

/// How many events `body` holds on the route `path`, when it is plain JSON the test can read.
fn events_in(path: &str, body: &[u8]) -> Option<usize> {
    if !path.ends_with("batch") && !path.ends_with("import") {
        return Some(1);
    }
    let body: Value = serde_json::from_slice(body).ok()?;
    body["batch"].as_array().map(Vec::len)
}

fn post_bytes(path: &str, content_type: &str, body: &[u8]) -> Request {
    request("POST", path, &[("authorization", BASIC_AUTH), ("content-type", content_type)], Some(body))
}

/// Sends `request` to a fresh handler and checks the answer's contract; `Err` says what broke it.
fn answer_keeps_the_contract(
    runtime: &tokio::runtime::Runtime,
    request: Request,
    events: Option<usize>,
) -> Result<bool, TestCaseError> {
    let app = memory_app();
    // `send` fails the case if a non-empty body is not JSON.
    let answer = runtime.block_on(send(&app, request));
    let status = answer.status.as_u16();
    prop_assert!((200..300).contains(&status) || (400..500).contains(&status), "status {status}: {}", answer.body);
    if status >= 400 {
        prop_assert_eq!(&answer.body["success"], &Value::Bool(false), "{}", answer.body);
        prop_assert!(answer.body["error"]["code"].is_string(), "{}", answer.body);
        prop_assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer.body);
        prop_assert_eq!(app.queue().len(), 0, "a refused request queued events");
    } else {
        prop_assert!(!app.queue().is_empty(), "a 2xx queued nothing: {}", answer.body);
        // The queue holds exactly what the answer says it accepted: all the events, or `accepted` of them.
        let accepted = match answer.body["accepted"].as_u64() {
            Some(accepted) => Some(accepted as usize),
            None => events,
        };
        if let Some(accepted) = accepted {
            prop_assert_eq!(app.queue().len(), accepted, "{}", answer.body);
        }
        for message in app.queue().messages() {
            // What the forwarder will do with it: an accepted event must read back.
            let envelope = Envelope::from_body(&message.body)
                .map_err(|e| TestCaseError::fail(format!("{e}: {}", message.body)))?;
            prop_assert!(!envelope.event.message_id.is_empty(), "{}", message.body);
        }
    }
    Ok(status < 300)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn arbitrary_bytes_at_any_route_get_a_2xx_or_a_4xx_with_a_json_error() {
    let runtime = runtime();
    let strategy = (
        prop::sample::select(ROUTES.to_vec()),
        prop::sample::select(vec!["application/json", "text/plain", "application/x-www-form-urlencoded", "image/png"]),
        prop::collection::vec(any::<u8>(), 0..512),
    );
    runner(512)
        .run(&strategy, |(path, content_type, body)| {
            answer_keeps_the_contract(&runtime, post_bytes(path, content_type, &body), events_in(path, &body)).map(drop)
        })
        .unwrap();
}

#[test]
fn arbitrary_json_and_segment_shaped_events_get_a_2xx_or_a_4xx_with_a_json_error() {
    let runtime = runtime();
    let body = prop_oneof![
        any_json(),
        segment_event(),
        prop::collection::vec(segment_event(), 0..8).prop_map(|batch| json!({"batch": batch})),
    ];
    let strategy = (prop::sample::select(ROUTES.to_vec()), body);
    let accepted = std::cell::Cell::new(0);
    runner(512)
        .run(&strategy, |(path, body)| {
            let text = body.to_string();
            let request = post_bytes(path, "application/json", text.as_bytes());
            let ok = answer_keeps_the_contract(&runtime, request, events_in(path, text.as_bytes()))?;
            accepted.set(accepted.get() + usize::from(ok));
            Ok(())
        })
        .unwrap();
    // Both sides of the contract must be reached.
    assert!(accepted.get() >= 10, "only {} requests were accepted", accepted.get());
}

/// Random destination settings: some rules on, some off.
fn settings() -> impl Strategy<Value = Settings> {
    (any::<[bool; 7]>(), prop::sample::select(vec!["Order *", "*", "?", "{a,b}*", "[x-z]*"])).prop_map(
        |(on, pattern)| {
            let mut document = Map::new();
            if on[0] {
                document.insert(
                    "events".into(),
                    json!({"deny": [pattern], "rename": {"Order Completed": "order.completed$"}}),
                );
            }
            if on[1] {
                document
                    .insert("trigger_paths".into(), json!([{"match": format!("*/{pattern}"), "action": "dont_fire"}]));
            }
            if on[2] {
                document.insert("consent".into(), json!({"category": "functional", "when_missing": "allow"}));
            }
            document.insert("identity".into(), json!({"send_anonymous_id": on[3], "lead_from_email": on[4]}));
            document.insert("identify".into(), json!({"include_context": on[5], "update_last_seen": on[6]}));
            if on[6] {
                document.insert("attributes".into(), json!({"allow": [pattern]}));
                document.insert("page".into(), json!("Viewed a.page"));
            }
            Settings::parse(&Value::Object(document).to_string()).expect("valid settings")
        },
    )
}

#[test]
fn arbitrary_valid_events_plan_only_requests_the_contract_allows() {
    let received = time::OffsetDateTime::now_utc();
    let mapped = std::cell::Cell::new(0);
    let mut runner = runner(1024);
    runner
        .run(&(segment_event(), settings()), |(event, settings)| {
            let text = event.to_string();
            let Ok(raw) = RawEvent::parse(&text) else { return Ok(()) };
            // Only events ingest accepts reach the forwarder.
            let Ok(event) = parse_event(&raw, None, &BatchDefaults::default(), received) else { return Ok(()) };
            for settings in [Settings::defaults(), &settings] {
                if let Ok(plan) = map_with(&event, settings) {
                    mapped.set(mapped.get() + 1);
                    plan_keeps_the_contract(&plan)
                        .map_err(|problem| TestCaseError::fail(format!("{problem} in {text}")))?;
                    // An event is submitted as happening when the (skew-corrected) event says it did.
                    for op in &plan.operations {
                        if let Operation::SubmitEvent(submission) = op {
                            prop_assert_eq!(submission.created_at, event.timestamp.unix_timestamp(), "{}", text);
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    // The strategy must reach the mapping, or this test would prove nothing.
    assert!(mapped.get() > 100, "only {} events were mapped", mapped.get());
}
