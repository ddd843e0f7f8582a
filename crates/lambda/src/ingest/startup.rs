//! What SDKs fetch before they send anything, answered so that they start and stay on the relay.
//!
//! - Segment's mobile SDKs (analytics-swift 1.10.0 `Settings.swift`, analytics-kotlin 1.25.0 `Settings.kt`,
//!   analytics-react-native 2.24.1 `analytics.ts`) always `GET {cdnHost}/projects/{writeKey}/settings` at start. The
//!   answer must name the `Segment.io` destination (without it they drop every event), with `apiKey` (Kotlin requires
//!   it) and no `apiHost`: one there would override the host the app configured (Swift `SegmentDestination.swift`,
//!   Kotlin `SegmentDestination.kt` keep theirs when it is absent), and the relay cannot know the address the app uses (a
//!   custom domain, a CDN in front). `metrics.sampleRate` 0 keeps Swift's and Kotlin's telemetry, which posts to
//!   Segment's host whatever `apiHost` says, from starting.
//! - RudderStack's Android (1.28) and iOS (1.31) SDKs upload nothing until `GET {controlPlaneUrl}/sourceConfig` gives
//!   an enabled source; no destinations, and statistics off so they post nothing else.

use http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::json;

/// The settings a Segment mobile SDK reads at start.
pub(crate) fn segment_settings(write_key: &str) -> Response<Body> {
    let settings = json!({
        "integrations": {"Segment.io": {"apiKey": write_key}},
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn the_settings_enable_the_segment_destination_on_the_apps_own_host_with_telemetry_off() {
        let settings = body(&segment_settings("KEY"));
        assert_eq!(settings["integrations"]["Segment.io"], json!({"apiKey": "KEY"}));
        assert_eq!(settings["metrics"]["sampleRate"], json!(0));
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
