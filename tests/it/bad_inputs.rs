//! Bad input, one request at a time (a catalogue of over 110): each answer names what was wrong, nothing reaches the queue, and
//! no secret or personal value planted in a request reaches a log line.

use std::io::Write;

use flate2::{Compression, write::GzEncoder};
use lambda_http::Request;
use serde_json::Value;

use crate::helpers::{
    ALLOWED_ORIGIN, BASIC_AUTH, Captured, WRITE_KEY, encoded_request, envelope_events, memory_app, post, request, send,
};

const JSON: (&str, &str) = ("content-type", "application/json");
const AUTH: (&str, &str) = ("authorization", BASIC_AUTH);

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn with(headers: &[(&str, &str)], path: &str, body: &[u8]) -> Request {
    request("POST", path, headers, Some(body))
}

/// One bad request and what its answer must say: the status, the error code, and a JSON path and a message fragment
/// found in `error` (or, for refused events, in one of `rejected[].errors`).
struct Case {
    name: &'static str,
    request: Request,
    status: u16,
    code: &'static str,
    path: Option<&'static str>,
    message: &'static str,
}

fn case(name: &'static str, request: Request, status: u16, code: &'static str, message: &'static str) -> Case {
    Case { name, request, status, code, path: None, message }
}

fn at(mut case: Case, path: &'static str) -> Case {
    case.path = Some(path);
    case
}

fn invalid_event(name: &'static str, path: &str, body: &str, field: &'static str, message: &'static str) -> Case {
    at(case(name, post(path, body), 400, "invalid_event", message), field)
}

fn invalid_body(name: &'static str, path: &str, body: &str, field: &'static str, message: &'static str) -> Case {
    at(case(name, post(path, body), 400, "invalid_body", message), field)
}

fn cases() -> Vec<Case> {
    let big_event = format!(r#"{{"userId":"u","event":"e","properties":{{"blob":"{}"}}}}"#, "x".repeat(33 * 1024));
    let big_batch =
        format!(r#"{{"batch":[{}]}}"#, vec![r#"{"type":"track","userId":"u","event":"e"}"#; 13_000].join(","));
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    let too_many = format!(r#"{{"batch":[{}]}}"#, vec![r#"{"type":"page","userId":"u"}"#; 10_000].join(","));
    let amplified = format!(
        r#"{{"batch":[{}],"context":{{"blob":"{}"}}}}"#,
        vec![r#"{"type":"page","userId":"u"}"#; 300].join(","),
        "c".repeat(100 * 1024)
    );
    let deep_in_batch = format!(
        r#"{{"batch":[{{"type":"identify","userId":"u","traits":{}1{}}}]}}"#,
        r#"{"a":"#.repeat(70),
        "}".repeat(70)
    );
    let utf16: Vec<u8> = "\u{feff}{\"userId\":\"u\"}".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let two_members = [gzip(&vec![b' '; 300 * 1024]), gzip(&vec![b' '; 300 * 1024])].concat();
    let gzip_then_garbage = [gzip(br#"{"batch":[{"type":"page","userId":"u"}]}"#), b"garbage".to_vec()].concat();
    let just_over = format!(r#"{{"batch":[{}]}}"#, vec![r#"{"type":"page","userId":"u"}"#; 1001].join(","));
    let all_invalid = format!(r#"{{"batch":[{}]}}"#, vec![r#"{"type":"page"}"#; 1000].join(","));
    let deep = format!(r#"{{"userId":"u","event":"e","properties":{}1{}}}"#, r#"{"a":"#.repeat(200), "}".repeat(200));
    vec![
        case(
            "malformed JSON",
            post("/v1/track", "{\"userId\": \"u\",\n \"event\": \"e\",}"),
            400,
            "malformed_json",
            "line 2 column",
        ),
        case("truncated JSON", post("/v1/track", r#"{"userId":"#), 400, "malformed_json", "EOF while parsing"),
        case(
            "trailing garbage",
            post("/v1/track", r#"{"userId":"u","event":"e"} x"#),
            400,
            "malformed_json",
            "trailing characters",
        ),
        invalid_body("deeply nested JSON", "/v1/track", &deep, "", "nests 201 levels deep; at most 64 are allowed"),
        case("empty body", post("/v1/track", ""), 400, "empty_body", "the body is empty"),
        case("whitespace body", post("/v1/identify", " \n "), 400, "empty_body", "the body is empty"),
        case(
            "invalid UTF-8",
            with(&[AUTH, JSON], "/v1/track", b"{\"userId\":\"\xff\xfe\"}"),
            400,
            "invalid_utf8",
            "offset 11",
        ),
        invalid_body("deeply nested event in a batch", "/v1/batch", &deep_in_batch, "", "nests 73 levels deep"),
        invalid_body("an array for one event", "/v1/track", "[]", "", "must be a JSON object holding one event"),
        invalid_body("a string for one event", "/v1/page", "\"hello\"", "", "must be a JSON object holding one event"),
        invalid_event(
            "no user or anonymous id",
            "/v1/identify",
            r#"{"traits":{}}"#,
            "userId",
            "userId or anonymousId is required",
        ),
        invalid_event(
            "blank user id",
            "/v1/identify",
            r#"{"userId":"   "}"#,
            "userId",
            "userId or anonymousId is required",
        ),
        invalid_event(
            "boolean user id",
            "/v1/identify",
            r#"{"userId":true}"#,
            "userId",
            "must be a string or a number",
        ),
        invalid_event(
            "object user id",
            "/v1/track",
            r#"{"userId":{"id":1},"event":"e"}"#,
            "userId",
            "must be a string or a number",
        ),
        invalid_event(
            "array anonymous id",
            "/v1/page",
            r#"{"anonymousId":["a"]}"#,
            "anonymousId",
            "must be a string or a number",
        ),
        invalid_event("track without event", "/v1/track", r#"{"userId":"u"}"#, "event", "is required for track events"),
        invalid_event(
            "track with empty event",
            "/v1/track",
            r#"{"userId":"u","event":" "}"#,
            "event",
            "is required for track events",
        ),
        invalid_event(
            "track with numeric event",
            "/v1/track",
            r#"{"userId":"u","event":5}"#,
            "event",
            "must be a string",
        ),
        invalid_event(
            "group without groupId",
            "/v1/group",
            r#"{"userId":"u"}"#,
            "groupId",
            "is required for group events",
        ),
        invalid_event(
            "group with null groupId",
            "/v1/group",
            r#"{"userId":"u","groupId":null}"#,
            "groupId",
            "is required",
        ),
        invalid_event(
            "alias without previousId",
            "/v1/alias",
            r#"{"userId":"u"}"#,
            "previousId",
            "is required for alias events",
        ),
        invalid_event(
            "alias without userId",
            "/v1/alias",
            r#"{"anonymousId":"a","previousId":"p"}"#,
            "userId",
            "is required for alias",
        ),
        invalid_event(
            "page name not a string",
            "/v1/page",
            r#"{"userId":"u","name":{"x":1}}"#,
            "name",
            "must be a string",
        ),
        invalid_event(
            "timestamp not RFC 3339",
            "/v1/track",
            r#"{"userId":"u","event":"e","timestamp":"01/05/2024"}"#,
            "timestamp",
            "must be an RFC 3339 timestamp",
        ),
        invalid_event(
            "timestamp as a number",
            "/v1/track",
            r#"{"userId":"u","event":"e","timestamp":1714564800}"#,
            "timestamp",
            "string, not a number",
        ),
        invalid_event(
            "sentAt not RFC 3339",
            "/v1/page",
            r#"{"userId":"u","sentAt":"now"}"#,
            "sentAt",
            "must be an RFC 3339 timestamp",
        ),
        invalid_event(
            "originalTimestamp impossible date",
            "/v1/page",
            r#"{"userId":"u","originalTimestamp":"2024-02-30T00:00:00Z"}"#,
            "originalTimestamp",
            "must be an RFC 3339",
        ),
        invalid_event(
            "timestamp in the year 0000 (RFC 3339 allows it; Intercom's dates start at 0001)",
            "/v1/identify",
            r#"{"userId":"u","timestamp":"0000-05-01T12:00:00Z"}"#,
            "timestamp",
            "must fall within the years 0001–9999 in UTC",
        ),
        invalid_event(
            "timestamp late on 9999-12-31 west of UTC: the year 10000 in UTC (made ingest panic: a 502)",
            "/v1/track",
            r#"{"userId":"u","event":"e","timestamp":"9999-12-31T23:00:00-05:00"}"#,
            "timestamp",
            "must fall within the years 0001–9999 in UTC",
        ),
        invalid_event(
            "sentAt in the year 10000 in UTC",
            "/v1/page",
            r#"{"userId":"u","sentAt":"9999-12-31T23:59:00-00:01"}"#,
            "sentAt",
            "must fall within the years 0001–9999 in UTC",
        ),
        invalid_event(
            "clock skew beyond the calendar",
            "/v1/page",
            r#"{"userId":"u","timestamp":"0001-01-01T00:00:00Z","sentAt":"9999-12-31T00:00:00Z"}"#,
            "sentAt",
            "too far",
        ),
        invalid_event(
            "traits as an array",
            "/v1/identify",
            r#"{"userId":"u","traits":["a"]}"#,
            "traits",
            "must be an object, not an array",
        ),
        invalid_event(
            "properties as a string",
            "/v1/track",
            r#"{"userId":"u","event":"e","properties":"x"}"#,
            "properties",
            "must be an object, not a string",
        ),
        invalid_event(
            "context as a number",
            "/v1/screen",
            r#"{"userId":"u","context":3}"#,
            "context",
            "must be an object, not a number",
        ),
        invalid_event(
            "integrations as an array",
            "/v1/page",
            r#"{"userId":"u","integrations":[]}"#,
            "integrations",
            "must be an object",
        ),
        invalid_event(
            "type disagrees with the path",
            "/v1/identify",
            r#"{"type":"track","userId":"u"}"#,
            "type",
            "this endpoint takes identify events",
        ),
        invalid_event("type not a string", "/v1/identify", r#"{"type":1,"userId":"u"}"#, "type", "must be a string"),
        invalid_event(
            "duplicate key",
            "/v1/identify",
            r#"{"userId":"u","userId":"v"}"#,
            "userId",
            "appears more than once",
        ),
        invalid_body("batch missing", "/v1/batch", r#"{"events":[]}"#, "batch", "is required: an array of events"),
        invalid_body("batch not an array", "/v1/batch", r#"{"batch":{"type":"track"}}"#, "batch", "must be an array"),
        invalid_body("batch empty", "/v1/import", r#"{"batch":[]}"#, "batch", "must hold at least one event"),
        invalid_body(
            "batch context not an object",
            "/v1/batch",
            r#"{"batch":[{"type":"page","userId":"u"}],"context":"x"}"#,
            "context",
            "must be an object",
        ),
        invalid_body(
            "batch sentAt invalid",
            "/v1/batch",
            r#"{"batch":[{"type":"page","userId":"u"}],"sentAt":"soon"}"#,
            "sentAt",
            "must be an RFC 3339",
        ),
        invalid_body("batch key twice", "/v1/batch", r#"{"batch":[],"batch":[]}"#, "batch", "appears more than once"),
        at(
            case(
                "batch with no valid event",
                post("/v1/batch", r#"{"batch":[{"type":"track","userId":"u"},7,{"userId":"u"}]}"#),
                400,
                "invalid_batch",
                "is required for track events",
            ),
            "event",
        ),
        at(
            case(
                "batch event of unknown type",
                post("/v1/batch", r#"{"batch":[{"type":"purchase","userId":"u"}]}"#),
                400,
                "invalid_batch",
                "must be one of identify, track",
            ),
            "type",
        ),
        at(
            case(
                "batch event not an object",
                post("/v1/batch", r#"{"batch":["track"]}"#),
                400,
                "invalid_batch",
                "an event must be a JSON object",
            ),
            "",
        ),
        case(
            "single event over 32 KB",
            post("/v1/track", &big_event),
            413,
            "payload_too_large",
            "limit of 32768 bytes (32 KB)",
        ),
        case(
            "batch over 500 KB",
            post("/v1/batch", &big_batch),
            413,
            "payload_too_large",
            "limit of 512000 bytes (500 KB)",
        ),
        case(
            "10,000-event batch",
            post("/v1/batch", &too_many),
            413,
            "too_many_events",
            "the batch holds 10000 events; the limit is 1000",
        ),
        case(
            "batch context copied into every event",
            post("/v1/batch", &amplified),
            413,
            "payload_too_large",
            "would queue over 4194304 bytes",
        ),
        case(
            "gzip bomb",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/batch", &bomb),
            413,
            "payload_too_large",
            "measured after decompression",
        ),
        case(
            "not gzip",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/batch", b"{\"batch\":[]}"),
            400,
            "bad_gzip",
            "not valid gzip",
        ),
        case(
            "truncated gzip",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/batch", &gzip(b"{\"batch\":[]}")[..12]),
            400,
            "bad_gzip",
            "not valid gzip",
        ),
        case(
            "brotli",
            with(&[AUTH, JSON, ("content-encoding", "br")], "/v1/track", b"{}"),
            415,
            "unsupported_encoding",
            "Content-Encoding br",
        ),
        case(
            "multipart content type",
            with(&[AUTH, ("content-type", "multipart/form-data; boundary=x")], "/v1/track", b"--x"),
            415,
            "unsupported_media_type",
            "multipart/form-data",
        ),
        case(
            "a real form body (the form type is taken, as RudderStack's Node SDK labels JSON with it)",
            with(&[AUTH, ("content-type", "application/x-www-form-urlencoded")], "/v1/track", b"userId=u"),
            400,
            "malformed_json",
            "the body is not valid JSON",
        ),
        case(
            "no write key",
            with(&[JSON], "/v1/track", br#"{"userId":"u","event":"e"}"#),
            401,
            "unauthorized",
            "a write key is required",
        ),
        case(
            "no key and an invalid event",
            with(&[JSON], "/v1/identify", br#"{"traits":[]}"#),
            401,
            "unauthorized",
            "a write key is required",
        ),
        case(
            "wrong write key",
            with(&[("authorization", "Basic d3Jvbmc6"), JSON], "/v1/track", br#"{"userId":"u","event":"e"}"#),
            401,
            "unauthorized",
            "not valid",
        ),
        case(
            "bearer token",
            with(&[("authorization", "Bearer test-write-key"), JSON], "/v1/track", b"{}"),
            401,
            "unauthorized",
            "must be HTTP Basic",
        ),
        case(
            "Basic with no username",
            with(&[("authorization", "Basic OnNlY3JldA=="), JSON], "/v1/track", b"{}"),
            401,
            "unauthorized",
            "a write key is required",
        ),
        case(
            "Basic not base64",
            with(&[("authorization", "Basic ***"), JSON], "/v1/track", b"{}"),
            401,
            "unauthorized",
            "must be HTTP Basic",
        ),
        case(
            "wrong writeKey in the body",
            with(&[("content-type", "text/plain")], "/v1/track", br#"{"userId":"u","event":"e","writeKey":"nope"}"#),
            401,
            "unauthorized",
            "not valid",
        ),
        at(
            case(
                "writeKey not a string",
                with(&[("content-type", "text/plain")], "/v1/track", br#"{"userId":"u","event":"e","writeKey":1}"#),
                400,
                "invalid_body",
                "must be a string",
            ),
            "writeKey",
        ),
        case(
            "GET",
            request("GET", "/v1/track", &[AUTH], None),
            405,
            "method_not_allowed",
            "GET is not allowed here: use POST",
        ),
        case(
            "POST to the settings",
            post("/v1/projects/test-write-key/settings", "{}"),
            405,
            "method_not_allowed",
            "POST is not allowed here: use GET",
        ),
        case(
            "PUT",
            request("PUT", "/v1/batch", &[AUTH, JSON], Some(b"{}")),
            405,
            "method_not_allowed",
            "PUT is not allowed",
        ),
        case("unknown path", post("/v1/purchase", "{}"), 404, "not_found", "there is no endpoint at /v1/purchase"),
        case("wrong version", post("/v2/track", "{}"), 404, "not_found", "/v2/track"),
        case("root", request("GET", "/", &[], None), 404, "not_found", "there is no endpoint at /"),
        case(
            "origin not allowed",
            with(&[AUTH, JSON, ("origin", "https://evil.example.net")], "/v1/track", br#"{"userId":"u","event":"e"}"#),
            403,
            "origin_not_allowed",
            "https://evil.example.net",
        ),
        case(
            "preflight from an origin not allowed",
            request("OPTIONS", "/v1/track", &[("origin", "https://evil.example.net")], None),
            403,
            "origin_not_allowed",
            "CORS_ALLOWED_ORIGINS",
        ),
        // Personal data and secrets in refused requests: the answer names the field; the logs hold neither (`CANARY`).
        invalid_event(
            "CRLF header injection in userId",
            "/v1/track",
            r#"{"userId":"canary-user\r\nX-Injected: 1","event":"e","timestamp":"nope"}"#,
            "timestamp",
            "got \"nope\"",
        ),
        invalid_event(
            "an email in a refused event",
            "/v1/track",
            r#"{"userId":"canary-user","event":"","traits":{"email":"canary@example.com"}}"#,
            "event",
            "is required for track events",
        ),
        invalid_event(
            "userId beyond what JSON tools hold",
            "/v1/track",
            r#"{"userId":1e400,"event":"e"}"#,
            "userId",
            "JSON tools cannot represent",
        ),
        invalid_event(
            "a byte-order mark and a number beyond f64",
            "/v1/track",
            "\u{feff}{\"userId\":\"canary-user\",\"event\":\"e\",\"properties\":{\"n\":1e400}}",
            "properties",
            "number out of range",
        ),
        case(
            "a wrong write key in the body",
            with(&[JSON], "/v1/track", br#"{"writeKey":"canary-secret-key","userId":"canary-user","event":"e"}"#),
            401,
            "unauthorized",
            "the write key is not valid",
        ),
        invalid_event(
            "NUL in userId and a numeric timestamp",
            "/v1/track",
            r#"{"userId":"canary\u0000","event":"e","timestamp":1}"#,
            "timestamp",
            "not a number",
        ),
        case(
            "Basic auth that is not base64",
            with(&[("authorization", "Basic !!!canary"), JSON], "/v1/track", br#"{"userId":"u","event":"e"}"#),
            401,
            "unauthorized",
            "must be HTTP Basic",
        ),
        case(
            "a Bearer token instead of Basic auth",
            with(&[("authorization", "Bearer canary-token"), JSON], "/v1/track", br#"{"userId":"u","event":"e"}"#),
            401,
            "unauthorized",
            "must be HTTP Basic",
        ),
        invalid_event(
            "an impossible date beside personal traits",
            "/v1/identify",
            r#"{"userId":"canary-user","traits":{"email":"canary@example.com"},"timestamp":"2024-13-45T00:00:00Z"}"#,
            "timestamp",
            "2024-13-45",
        ),
        case(
            "brotli encoding",
            with(&[AUTH, JSON, ("content-encoding", "br")], "/v1/track", br#"{"userId":"u","event":"e"}"#),
            415,
            "unsupported_encoding",
            "send gzip or no encoding",
        ),
        // Encodings and bytes.
        case(
            "a body marked base64 that is not",
            encoded_request("POST", "/v1/track", &[AUTH, JSON], Value::from("eyJ1c2VySWQiOiJjYW5hcnkifQ==!!"), true),
            400,
            "bad_base64",
            "isBase64Encoded",
        ),
        case(
            "base64 of invalid UTF-8",
            encoded_request("POST", "/v1/track", &[AUTH, JSON], Value::from("eyJ1c2VySWQiOiLAryJ9"), true),
            400,
            "invalid_utf8",
            "offset 11",
        ),
        case(
            "UTF-16 with its byte-order mark",
            with(&[AUTH, JSON], "/v1/track", &utf16),
            400,
            "invalid_utf8",
            "offset 0",
        ),
        case(
            "overlong UTF-8 slash",
            with(&[AUTH, JSON], "/v1/page", b"{\"userId\":\"\xc0\xaf\"}"),
            400,
            "invalid_utf8",
            "offset 11",
        ),
        case("NUL bytes only", with(&[AUTH, JSON], "/v1/track", b"\0\0\0\0"), 400, "malformed_json", "not valid JSON"),
        case(
            "a raw NUL inside a string",
            with(&[AUTH, JSON], "/v1/track", b"{\"userId\":\"canary\0\",\"event\":\"e\"}"),
            400,
            "malformed_json",
            "control character",
        ),
        invalid_event(
            "a lone surrogate escape in userId",
            "/v1/identify",
            r#"{"userId":"\ud800canary"}"#,
            "userId",
            "a lone surrogate",
        ),
        case("a byte-order mark alone", post("/v1/track", "\u{feff}"), 400, "malformed_json", "not valid JSON"),
        case(
            "stacked encodings",
            with(&[AUTH, JSON, ("content-encoding", "gzip, gzip")], "/v1/track", &gzip(&gzip(b"{}"))),
            415,
            "unsupported_encoding",
            "gzip, gzip",
        ),
        case(
            "deflate",
            with(&[AUTH, JSON, ("content-encoding", "deflate")], "/v1/track", b"x"),
            415,
            "unsupported_encoding",
            "deflate",
        ),
        case(
            "gzip bomb at a single-event route",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/identify", &gzip(&vec![b' '; 4 * 1024 * 1024])),
            413,
            "payload_too_large",
            "limit of 32768 bytes",
        ),
        case(
            "two gzip members that together pass the limit",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/batch", &two_members),
            413,
            "payload_too_large",
            "measured after decompression",
        ),
        case(
            "gzip of nothing",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/batch", &gzip(b"")),
            400,
            "empty_body",
            "the body is empty",
        ),
        case(
            "gzip of invalid UTF-8",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/track", &gzip(b"{\"userId\":\"\xff\"}")),
            400,
            "invalid_utf8",
            "offset 11",
        ),
        case(
            "gzip followed by garbage",
            with(&[AUTH, JSON, ("content-encoding", "gzip")], "/v1/batch", &gzip_then_garbage),
            400,
            "bad_gzip",
            "not valid gzip",
        ),
        case(
            "text/html",
            with(&[AUTH, ("content-type", "text/html")], "/v1/track", b"<p>"),
            415,
            "unsupported_media_type",
            "text/html",
        ),
        case(
            "application/xml",
            with(&[AUTH, ("content-type", "application/xml")], "/v1/track", b"<a/>"),
            415,
            "unsupported_media_type",
            "application/xml",
        ),
        // Numbers, keys and sizes.
        invalid_event(
            "the same key spelled with an escape",
            "/v1/identify",
            r#"{"userId":"canary-user","user\u0049d":"v"}"#,
            "userId",
            "appears more than once",
        ),
        case("1,001 events", post("/v1/batch", &just_over), 413, "too_many_events", "holds 1001 events"),
        case("1,000 invalid events", post("/v1/batch", &all_invalid), 400, "invalid_batch", "none of the 1000 events"),
        // Auth, methods and paths.
        case(
            "Basic with nothing after it",
            with(&[("authorization", "Basic "), JSON], "/v1/track", b"{}"),
            401,
            "unauthorized",
            "must be HTTP Basic",
        ),
        case(
            "Basic of invalid UTF-8",
            with(&[("authorization", "Basic //79Og=="), JSON], "/v1/track", b"{}"),
            401,
            "unauthorized",
            "must be HTTP Basic",
        ),
        case(
            "the write key as the password",
            with(&[("authorization", "Basic OnRlc3Qtd3JpdGUta2V5"), JSON], "/v1/track", b"{}"),
            401,
            "unauthorized",
            "a write key is required",
        ),
        case(
            "an empty writeKey in the body",
            with(&[JSON], "/v1/track", br#"{"writeKey":"","userId":"canary-user","event":"e"}"#),
            401,
            "unauthorized",
            "not valid",
        ),
        case("HEAD", request("HEAD", "/v1/track", &[AUTH], None), 405, "method_not_allowed", "HEAD is not allowed"),
        case("PATCH", request("PATCH", "/v1/batch", &[AUTH, JSON], Some(b"{}")), 405, "method_not_allowed", "PATCH"),
        case("an encoded CRLF in the path", post("/v1/track%0d%0aX:1", "{}"), 404, "not_found", "/v1/track%0d%0aX:1"),
        case("upper-case path", post("/V1/TRACK", "{}"), 404, "not_found", "/V1/TRACK"),
        case("a path under an endpoint", post("/v1/batch/extra", "{}"), 404, "not_found", "/v1/batch/extra"),
        case(
            "CRLF in a batch event's messageId",
            post(
                "/v1/batch",
                r#"{"batch":[{"type":"track","userId":"canary-user","event":"e","messageId":"m\r\nx","timestamp":"bad"}]}"#,
            ),
            400,
            "invalid_batch",
            "none of the 1 events is valid",
        ),
    ]
}

/// Planted in refused requests as personal data or a secret: it must never reach a log line.
const CANARY: &str = "canary";

fn error_matches(body: &Value, path: Option<&str>, message: &str) -> bool {
    let matches = |error: &Value| {
        path.is_none_or(|p| error["path"] == p) && error["message"].as_str().is_some_and(|m| m.contains(message))
    };
    let rejected = body["rejected"].as_array().into_iter().flatten();
    matches(&body["error"]) || rejected.flat_map(|r| r["errors"].as_array().into_iter().flatten()).any(matches)
}

#[tokio::test]
async fn every_bad_request_gets_a_precise_error_and_enqueues_nothing() {
    let cases = cases();
    assert!(cases.len() >= 60, "the table must hold at least 60 bad inputs, it has {}", cases.len());
    let count = cases.len();
    // Everything the handler logs, at the most verbose level, as CloudWatch would receive it.
    let (logs, _guard) = Captured::start(tracing::Level::TRACE, true);
    let mut failures = Vec::new();
    for case in cases {
        let app = memory_app();
        let answer = send(&app, case.request).await;
        let body = &answer.body;
        let problems = [
            (answer.status.as_u16() != case.status)
                .then(|| format!("status {} (expected {})", answer.status, case.status)),
            (body["success"] != false).then(|| "success is not false".to_owned()),
            (body["error"]["code"] != case.code)
                .then(|| format!("code {} (expected {})", body["error"]["code"], case.code)),
            (!error_matches(body, case.path, case.message))
                .then(|| format!("no error at {:?} containing {:?}", case.path, case.message)),
            (!app.queue().is_empty()).then(|| format!("{} messages were enqueued", app.queue().len())),
        ];
        for problem in problems.into_iter().flatten() {
            failures.push(format!(
                "{}: {problem}; answer: {}",
                case.name,
                body.to_string().chars().take(400).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    let logs = logs.text();
    assert!(logs.lines().count() >= count, "one log line per request at least: {logs}");
    for secret in [CANARY, WRITE_KEY, BASIC_AUTH.trim_start_matches("Basic ")] {
        let line = logs.lines().find(|line| line.to_ascii_lowercase().contains(secret));
        assert!(line.is_none(), "{secret} was logged: {}", line.unwrap_or_default());
    }
}

#[tokio::test]
async fn a_missing_or_wrong_key_asks_for_basic_auth() {
    let app = memory_app();
    let answer = send(&app, request("POST", "/v1/track", &[JSON], Some(br#"{"userId":"u","event":"e"}"#))).await;
    assert_eq!(answer.status, 401);
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic "), "{challenge}");
}

#[tokio::test]
async fn malformed_json_names_the_line_and_column() {
    let app = memory_app();
    let answer = send(&app, post("/v1/track", "{\"userId\": \"u\",\n  \"event\": e}")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"]["line"], 2);
    assert_eq!(answer.body["error"]["column"], 12);
}

#[tokio::test]
async fn wrong_methods_are_told_what_is_allowed() {
    let app = memory_app();
    let answer = send(&app, request("DELETE", "/v1/identify/", &[], None)).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "POST, OPTIONS");
    let answer = send(&app, request("GET", "/v1/batch", &[("origin", ALLOWED_ORIGIN)], None)).await;
    assert_eq!(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN, "browsers can read the error");
}

#[tokio::test]
async fn a_caller_cannot_forge_the_bad_base64_marker() {
    let app = memory_app();
    let headers = [AUTH, JSON, ("x-intercom-relay-bad-base64", "1")];
    let answer = send(&app, request("POST", "/v1/track", &headers, Some(br#"{"userId":"u","event":"e"}"#))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.queue().len(), 1);
}

#[tokio::test]
async fn ids_past_2_to_the_64_are_queued_digit_for_digit() {
    let app = memory_app();
    let body = r#"{"userId":18446744073709551617,"anonymousId":-99999999999999999999,"event":"e"}"#;
    let answer = send(&app, post("/v1/track", body)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let events = envelope_events(app.queue().messages().into_iter().map(|m| m.body));
    assert_eq!(events[0]["userId"], "18446744073709551617");
    assert_eq!(events[0]["anonymousId"], "-99999999999999999999");
}
