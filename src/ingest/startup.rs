//! What SDKs fetch before they send anything, answered so that they start and stay on the relay.
//!
//! - Segment's mobile SDKs (analytics-swift 1.10.0 `Settings.swift`, analytics-kotlin 1.25.0 `Settings.kt`,
//!   analytics-react-native 2.24.1 `analytics.ts`) always `GET {cdnHost}/projects/{writeKey}/settings` at start. The
//!   answer must name the `Segment.io` destination (without it they drop every event), with `apiKey` (Kotlin requires
//!   it) and `apiHost` (which overrides the one the app configured, so it must be the relay's own). `metrics.sampleRate`
//!   0 keeps Swift's and Kotlin's telemetry, which posts to Segment's host whatever `apiHost` says, from starting.
//! - RudderStack's Android (1.28) and iOS (1.31) SDKs upload nothing until `GET {controlPlaneUrl}/sourceConfig` gives
//!   an enabled source; no destinations, and statistics off so they post nothing else.

use http::{HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde_json::json;

/// The settings a Segment mobile SDK reads at start. `host` is the request's `Host`: the address the SDK reached the
/// relay at, which is where its events must go. Without a usable one, `apiHost` is left out and the app's own stands.
pub(crate) fn segment_settings(write_key: &str, host: Option<&HeaderValue>) -> Response<Body> {
    let mut destination = json!({"apiKey": write_key});
    if let Some(host) = host.and_then(|h| h.to_str().ok()).filter(|h| is_host(h)) {
        destination["apiHost"] = format!("{host}/v1").into();
    }
    let settings = json!({
        "integrations": {"Segment.io": destination},
        "plan": {},
        "edgeFunction": {},
        "middlewareSettings": {},
        "metrics": {"sampleRate": 0},
    });
    super::json_response(StatusCode::OK, &settings)
}

/// The source configuration a RudderStack mobile SDK waits for before it uploads.
pub(crate) fn source_config() -> Response<Body> {
    let config = json!({
        "isHosted": false,
        "source": {
            "id": "intercom-relay",
            "name": "intercom-relay",
            "enabled": true,
            "updatedAt": "2026-01-01T00:00:00.000Z",
            "config": {"statsCollection": {"errors": {"enabled": false}, "metrics": {"enabled": false}}},
            "destinations": [],
        },
    });
    super::json_response(StatusCode::OK, &config)
}

/// A `Host` header worth echoing: a name or address and an optional port, nothing that could bend the JSON or a URL.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn the_settings_send_the_sdk_back_to_the_host_it_reached() {
        let answer = segment_settings("KEY", Some(&HeaderValue::from_static("relay.example.com")));
        let settings = body(&answer);
        assert_eq!(settings["integrations"]["Segment.io"], json!({"apiKey": "KEY", "apiHost": "relay.example.com/v1"}));
        assert_eq!(settings["metrics"]["sampleRate"], json!(0));
    }

    #[test]
    fn a_strange_host_is_not_echoed() {
        for host in ["evil.com/x", "a b", ""] {
            let answer = segment_settings("KEY", HeaderValue::from_str(host).ok().as_ref());
            assert_eq!(body(&answer)["integrations"]["Segment.io"], json!({"apiKey": "KEY"}), "{host}");
        }
    }

    #[test]
    fn the_source_is_enabled_with_no_destination() {
        let config = body(&source_config());
        assert_eq!(
            (config["source"]["enabled"].clone(), config["source"]["destinations"].clone()),
            (json!(true), json!([]))
        );
    }
}
