//! The Intercom client: Bearer auth, the pinned version, JSON, timeouts, error decoding, retry classes and pacing.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tracing::{debug, warn};

use super::{ErrorList, RateLimit, RetryAction, classify};

const USER_AGENT: &str =
    concat!("intercom-relay/", env!("CARGO_PKG_VERSION"), " (+https://github.com/intercom-relay/intercom-relay)");

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum IntercomError {
    /// Intercom answered with an error status. Shown (in logs, dead letters) with the message redacted: Intercom quotes
    /// the values it refuses, which may be personal data; `message` itself is only read, never shown.
    #[error("Intercom answered {status} {code}: {redacted}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// `message` with the values it quotes left out (`super::redact`).
        redacted: String,
        request_id: Option<String>,
        retryable: bool,
        /// The `Link` header: a merged contact's 410 names the contact it became.
        link: Option<String>,
    },
    /// No answer: a timeout or a connection error.
    #[error("Intercom did not answer: {0}")]
    Transport(String),
    /// An answer that is not what the contract promises.
    #[error("Intercom's answer could not be read: {0}")]
    Unexpected(String),
    /// Not sent: every call has been failing for a reason of the workspace (this one, the last), and the forwarder's
    /// circuit breaker holds calls back until a probe succeeds.
    #[error("not sent while Intercom keeps failing ({0})")]
    Withheld(String),
}

impl IntercomError {
    /// Whether trying again can help (ARCHITECTURE.md's retry policy).
    pub fn is_retryable(&self) -> bool {
        match self {
            IntercomError::Api { retryable, .. } => *retryable,
            IntercomError::Transport(_) | IntercomError::Withheld(_) => true,
            IntercomError::Unexpected(_) => false,
        }
    }

    /// Intercom answered with a 5xx: its fault, but possibly only for this request.
    pub(crate) fn is_server_error(&self) -> bool {
        matches!(self, IntercomError::Api { status: 500..=599, .. })
    }

    /// A failure of the workspace rather than of the event: never the event's fault, so never a reason to dead-letter it.
    pub(crate) fn is_workspace_failure(&self) -> bool {
        self.kind().is_workspace_failure()
    }

    /// What the error means ([`super::ErrorKind`]).
    pub(crate) fn kind(&self) -> super::ErrorKind {
        match self {
            IntercomError::Api { status, .. } => super::ErrorKind::of_status(*status),
            IntercomError::Transport(_) => super::ErrorKind::Transient,
            IntercomError::Withheld(_) => super::ErrorKind::Withheld,
            IntercomError::Unexpected(_) => super::ErrorKind::Other,
        }
    }

    /// A 404 for a tag Intercom no longer holds ("Resource Not Found"), not for the contact ("User Not Found"): 2.16
    /// L7883-7901, L7989-8007.
    pub(crate) fn is_unknown_tag(&self) -> bool {
        self.kind() == super::ErrorKind::NotFound && self.message() == Some("Resource Not Found")
    }

    /// A 404 for the company a call named, not for the contact ("Company Not Found": SOURCE.txt; 2.16 L6185).
    pub(crate) fn is_unknown_company(&self) -> bool {
        self.kind() == super::ErrorKind::NotFound && self.code() == Some("company_not_found")
    }

    /// The HTTP status, when Intercom answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            IntercomError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Intercom's error code (`conflict`, `not_found`…), when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            IntercomError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Intercom's message as it may be shown (logged, dead-lettered): the values it quotes left out.
    pub(crate) fn shown_message(&self) -> Option<&str> {
        match self {
            IntercomError::Api { redacted, .. } => Some(redacted),
            _ => None,
        }
    }

    /// Intercom's message, when it answered with one: for reading (a conflict's id, a refused name), never for showing.
    pub fn message(&self) -> Option<&str> {
        match self {
            IntercomError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The contact a 409 on `POST /contacts` names as the one that exists.
    pub(crate) fn conflicting_contact(&self) -> Option<super::ConflictingContact> {
        match self {
            IntercomError::Api { status: 409, message, .. } => super::conflicting_contact(message),
            _ => None,
        }
    }

    /// The contact a merged contact became: a 410 `contact_merged` names it in its `Link` header.
    pub(crate) fn merged_into(&self) -> Option<super::ContactId> {
        match self {
            IntercomError::Api { status: 410, link: Some(link), .. } => super::requests::canonical_contact(link),
            _ => None,
        }
    }
}

/// The calls the forwarder makes; [`IntercomClient`] makes them over HTTP, tests may pass another.
pub trait IntercomApi: Send + Sync {
    /// `method` `path` with a JSON `body`; the answer's JSON (`Null` for an empty answer).
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> impl Future<Output = Result<Value, IntercomError>> + Send;

    /// The `Intercom-Version` the calls are made under: it decides request shapes that differ between versions.
    fn version(&self) -> super::ApiVersion;

    /// Makes `request`.
    fn send(&self, request: super::requests::Request) -> impl Future<Output = Result<Value, IntercomError>> + Send
    where
        Self: Sized,
    {
        async move { self.call(request.method, &request.path, request.body.as_ref()).await }
    }
}

/// One HTTP exchange with Intercom, as an [`Observer`] sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Exchange {
    pub method: String,
    /// The path and query, e.g. `/contacts/search`.
    pub path: String,
    /// The answer's status; `None` when no answer came (timeout, connection refused).
    pub status: Option<u16>,
    /// The request's JSON body.
    pub body: Option<Value>,
}

/// Told of every HTTP exchange a client makes, retries and 429s included (the local pipeline's per-event call list).
pub type Observer = Arc<dyn Fn(Exchange) + Send + Sync>;

/// Intercom over HTTP.
pub struct IntercomClient {
    http: reqwest::Client,
    base_url: String,
    token: SecretString,
    version: super::ApiVersion,
    /// What the last answer said of the rate limit; calls pause when the window is spent.
    rate_limit: Mutex<Option<RateLimit>>,
    /// How long a call may wait for a window to reset after a 429 before giving up (the invocation's time is finite).
    max_wait: Duration,
    observer: Option<Observer>,
}

impl std::fmt::Debug for IntercomClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntercomClient").field("base_url", &self.base_url).field("version", &self.version).finish()
    }
}

impl IntercomClient {
    /// A client for `base_url` (a region's root or a sandbox), sending `version` as `Intercom-Version`.
    pub fn new(
        base_url: &str,
        token: SecretString,
        version: super::ApiVersion,
        timeout: Duration,
    ) -> Result<IntercomClient, IntercomError> {
        // The process's one TLS configuration (compiled-in roots), not reqwest's own, which reads the system's CAs.
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::aws::config::tls())
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| IntercomError::Unexpected(e.to_string()))?;
        Ok(IntercomClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            version,
            rate_limit: Mutex::new(None),
            max_wait: Duration::from_secs(11),
            observer: None,
        })
    }

    /// Caps how long a rate-limited call may wait for the window to reset.
    pub fn with_max_wait(mut self, max_wait: Duration) -> IntercomClient {
        self.max_wait = max_wait;
        self
    }

    /// Tells `observer` of every exchange from now on.
    pub fn with_observer(mut self, observer: Observer) -> IntercomClient {
        self.observer = Some(observer);
        self
    }

    fn pause(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.rate_limit.lock().map(|limit| limit.map_or(Duration::ZERO, |l| l.pause_at(now))).unwrap_or_default()
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), IntercomError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .bearer_auth(self.token.expose_secret())
            .header("Intercom-Version", self.version.as_str())
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let observe = |status: Option<u16>| {
            if let Some(observer) = &self.observer {
                observer(Exchange { method: method.to_string(), path: path.to_owned(), status, body: body.cloned() });
            }
        };
        let response = request.send().await.map_err(|e| {
            observe(None);
            IntercomError::Transport(without_url(e))
        })?;
        let status = response.status().as_u16();
        observe(Some(status));
        if let Some(limit) = RateLimit::from_headers(response.headers())
            && let Ok(mut last) = self.rate_limit.lock()
        {
            *last = Some(limit);
        }
        let link = response.headers().get(http::header::LINK).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| IntercomError::Transport(without_url(e)))?;
        match classify(status) {
            RetryAction::Successful if bytes.is_empty() => Ok((status, Value::Null)),
            RetryAction::Successful => serde_json::from_slice(&bytes)
                .map(|v| (status, v))
                .map_err(|e| IntercomError::Unexpected(e.to_string())),
            action => {
                let list = ErrorList::decode(&bytes);
                let message = list.message().unwrap_or_default().to_owned();
                Err(IntercomError::Api {
                    status,
                    code: list.code().unwrap_or("unknown").to_owned(),
                    redacted: super::redact(&message, &super::request_keys(body)),
                    message,
                    request_id: list.request_id.clone(),
                    retryable: matches!(action, RetryAction::Retry(_)),
                    link,
                })
            }
        }
    }
}

/// A reqwest error's text without the URL (it holds nothing secret, but its query could hold an email).
fn without_url(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", error.without_url())
}

impl IntercomApi for IntercomClient {
    fn version(&self) -> super::ApiVersion {
        self.version
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, IntercomError> {
        let started = Instant::now();
        loop {
            let pause = self.pause();
            if !pause.is_zero() {
                if started.elapsed() + pause > self.max_wait {
                    let message = format!("the rate-limit window resets in {pause:?}, later than this call may wait");
                    return Err(IntercomError::Api {
                        status: 429,
                        code: "rate_limit_exceeded".into(),
                        redacted: message.clone(),
                        message,
                        request_id: None,
                        retryable: true,
                        link: None,
                    });
                }
                debug!(pause_ms = pause.as_millis() as u64, "Rate-limit window spent; pausing.");
                tokio::time::sleep(pause).await;
            }
            match self.send_once(&method, path, body).await {
                Err(IntercomError::Api { status: 429, .. }) if !self.pause().is_zero() => {
                    let path = super::requests::path_for_logs(path);
                    warn!(%method, %path, "Intercom answered 429; waiting for the window to reset.");
                }
                outcome => return outcome.map(|(_, value)| value),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_failures_are_told_from_the_events_own() {
        let api = |status: u16| IntercomError::Api {
            status,
            code: "x".into(),
            message: String::new(),
            redacted: String::new(),
            request_id: None,
            retryable: false,
            link: None,
        };
        for status in [401, 403, 408, 429, 500, 502, 503, 504] {
            assert!(api(status).is_workspace_failure(), "{status}");
        }
        for status in [400, 404, 409, 410, 422, 501] {
            assert!(!api(status).is_workspace_failure(), "{status}");
        }
        assert!(IntercomError::Transport("timed out".into()).is_workspace_failure());
        assert!(!IntercomError::Unexpected("not JSON".into()).is_workspace_failure());
    }
}
