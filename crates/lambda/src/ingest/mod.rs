//! The ingest Lambda's HTTP handling: routes, auth, limits, CORS, gzip and answers; generic over [`Enqueue`].

mod auth;
mod body;
mod cors;
mod lambda;
mod route;
mod startup;

use std::time::{Duration, Instant};

use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, ORIGIN, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;
use time::OffsetDateTime;
use tracing::{debug, info};

pub use auth::{BasicError, WriteKeys, basic_username};
pub use cors::{
    ALLOWED_HEADERS, AllowedOrigins, CorsHeaders, EXPOSED_HEADERS, NotABoolean, OriginsError, PREFLIGHT_MAX_AGE_SECONDS,
};
pub use lambda::{Base64Guard, guard_base64};
pub use route::Route;
pub use route::loggable as loggable_path;

use crate::envelope::{Envelope, KeyKind};
use crate::event::{Batch, BodyError, EventType, FieldError, Rejected, parse_batch, parse_event, parse_single};
use crate::queue::{Enqueue, EnqueueError, MAX_MESSAGE_BYTES, QueuedMessage};
use body::read_body;

/// The wait a 503 asks for: SQS refusing is usually over within seconds, and the SDKs honour it.
const RETRY_AFTER_SECONDS: &str = "5";

/// Most events one batch request may hold. Segment's server SDKs send at most 100, analytics-react-native up to 500 KB;
/// a person's events go to SQS one per call, in sequence, so one person's full batch is this many calls (some 10 s at
/// 10 ms a call: inside the template's `ENQUEUE_TIMEOUT_MS` of 25 s).
pub(crate) const MAX_BATCH_EVENTS: usize = 1000;

/// Most bytes one request may put on the queue. A batch-level context is copied into every event, so a 500 KB
/// request could otherwise queue gigabytes.
pub(crate) const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// Time kept back from the function's deadline to answer 503 before Lambda cuts the invocation off.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// What the HTTP API needs besides its queue.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub write_keys: WriteKeys,
    pub allowed_origins: AllowedOrigins,
    /// Whether the relay writes the CORS headers or the function URL's configuration does.
    pub cors_headers: CorsHeaders,
}

/// Segment's HTTP Tracking API in front of a queue.
#[derive(Debug)]
pub struct Ingest<Q> {
    options: IngestOptions,
    queue: Q,
}

/// Why a request was refused as a whole; each maps to one status in [`IngestError::status`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "there is no endpoint at {0}: POST to /v1/identify, /v1/track, /v1/page, /v1/screen, /v1/group, /v1/alias (or /v1/i, /v1/t, /v1/p, /v1/s, /v1/g, /v1/a), /v1/batch, /v1/b, /v1/import or /beacon/v1/batch"
    )]
    NotFound(String),
    #[error("{0} is not allowed here: use {1}")]
    MethodNotAllowed(Method, Method),
    #[error("origin {0} is not allowed: add it to CORS_ALLOWED_ORIGINS")]
    OriginNotAllowed(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("Content-Type {0} is not supported: send application/json or text/plain")]
    UnsupportedMediaType(String),
    #[error("Content-Encoding {0} is not supported: send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("the body is over the limit of {limit} bytes ({} KB), measured after decompression", limit / 1024)]
    PayloadTooLarge { limit: usize },
    #[error("the batch holds {0} events; the limit is {MAX_BATCH_EVENTS} events per request")]
    TooManyEvents(usize),
    #[error(
        "with the batch's context merged into each event, the request would queue over {MAX_QUEUED_BYTES} bytes: send smaller batches or a smaller batch-level context"
    )]
    TooMuchToQueue,
    #[error("the body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("the body is marked base64-encoded (isBase64Encoded) but is not valid base64")]
    BadBase64,
    #[error("the body is empty: send a JSON event")]
    EmptyBody,
    #[error("the body is not valid UTF-8 (the first bad byte is at offset {0})")]
    InvalidUtf8(usize),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(serde_json::Error),
    #[error("{0}")]
    InvalidBody(FieldError),
    #[error("the queue did not take the events, retry later: {0}")]
    QueueUnavailable(EnqueueError),
}

impl From<BodyError> for IngestError {
    fn from(error: BodyError) -> IngestError {
        match error {
            BodyError::Malformed(e) => IngestError::MalformedJson(e),
            BodyError::Invalid(e) => IngestError::InvalidBody(e),
        }
    }
}

const KEY_MISSING: &str = "a write key is required: send it as the HTTP Basic username with an empty password, as \
                           writeKey in the body, or as writeKey in the query string";
const KEY_INVALID: &str = "the write key is not valid";
const KEY_NOT_BASIC: &str = "the Authorization header must be HTTP Basic with the write key as the username";

impl IngestError {
    fn status(&self) -> StatusCode {
        match self {
            IngestError::NotFound(_) => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed(..) => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::PayloadTooLarge { .. } | IngestError::TooManyEvents(_) | IngestError::TooMuchToQueue => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::BadGzip(_)
            | IngestError::BadBase64
            | IngestError::EmptyBody
            | IngestError::InvalidUtf8(_)
            | IngestError::MalformedJson(_)
            | IngestError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            IngestError::QueueUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IngestError::NotFound(_) => "not_found",
            IngestError::MethodNotAllowed(..) => "method_not_allowed",
            IngestError::OriginNotAllowed(_) => "origin_not_allowed",
            IngestError::Unauthorized(_) => "unauthorized",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::PayloadTooLarge { .. } | IngestError::TooMuchToQueue => "payload_too_large",
            IngestError::TooManyEvents(_) => "too_many_events",
            IngestError::BadGzip(_) => "bad_gzip",
            IngestError::BadBase64 => "bad_base64",
            IngestError::EmptyBody => "empty_body",
            IngestError::InvalidUtf8(_) => "invalid_utf8",
            IngestError::MalformedJson(_) => "malformed_json",
            IngestError::InvalidBody(_) => "invalid_body",
            IngestError::QueueUnavailable(_) => "queue_unavailable",
        }
    }

    /// The `error` object of the answer: `{code, message}`, with `line` and `column` or `path` where they apply.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        match self {
            IngestError::MalformedJson(e) => {
                error["line"] = e.line().into();
                error["column"] = e.column().into();
            }
            IngestError::InvalidBody(e) => error["path"] = e.path.clone().into(),
            _ => {}
        }
        error
    }

    fn response(&self) -> Response<Body> {
        let mut response = json_response(self.status(), &json!({"success": false, "error": self.to_json()}));
        let headers = response.headers_mut();
        match self {
            IngestError::Unauthorized(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"intercom-relay\", charset=\"UTF-8\""),
                );
            }
            IngestError::MethodNotAllowed(_, allowed) => {
                let allow = format!("{allowed}, OPTIONS");
                headers.insert(ALLOW, HeaderValue::from_str(&allow).expect("a method is a valid header value"));
            }
            IngestError::QueueUnavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

/// Counts for the request's log line.
#[derive(Default)]
struct Tally {
    /// Valid events handed to the queue, whether or not it has taken them yet.
    at_stake: usize,
    /// Events the queue took.
    accepted: usize,
    rejected: usize,
}

impl<Q: Enqueue> Ingest<Q> {
    pub fn new(options: IngestOptions, queue: Q) -> Ingest<Q> {
        Ingest { options, queue }
    }

    /// The queue events go to.
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Answers one request; every outcome is a response, and each request logs one line.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        let request_id = request_id(&request);
        let time_left = time_left(&request);
        let (parts, body) = request.into_parts();
        let mut tally = Tally::default();
        let respond = self.respond(&parts.method, &parts.uri, &parts.headers, &body, &mut tally);
        let result = match time_left {
            Some(time_left) => tokio::time::timeout(time_left, respond).await.unwrap_or_else(|_| {
                let reason = "the function's time ran out before SQS answered".to_owned();
                Err(IngestError::QueueUnavailable(EnqueueError {
                    failed: tally.at_stake,
                    total: tally.at_stake,
                    reason,
                }))
            }),
            None => respond.await,
        };
        let mut response = result.unwrap_or_else(|error| {
            if let IngestError::QueueUnavailable(cause) = &error {
                tracing::error!(request_id, error = %cause, "Accepted events could not be enqueued; answering 503.");
            }
            debug!(request_id, code = error.code(), "Request refused.");
            error.response()
        });
        self.add_cors_headers(&parts.headers, response.headers_mut());
        info!(
            request_id,
            method = %parts.method,
            route = route::loggable(parts.uri.path()),
            status = response.status().as_u16(),
            accepted = tally.accepted,
            rejected = tally.rejected,
            bytes = body.len(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "Ingest request handled."
        );
        response
    }

    async fn respond(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: &[u8],
        tally: &mut Tally,
    ) -> Result<Response<Body>, IngestError> {
        if let Some(origin) = headers.get(ORIGIN).filter(|o| self.options.allowed_origins.allow(o).is_none()) {
            return Err(IngestError::OriginNotAllowed(
                String::from_utf8_lossy(origin.as_bytes()).chars().take(128).collect(),
            ));
        }
        // Any path: the POST that follows a preflight gets its own answer (a 404 the page can read).
        if method == Method::OPTIONS {
            return Ok(cors::preflight());
        }
        let path = uri.path();
        let route = Route::parse(path).ok_or_else(|| IngestError::NotFound(path.chars().take(128).collect()))?;
        if method != route.method() {
            return Err(IngestError::MethodNotAllowed(method.clone(), route.method()));
        }
        let expected = match route {
            Route::Single(kind) => Some(kind),
            Route::Batch => None,
            Route::Metrics => return Ok(json_response(StatusCode::OK, &json!({"success": true}))),
            Route::SegmentSettings | Route::SourceConfig => return self.startup(route, uri, headers),
        };
        let key_outside_body = self.key_outside_body(headers, uri.query())?;
        if headers.contains_key(lambda::BAD_BASE64) {
            return Err(IngestError::BadBase64);
        }
        let bytes = read_body(headers, body, route.body_limit())?;
        if key_outside_body.is_none() && memchr::memmem::find(&bytes, b"\"writeKey\"").is_none() {
            // No key anywhere: say so before reading the body, so an unauthenticated caller learns nothing about it.
            return Err(IngestError::Unauthorized(KEY_MISSING));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| IngestError::InvalidUtf8(e.valid_up_to()))?;
        let batch =
            if expected.is_some() { parse_single(text) } else { parse_batch(text) }.map_err(IngestError::from)?;
        let key = match key_outside_body {
            Some(kind) => kind,
            None => self.key_kind(batch.write_key.as_deref())?,
        };
        self.enqueue(expected, &batch, key, tally).await
    }

    /// Queues the valid events of `batch` (one event of the `expected` type, or a batch when `None`), answering with
    /// what was accepted and what was refused, and why.
    async fn enqueue(
        &self,
        expected: Option<EventType>,
        batch: &Batch<'_>,
        key: KeyKind,
        tally: &mut Tally,
    ) -> Result<Response<Body>, IngestError> {
        if batch.events.len() > MAX_BATCH_EVENTS {
            return Err(IngestError::TooManyEvents(batch.events.len()));
        }
        let (messages, rejected) = accept_events(batch, expected, OffsetDateTime::now_utc(), key)?;
        tally.rejected = rejected.len();
        if messages.is_empty() {
            return Ok(all_rejected(expected.is_some(), batch.events.len(), rejected));
        }
        let accepted = messages.len();
        // Counted before the await, so a deadline that cuts it short still knows how many were at stake.
        tally.at_stake = accepted;
        self.queue.enqueue(messages).await.map_err(IngestError::QueueUnavailable)?;
        tally.accepted = accepted;
        Ok(if rejected.is_empty() {
            json_response(StatusCode::OK, &json!({"success": true}))
        } else {
            json_response(StatusCode::OK, &json!({"success": true, "accepted": accepted, "rejected": rejected}))
        })
    }

    /// The answer to an SDK's start-up request, for a valid key only.
    fn startup(&self, route: Route, uri: &http::Uri, headers: &HeaderMap) -> Result<Response<Body>, IngestError> {
        if route == Route::SourceConfig {
            self.key_outside_body(headers, uri.query())?.ok_or(IngestError::Unauthorized(KEY_MISSING))?;
            return Ok(startup::source_config());
        }
        let encoded = route::settings_key(uri.path().trim_end_matches('/')).unwrap_or_default();
        let key = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
        self.key_kind(Some(&key))?;
        Ok(startup::segment_settings(&key))
    }

    /// The kind of the key given in the `Authorization` header or, failing that, as `writeKey` in the query string
    /// (RudderStack's beacons: `sendBeacon` can set no header); `None` when neither holds one, so the body must.
    fn key_outside_body(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Option<KeyKind>, IngestError> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            return match basic_username(value.as_bytes()) {
                Ok(key) => self.key_kind(Some(&key)).map(Some),
                Err(BasicError::EmptyUsername) => Err(IngestError::Unauthorized(KEY_MISSING)),
                Err(_) => Err(IngestError::Unauthorized(KEY_NOT_BASIC)),
            };
        }
        // An empty one is none: the body may still hold the key.
        match query.and_then(auth::query_key).filter(|key| !key.is_empty()) {
            Some(key) => self.key_kind(Some(&key)).map(Some),
            None => Ok(None),
        }
    }

    fn key_kind(&self, key: Option<&str>) -> Result<KeyKind, IngestError> {
        match key {
            None => Err(IngestError::Unauthorized(KEY_MISSING)),
            Some(key) => self.options.write_keys.kind_of(key).ok_or(IngestError::Unauthorized(KEY_INVALID)),
        }
    }

    /// Adds the CORS headers to an answer, unless the function URL adds its own.
    pub fn add_cors_headers(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if self.options.cors_headers == CorsHeaders::Ours {
            cors::decorate(&self.options.allowed_origins, request.get(ORIGIN), response);
        }
    }
}

/// Validates and normalises every event of `batch`: the queue messages of the valid ones, and why the others were refused.
/// Refuses the whole request when it would queue more than [`MAX_QUEUED_BYTES`].
pub fn accept_events(
    batch: &Batch<'_>,
    expected: Option<EventType>,
    received_at: OffsetDateTime,
    key: KeyKind,
) -> Result<(Vec<QueuedMessage>, Vec<Rejected>), IngestError> {
    let mut messages = Vec::with_capacity(batch.events.len());
    let mut rejected = Vec::new();
    let mut queued_bytes = 0;
    for (index, raw) in batch.events.iter().enumerate() {
        match parse_event(raw, expected, &batch.defaults, received_at) {
            Ok(event) => {
                let message = QueuedMessage::new(Envelope { event, key });
                queued_bytes += message.body.len();
                if queued_bytes > MAX_QUEUED_BYTES {
                    return Err(IngestError::TooMuchToQueue);
                }
                match oversize(&message) {
                    Some(error) => {
                        rejected.push(Rejected { index, message_id: Some(message.message_id), errors: vec![error] })
                    }
                    None => messages.push(message),
                }
            }
            Err(mut refusal) => {
                refusal.index = index;
                rejected.push(refusal);
            }
        }
    }
    Ok((messages, rejected))
}

/// Why `message` cannot be queued, when it is over what one SQS message holds. Only a large batch-level context merged
/// into an event can get it there (an event is at most 32 KB).
pub fn oversize(message: &QueuedMessage) -> Option<FieldError> {
    (message.bytes() > MAX_MESSAGE_BYTES).then(|| FieldError {
        path: "context".into(),
        message: format!(
            "with the batch's context merged in, the event and its attributes are {} bytes; a queue message holds at \
             most {} bytes",
            message.bytes(),
            MAX_MESSAGE_BYTES
        ),
    })
}

fn all_rejected(single: bool, total: usize, rejected: Vec<Rejected>) -> Response<Body> {
    let (code, message) = if single {
        let errors: Vec<String> = rejected.iter().flat_map(|r| &r.errors).map(ToString::to_string).collect();
        ("invalid_event", errors.join("; "))
    } else {
        ("invalid_batch", format!("none of the {total} events is valid; `rejected` says why for each"))
    };
    let body = json!({
        "success": false,
        "error": {"code": code, "message": message},
        "accepted": 0,
        "rejected": rejected,
    });
    json_response(StatusCode::BAD_REQUEST, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::Text(body.to_string()))
        .expect("static headers are valid")
}

/// How long the invocation may still take, less a margin to answer in; `None` outside Lambda, or when its deadline is
/// not one (`cargo lambda watch`'s): then `ENQUEUE_TIMEOUT_MS` alone bounds the request.
fn time_left(request: &Request) -> Option<Duration> {
    let deadline = request.lambda_context_ref()?.deadline;
    Some(crate::deadline::time_left(deadline, "ENQUEUE_TIMEOUT_MS")?.saturating_sub(DEADLINE_MARGIN))
}

fn request_id(request: &Request) -> String {
    if let Some(context) = request.lambda_context_ref() {
        return context.request_id.clone();
    }
    match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) => {
            context.request_id.clone().unwrap_or_default()
        }
        _ => String::new(),
    }
}
