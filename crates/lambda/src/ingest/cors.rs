//! CORS: which browser origins may send events, and the headers that tell the browser so.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ALLOW, VARY,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use lambda_http::{Body, Response};

/// The methods the API answers: POST for events, GET for the mobile SDKs' settings.
pub(crate) const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";

/// Every request header the SDKs send, on first tries and on retries, listed one by one: `*` does not cover
/// `Authorization`, and Firefox and Safari refuse `*` alongside it. Sources (`docs/sdks.md` cites each):
/// analytics.js 2.0 sends `X-Retry-Count` on retries; RudderStack's JS SDK v3 sends `AnonymousId` and `SentAt` always and
/// the `Rsa-*` headers on retries; the mobile and server SDKs send `Authorization`, `Content-Type` and
/// `Content-Encoding`. The template's function URL lists the same (`tests/it/template.rs` checks they agree).
pub const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-encoding",
    "x-retry-count",
    "anonymousid",
    "sentat",
    "rsa-retry-attempt",
    "rsa-retry-reason",
    "rsa-since-first-attempt",
    "rsa-since-last-attempt",
    "rsa-recovered",
];

/// Response headers a page may read: the wait a 429 or 503 asks for, which the SDKs' retries honour.
pub const EXPOSED_HEADERS: &str = "retry-after";

/// How long a browser may reuse a preflight's answer: a day (Chromium caps it at two hours, Firefox does not).
pub const PREFLIGHT_MAX_AGE_SECONDS: u32 = 86_400;

/// The origins allowed to call the API from a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`*`): what Segment's API allows.
    Any,
    /// Exactly these origins, such as `https://app.example.com`.
    List(Vec<String>),
}

/// Why a list of allowed origins (`CORS_ALLOWED_ORIGINS`) cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginsError {
    #[error("must hold `*` or at least one origin such as https://app.example.com")]
    Empty,
    #[error("`{0}` is not an origin: write scheme://host[:port], without a path")]
    NotAnOrigin(String),
}

impl AllowedOrigins {
    /// Reads a comma-separated list; `*` allows any origin.
    pub fn parse(text: &str) -> Result<AllowedOrigins, OriginsError> {
        let origins: Vec<&str> = text.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
        if origins.is_empty() {
            return Err(OriginsError::Empty);
        }
        if origins.contains(&"*") {
            return Ok(AllowedOrigins::Any);
        }
        for origin in &origins {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            let valid = rest.is_some_and(|host| !host.is_empty() && !host.contains(['/', ' ', '?', '#']));
            if !valid {
                return Err(OriginsError::NotAnOrigin((*origin).to_owned()));
            }
        }
        Ok(AllowedOrigins::List(origins.into_iter().map(|o| o.to_ascii_lowercase()).collect()))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, or `None` when it is not allowed.
    pub(crate) fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(list) => {
                let origin_text = origin.to_str().ok()?.to_ascii_lowercase();
                list.contains(&origin_text).then(|| origin.clone())
            }
        }
    }
}

/// Who writes the CORS headers of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CorsHeaders {
    /// The relay: `serve`, and a function URL without a CORS configuration.
    #[default]
    Ours,
    /// The function URL's CORS configuration (the template's): Lambda answers preflights without invoking the function
    /// and adds the headers to every answer, its own 429s included, overriding any the function sets. The function
    /// then adds none, so that no answer could carry two (it still refuses origins not listed).
    FunctionUrl,
}

/// Why `CORS_BY_FUNCTION_URL` cannot be read: it holds this (trimmed), not `true` or `false`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be true or false, not `{}`", .0.escape_debug())]
pub struct NotABoolean(String);

impl CorsHeaders {
    /// Reads `CORS_BY_FUNCTION_URL` (`true` or `false`, default `false`).
    pub(crate) fn parse(value: &str) -> Result<CorsHeaders, NotABoolean> {
        match value.trim() {
            "true" => Ok(CorsHeaders::FunctionUrl),
            "false" | "" => Ok(CorsHeaders::Ours),
            other => Err(NotABoolean(other.to_owned())),
        }
    }
}

/// The answer to a preflight, for any path: 204, so that the POST that follows gets its own, readable answer.
pub(crate) fn preflight() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(ALLOW, ALLOWED_METHODS)
        .header(ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS)
        .header(ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS.join(", "))
        .header(ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_SECONDS)
        .body(Body::Empty)
        .expect("static headers are valid")
}

/// Adds to `headers` what lets the page of `origin` read the answer (nothing for an origin not allowed).
pub(crate) fn decorate(allowed: &AllowedOrigins, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    let Some(origin) = origin else { return };
    if let Some(allowed) = allowed.allow(origin) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
    headers.append(VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_allows_only_its_origins() {
        let allowed = AllowedOrigins::parse("https://app.example.com, http://localhost:3000").unwrap();
        let origin = HeaderValue::from_static("https://App.example.com");
        assert_eq!(allowed.allow(&origin), Some(origin.clone()));
        assert_eq!(allowed.allow(&HeaderValue::from_static("https://evil.example.com")), None);
        assert_eq!(AllowedOrigins::parse("https://a.com,*").unwrap(), AllowedOrigins::Any);
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        assert!(AllowedOrigins::parse("").is_err());
        assert!(
            AllowedOrigins::parse("app.example.com")
                .unwrap_err()
                .to_string()
                .contains("`app.example.com` is not an origin")
        );
        assert!(AllowedOrigins::parse("https://app.example.com/").is_err());
    }
}
