//! The paths the analytics SDKs post to, and what each one is.
//!
//! Where each path comes from (read in the SDKs' published source; `docs/sdks.md` cites file and version):
//! - Segment's HTTP Tracking API and the server SDKs: `/v1/{identify,track,page,screen,group,alias}`, `/v1/batch`,
//!   `/v1/import`. RudderStack's JS SDK v3 posts single events to the same long paths and batches to `/v1/batch`.
//! - analytics.js 2.0 (`@segment/analytics-next`): one event to `/v1/{i,t,p,s,g,a}`, a batch to `/v1/b`, its own
//!   usage metrics to `/v1/m`.
//! - Segment's mobile SDKs (analytics-swift, analytics-kotlin, analytics-react-native): batches to `{apiHost}/b`,
//!   `/v1/b` with the default `apiHost` layout.
//! - RudderStack's JS SDK v3 with `useBeacon`: `/beacon/v1/batch?writeKey=KEY`; its error reports, when a source
//!   configuration turns them on (the documented one does not): `/rsaMetrics`.
//! - At start, Segment's mobile SDKs `GET {cdnHost}/projects/{writeKey}/settings` (they cannot skip it) and RudderStack's
//!   Android and iOS SDKs `GET {controlPlaneUrl}/sourceConfig` (they upload nothing without it): pointed at the relay,
//!   both get an answer that keeps the SDK on the relay ([`super::startup`]).

use crate::event::{EventType, MAX_BATCH_BYTES, MAX_EVENT_BYTES};

/// What a path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// One event; the path gives its type.
    Single(EventType),
    /// Several events in `{"batch": [...]}`.
    Batch,
    /// analytics.js's usage metrics (`/v1/m`) and RudderStack's error reports (`/rsaMetrics`) about themselves: answered so
    /// they stop retrying, never queued, no key needed.
    Metrics,
    /// `GET /v1/projects/{writeKey}/settings`: a Segment mobile SDK's settings.
    SegmentSettings,
    /// `GET /sourceConfig`: a RudderStack mobile SDK's source configuration.
    SourceConfig,
}

impl Route {
    /// The route for `path`; trailing slashes are tolerated.
    pub fn parse(path: &str) -> Option<Route> {
        let path = path.trim_end_matches('/');
        match path {
            "/beacon/v1/batch" => return Some(Route::Batch),
            "/sourceConfig" => return Some(Route::SourceConfig),
            "/rsaMetrics" => return Some(Route::Metrics),
            _ => {}
        }
        if settings_key(path).is_some() {
            return Some(Route::SegmentSettings);
        }
        match path.strip_prefix("/v1/")? {
            "batch" | "import" | "b" => Some(Route::Batch),
            "m" => Some(Route::Metrics),
            "i" => Some(Route::Single(EventType::Identify)),
            "t" => Some(Route::Single(EventType::Track)),
            "p" => Some(Route::Single(EventType::Page)),
            "s" => Some(Route::Single(EventType::Screen)),
            "g" => Some(Route::Single(EventType::Group)),
            "a" => Some(Route::Single(EventType::Alias)),
            name => EventType::parse(name).map(Route::Single),
        }
    }

    /// The most bytes a body may hold, after decompression.
    pub(crate) fn body_limit(self) -> usize {
        match self {
            Route::Single(_) | Route::Metrics | Route::SegmentSettings | Route::SourceConfig => MAX_EVENT_BYTES,
            Route::Batch => MAX_BATCH_BYTES,
        }
    }

    /// The method the route answers (besides OPTIONS).
    pub(crate) fn method(self) -> http::Method {
        match self {
            Route::SegmentSettings | Route::SourceConfig => http::Method::GET,
            Route::Single(_) | Route::Batch | Route::Metrics => http::Method::POST,
        }
    }
}

/// The write key in a settings path (`/v1/projects/{writeKey}/settings`), still percent-encoded.
pub(crate) fn settings_key(path: &str) -> Option<&str> {
    let key = path.strip_prefix("/v1/projects/")?.strip_suffix("/settings")?;
    (!key.is_empty() && !key.contains('/')).then_some(key)
}

/// `path` as it may be logged: the segment after any `projects` (where the settings path holds a write key, and where
/// an SDK pointed at the wrong base would put it) masked, then at most 64 characters.
pub fn loggable(path: &str) -> String {
    let mut masked = Vec::new();
    let mut after_projects = false;
    for segment in path.split('/') {
        masked.push(if after_projects && !segment.is_empty() { "***" } else { segment });
        after_projects = segment.eq_ignore_ascii_case("projects");
    }
    masked.join("/").chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_tolerate_trailing_slashes_and_nothing_else() {
        assert_eq!(Route::parse("/v1/track"), Some(Route::Single(EventType::Track)));
        assert_eq!(Route::parse("/v1/identify/"), Some(Route::Single(EventType::Identify)));
        assert_eq!(Route::parse("/v1/import"), Some(Route::Batch));
        assert_eq!(Route::parse("/v1/batch//"), Some(Route::Batch));
        let not_routes = [
            "/",
            "/v1",
            "/v1/",
            "/v1/Track",
            "/v2/track",
            "/v1/track/x",
            "/track",
            "/b",
            "/v1/x",
            "/beacon/v1",
            "/v1/projects//settings",
            "/v1/projects/a/b/settings",
        ];
        for path in not_routes {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    #[test]
    fn the_short_paths_of_analytics_js_and_the_mobile_sdks() {
        let short = [
            ("/v1/i", EventType::Identify),
            ("/v1/t", EventType::Track),
            ("/v1/p", EventType::Page),
            ("/v1/s", EventType::Screen),
            ("/v1/g", EventType::Group),
            ("/v1/a", EventType::Alias),
        ];
        for (path, kind) in short {
            assert_eq!(Route::parse(path), Some(Route::Single(kind)), "{path}");
        }
        assert_eq!(Route::parse("/v1/b"), Some(Route::Batch));
        assert_eq!(Route::parse("/v1/m"), Some(Route::Metrics));
        assert_eq!(Route::parse("/rsaMetrics"), Some(Route::Metrics));
        assert_eq!(Route::parse("/beacon/v1/batch"), Some(Route::Batch));
        assert_eq!(Route::parse("/v1/projects/KEY/settings"), Some(Route::SegmentSettings));
        assert_eq!(Route::parse("/sourceConfig/"), Some(Route::SourceConfig));
    }

    #[test]
    fn a_key_in_a_path_is_never_logged() {
        let long_key = "0123456789abcdef".repeat(4);
        for path in [
            "/v1/projects/secret-key/settings".to_owned(),
            format!("/v1/projects/{long_key}/settings"),
            format!("/projects/{long_key}/settings"),
            format!("/x/Projects/{long_key}"),
        ] {
            let logged = loggable(&path);
            assert!(logged.contains("/***") && !logged.contains("0123") && !logged.contains("secret"), "{logged}");
        }
        assert_eq!(loggable("/v1/track"), "/v1/track");
        assert_eq!(loggable(&format!("/v1/{}", "x".repeat(100))).len(), 64);
    }
}
