//! Every environment variable, typed and read once at start; secrets as `SecretString`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::forward::{BreakerPolicy, ForwardOptions, WriteMemory};
use crate::ingest::{AllowedOrigins, CorsHeaders, IngestOptions, WriteKeys};
use crate::intercom::{ApiVersion, Region};
use crate::queue::{ENQUEUE_RETRY, ENQUEUE_TIMEOUT};
use crate::retry::{RetryPolicy, parse_duration};
use crate::settings::Settings;

/// Why the function cannot start; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// The ingest Lambda's configuration.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// `WRITE_KEYS`: comma-separated write keys; at least one.
    pub(crate) write_keys: WriteKeys,
    /// `QUEUE_URL`: the SQS queue events go to (FIFO when it ends in `.fifo`).
    pub queue_url: String,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call from a browser, or `*` (the default).
    pub(crate) allowed_origins: AllowedOrigins,
    /// `CORS_BY_FUNCTION_URL`: `true` when the function URL's CORS configuration answers preflights and writes the
    /// CORS headers (the template's); the function then writes none. Default `false`.
    pub cors_headers: CorsHeaders,
    /// `ENQUEUE_MAX_ATTEMPTS`: attempts per SendMessageBatch before answering 503 (default 4);
    pub enqueue_retry: RetryPolicy,
    /// `ENQUEUE_TIMEOUT_MS`: the most enqueueing one request may take (default 7000; the template sets 25000, under the
    /// function's 30 s timeout, for one person's large batch).
    pub enqueue_timeout: Duration,
}

impl IngestConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<IngestConfig, ConfigError> {
        IngestConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<IngestConfig, ConfigError> {
        let write_keys = write_keys_of_both_kinds(lookup("WRITE_KEYS"), lookup("BROWSER_WRITE_KEYS"))?;
        let queue_url = lookup("QUEUE_URL").filter(|url| !url.trim().is_empty()).ok_or(ConfigError::Missing {
            name: "QUEUE_URL",
            hint: "set it to the URL of the SQS queue events go to",
        })?;
        if !queue_url.starts_with("https://") && !queue_url.starts_with("http://") {
            return Err(ConfigError::Invalid {
                name: "QUEUE_URL",
                reason: "must be an SQS queue URL (https://…)".into(),
            });
        }
        let allowed_origins = match lookup("CORS_ALLOWED_ORIGINS") {
            None => AllowedOrigins::Any,
            Some(text) => AllowedOrigins::parse(&text)
                .map_err(|error| ConfigError::Invalid { name: "CORS_ALLOWED_ORIGINS", reason: error.to_string() })?,
        };
        let cors_headers = CorsHeaders::parse(lookup("CORS_BY_FUNCTION_URL").as_deref().unwrap_or(""))
            .map_err(|error| ConfigError::Invalid { name: "CORS_BY_FUNCTION_URL", reason: error.to_string() })?;
        let set = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let enqueue_retry = RetryPolicy {
            attempts: number(&set, "ENQUEUE_MAX_ATTEMPTS", ENQUEUE_RETRY.attempts as u64, 1..=20)? as u32,
            ..ENQUEUE_RETRY
        };
        let timeout_ms = ENQUEUE_TIMEOUT.as_millis() as u64;
        let enqueue_timeout = Duration::from_millis(number(&set, "ENQUEUE_TIMEOUT_MS", timeout_ms, 100..=60_000)?);
        Ok(IngestConfig {
            write_keys,
            queue_url: queue_url.trim().to_owned(),
            allowed_origins,
            cors_headers,
            enqueue_retry,
            enqueue_timeout,
        })
    }

    /// The HTTP API's part of the configuration.
    pub fn options(&self) -> IngestOptions {
        IngestOptions {
            write_keys: self.write_keys.clone(),
            allowed_origins: self.allowed_origins.clone(),
            cors_headers: self.cors_headers,
        }
    }
}

/// The forwarder's configuration, the Lambda's and the local pipeline's.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// `INTERCOM_ACCESS_TOKEN`: the workspace's access token (required).
    pub access_token: SecretString,
    /// `INTERCOM_REGION`: `us` (default), `eu` or `au`.
    pub region: Region,
    /// `INTERCOM_BASE_URL`: overrides the region's API root (a sandbox, a proxy).
    pub base_url: String,
    /// `INTERCOM_API_VERSION`: sent as `Intercom-Version` (default 2.16; one of [`ApiVersion::SUPPORTED`]).
    pub api_version: ApiVersion,
    /// `INTERCOM_CREATE_ATTRIBUTES`: create custom data attributes Intercom lacks (default true), else drop them;
    /// the settings' `attributes.create_missing` overrides it.
    pub create_attributes: bool,
    /// `RELAY_SETTINGS` (a JSON document) or `RELAY_SETTINGS_FILE` (a path to one): the destination settings;
    /// unset means the defaults.
    pub settings: Arc<Settings>,
    /// `INTERCOM_TIMEOUT_MS`: the most one Intercom call may take (default 5000).
    pub timeout: Duration,
    /// `INTERCOM_CONCURRENCY`: message groups worked on at once (default 8).
    pub(crate) concurrency: usize,
    /// `INTERCOM_RETRY_ATTEMPTS`: tries of one Intercom call within an invocation (default 4).
    pub(crate) attempts: u32,
    /// `RETRY_HORIZON`: an event still failing for a reason that may pass (Intercom down, a refused token, a rate
    /// limit) is tried until it has been this long in the queue, then dead-lettered with `retries_exhausted` (default
    /// `24h`; `90s`, `15m`, `24h`, `7d`; at most `14d`, the queues' retention).
    pub(crate) horizon: Duration,
    /// `RETRY_BACKOFF_MIN` and `RETRY_BACKOFF_MAX`: the first and the longest wait of an event handed back (defaults
    /// `10s` and `15m`; at most `11h`, within SQS's 12 hours from a receive); each wait is about the time it has been
    /// tried so far.
    pub(crate) redelivery: RetryPolicy,
    /// `ALIAS_WAIT`: without an identity store (none kept, or failing), how long an alias whose previous contact
    /// Intercom does not hold is handed back before it is skipped (default `5m`): the previous contact may still be on
    /// its way in another person's lane. With one, such an alias is skipped at once and holds the visitor for the user.
    pub(crate) alias_wait: Duration,
    /// `CIRCUIT_OPEN_MIN` and `CIRCUIT_OPEN_MAX`: how long the circuit breaker first stays open when every call fails
    /// for a reason of the workspace, and the longest (defaults `5s` and `5m`): a probe call goes after each.
    pub(crate) breaker: BreakerPolicy,
    /// `SERVER_ERROR_TRIES`: tries of one event that Intercom answers 5xx for while it answers others (the breaker
    /// closed) before it is dead-lettered as `intercom_server_error_repeated` (default 10).
    pub(crate) server_error_tries: u32,
    /// `IDENTITY_REFRESH` (default `1d`; `0s`: always) and `LAST_SEEN_RESOLUTION` (default `1h`; `0s`: every move):
    /// how long what the identity store says was written goes by, and how far `last_seen_at` alone may move before it
    /// is written.
    pub(crate) memory: WriteMemory,
    /// `QUEUE_URL`: the events queue, where handed-back records' waits are set; unset, each record's
    /// `eventSourceARN` names it.
    pub queue_url: Option<String>,
    /// `SUPPRESSION_TABLE`: the DynamoDB table of the people erased, whose later events are skipped (the template's
    /// `SuppressionTable`); unset, none is kept and events after an erasure make the contact again.
    pub suppression_table: Option<String>,
    /// `IDENTITY_TABLE`: the DynamoDB table of the contacts the relay made (the template's `IdentityTable`), shared by
    /// every forwarder; unset, the forward function remembers only what one warm function met (`replay` and `serve`
    /// keep it in memory).
    pub identity_table: Option<String>,
    /// `FUNCTION_TIMEOUT_SECONDS`: the function's timeout (default 30, the template's), which Lambda does not tell the
    /// function; an invocation whose deadline is not one (`cargo lambda watch`'s) takes this long from its start.
    pub function_timeout: Duration,
}

/// The forward Lambda's configuration: the forwarder's, and the dead-letter queue it cannot run without.
#[derive(Clone, Debug)]
pub struct ForwardFunctionConfig {
    /// `DLQ_URL`: the queue permanent failures go to, with their reason (required).
    pub dlq_url: String,
    pub forward: ForwardConfig,
}

impl ForwardFunctionConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<ForwardFunctionConfig, ConfigError> {
        ForwardFunctionConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ForwardFunctionConfig, ConfigError> {
        let forward = ForwardConfig::from_lookup(&lookup)?;
        let dlq_url = lookup("DLQ_URL").map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let hint = "set it to the URL of the dead-letter queue";
        let dlq_url = dlq_url.ok_or(ConfigError::Missing { name: "DLQ_URL", hint })?;
        Ok(ForwardFunctionConfig { dlq_url, forward })
    }
}

impl ForwardConfig {
    /// Reads variables through `lookup` (the local pipeline's reading: dead letters stay in memory, or go where
    /// `serve` is told).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ForwardConfig, ConfigError> {
        let set = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let access_token = set("INTERCOM_ACCESS_TOKEN").map(SecretString::from).ok_or(ConfigError::Missing {
            name: "INTERCOM_ACCESS_TOKEN",
            hint: "set it to the access token of your Intercom app (Developer Hub > your app > Authentication)",
        })?;
        let region = match set("INTERCOM_REGION") {
            None => Region::Us,
            Some(text) => Region::parse(&text).ok_or_else(|| ConfigError::Invalid {
                name: "INTERCOM_REGION",
                reason: format!("must be us, eu or au, not `{text}`"),
            })?,
        };
        let base_url = match set("INTERCOM_BASE_URL") {
            None => region.base_url().to_owned(),
            Some(url) => {
                base_url(&url).map_err(|e| ConfigError::Invalid { name: "INTERCOM_BASE_URL", reason: e.to_string() })?
            }
        };
        let api_version = match set("INTERCOM_API_VERSION") {
            None => ApiVersion::default(),
            Some(text) => ApiVersion::parse(&text)
                .map_err(|e| ConfigError::Invalid { name: "INTERCOM_API_VERSION", reason: e.to_string() })?,
        };
        let settings = settings(&set)?;
        let create_attributes = settings.create_missing().unwrap_or(create_attributes(&set)?);
        let options = read_options(&set)?;
        if set("MAX_RECEIVES").is_some() {
            let reason = "no longer read: an event is tried until it is RETRY_HORIZON old (default 24h), whatever its \
                          receive count; unset MAX_RECEIVES and set RETRY_HORIZON if the default does not suit"
                .into();
            return Err(ConfigError::Invalid { name: "MAX_RECEIVES", reason });
        }
        let function_timeout = Duration::from_secs(number(&set, "FUNCTION_TIMEOUT_SECONDS", 30, 1..=900)?);
        Ok(ForwardConfig {
            access_token,
            region,
            base_url,
            api_version,
            create_attributes,
            settings: Arc::new(settings),
            timeout: options.call_timeout,
            concurrency: options.concurrency,
            attempts: options.retry.attempts,
            horizon: options.horizon,
            redelivery: options.redelivery,
            alias_wait: options.alias_wait,
            breaker: options.breaker,
            server_error_tries: options.server_error_tries,
            memory: options.memory,
            queue_url: set("QUEUE_URL"),
            suppression_table: table(&set, "SUPPRESSION_TABLE")?,
            identity_table: table(&set, "IDENTITY_TABLE")?,
            function_timeout,
        })
    }

    /// How the forwarder works through a batch.
    pub fn options(&self) -> ForwardOptions {
        let defaults = ForwardOptions::default();
        ForwardOptions {
            concurrency: self.concurrency,
            retry: RetryPolicy { attempts: self.attempts, ..defaults.retry },
            call_timeout: self.timeout,
            redelivery: self.redelivery,
            horizon: self.horizon,
            alias_wait: self.alias_wait,
            breaker: self.breaker,
            server_error_tries: self.server_error_tries,
            memory: WriteMemory { key: value_key(&self.access_token), ..self.memory },
            ..defaults
        }
    }
}

/// The key the identity store's value digests are made with: the access token's, so the table alone does not let
/// anyone match a digest against a guessed value. (A new token makes every digest new: everything is written once.)
fn value_key(token: &SecretString) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::new().chain_update("intercom-relay written values:").chain_update(token.expose_secret()).finalize().into()
}

/// `INTERCOM_CREATE_ATTRIBUTES` (default true).
fn create_attributes(set: &impl Fn(&str) -> Option<String>) -> Result<bool, ConfigError> {
    match set("INTERCOM_CREATE_ATTRIBUTES").map(|v| v.to_ascii_lowercase()) {
        None => Ok(true),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
        Some(v) => {
            let reason = format!("must be true or false, not `{v}`");
            Err(ConfigError::Invalid { name: "INTERCOM_CREATE_ATTRIBUTES", reason })
        }
    }
}

/// The forwarder's pace and patience, each unset one at its default: one set, `ForwardOptions::default`.
fn read_options(set: &impl Fn(&str) -> Option<String>) -> Result<ForwardOptions, ConfigError> {
    let defaults = ForwardOptions::default();
    let default_ms = defaults.call_timeout.as_millis() as u64;
    let timeout = Duration::from_millis(number(set, "INTERCOM_TIMEOUT_MS", default_ms, 100..=60_000)?);
    let concurrency = number(set, "INTERCOM_CONCURRENCY", defaults.concurrency as u64, 1..=64)? as usize;
    let attempts = number(set, "INTERCOM_RETRY_ATTEMPTS", defaults.retry.attempts.into(), 1..=10)? as u32;
    let day = Duration::from_secs(86_400);
    let retention = Duration::from_secs(1)..=crate::forward::QUEUE_RETENTION;
    let horizon = duration(set, "RETRY_HORIZON", defaults.horizon, retention)?;
    // SQS's 12 hours from the receive, less what the receive took before the invocation (queue::MAX_VISIBILITY).
    let longest = Duration::from_secs(11 * 3600);
    let (min_wait, max_wait) = (defaults.redelivery.min_delay, defaults.redelivery.max_delay);
    let backoff_min = duration(set, "RETRY_BACKOFF_MIN", min_wait, Duration::ZERO..=longest)?;
    let backoff_max = duration(set, "RETRY_BACKOFF_MAX", max_wait, backoff_min..=longest)?;
    let redelivery = RetryPolicy { min_delay: backoff_min, max_delay: backoff_max, ..defaults.redelivery };
    let alias_wait = duration(set, "ALIAS_WAIT", defaults.alias_wait, Duration::ZERO..=day)?;
    let breaker = defaults.breaker;
    let open_min = duration(set, "CIRCUIT_OPEN_MIN", breaker.open_min, Duration::from_millis(100)..=longest)?;
    let open_max = duration(set, "CIRCUIT_OPEN_MAX", breaker.open_max, open_min..=longest)?;
    let breaker = BreakerPolicy { open_min, open_max, ..breaker };
    let tries = number(set, "SERVER_ERROR_TRIES", defaults.server_error_tries.into(), 1..=1000)? as u32;
    let (refresh, resolution) = (defaults.memory.refresh, defaults.memory.last_seen_resolution);
    let refresh = duration(set, "IDENTITY_REFRESH", refresh, Duration::ZERO..=Duration::from_secs(90 * 86_400))?;
    let last_seen_resolution = duration(set, "LAST_SEEN_RESOLUTION", resolution, Duration::ZERO..=day)?;
    let memory = WriteMemory { refresh, last_seen_resolution, ..defaults.memory };
    Ok(ForwardOptions {
        concurrency,
        retry: RetryPolicy { attempts, ..defaults.retry },
        call_timeout: timeout,
        redelivery,
        horizon,
        alias_wait,
        breaker,
        server_error_tries: tries,
        memory,
        ..defaults
    })
}

/// The DynamoDB table the variable `variable` names, when it is set.
fn table(set: &impl Fn(&str) -> Option<String>, variable: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(name) = set(variable) else { return Ok(None) };
    // DynamoDB's rule for a table name: 3 to 255 of a-z, A-Z, 0-9, `_`, `-` and `.`.
    let valid = (3..=255).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        let reason =
            format!("must be a DynamoDB table's name (3 to 255 of letters, digits, `_`, `-` and `.`), not `{name}`");
        return Err(ConfigError::Invalid { name: variable, reason });
    }
    Ok(Some(name))
}

/// The destination settings from `RELAY_SETTINGS` or the file `RELAY_SETTINGS_FILE` names (not both); every problem of
/// a bad document is listed by its path.
/// An API root for the Intercom client: `https://`, or plain `http://` only to a loopback address (a sandbox or a proxy
/// on the same machine), as every request carries the access token.
fn base_url(url: &str) -> Result<String, BaseUrlError> {
    let not_a_url = |e: &dyn std::fmt::Display| BaseUrlError::NotAUrl { url: url.to_owned(), reason: e.to_string() };
    let parsed = reqwest::Url::parse(url).map_err(|e| not_a_url(&e))?;
    let loopback = || match parsed.host_str() {
        Some("localhost") => true,
        Some(host) => {
            host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    };
    match parsed.scheme() {
        "https" if parsed.host_str().is_some() => Ok(url.trim_end_matches('/').to_owned()),
        "http" if loopback() => Ok(url.trim_end_matches('/').to_owned()),
        "http" => Err(BaseUrlError::Unencrypted(url.to_owned())),
        _ => Err(BaseUrlError::NotHttp(url.to_owned())),
    }
}

/// Why `INTERCOM_BASE_URL` cannot be an API root.
#[derive(Debug, thiserror::Error)]
enum BaseUrlError {
    #[error("must be an http(s) URL such as https://api.intercom.io, not `{url}` ({reason})")]
    NotAUrl { url: String, reason: String },
    #[error(
        "`{0}` would send the access token unencrypted: plain http:// is for a loopback address only (127.0.0.1, \
         [::1], localhost); use https://"
    )]
    Unencrypted(String),
    #[error("must be an http(s) URL such as https://api.intercom.io, not `{0}`")]
    NotHttp(String),
}

fn settings(set: &impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let invalid = |name, reason| ConfigError::Invalid { name, reason };
    match (set("RELAY_SETTINGS"), set("RELAY_SETTINGS_FILE")) {
        (None, None) => Ok(Settings::default()),
        (Some(_), Some(_)) => Err(invalid(
            "RELAY_SETTINGS",
            "and RELAY_SETTINGS_FILE are both set: give the document one way, not two".into(),
        )),
        (Some(text), None) => {
            Settings::parse(&text).map_err(|problems| invalid("RELAY_SETTINGS", problems.to_string()))
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("RELAY_SETTINGS_FILE", format!("cannot read {path}: {e}")))?;
            Settings::parse(&text).map_err(|problems| invalid("RELAY_SETTINGS_FILE", format!("{path}: {problems}")))
        }
    }
}

/// A duration (`90s`, `15m`, `24h`, `7d`, or seconds) from `range`, or `default` when the variable is unset.
fn duration(
    set: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let Some(text) = set(name) else { return Ok(default) };
    let value = parse_duration(&text).map_err(|e| ConfigError::Invalid { name, reason: e.to_string() })?;
    if !range.contains(&value) {
        let (low, high) = (range.start().as_secs(), range.end().as_secs());
        let reason = format!("must be from {low} s to {high} s, not `{text}` ({} s)", value.as_secs_f64());
        return Err(ConfigError::Invalid { name, reason });
    }
    Ok(value)
}

/// A whole number from `range`, or `default` when the variable is unset.
fn number(
    set: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(text) = set(name) else { return Ok(default) };
    text.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| ConfigError::Invalid {
        name,
        reason: format!("must be a whole number from {} to {}, not `{text}`", range.start(), range.end()),
    })
}

/// `WRITE_KEYS`' value (comma-separated keys, at least one) as the ingest API checks it.
/// `WRITE_KEYS` (server keys: required) and `BROWSER_WRITE_KEYS` (keys that ship in web pages or apps: optional); a key
/// in both is refused.
pub fn write_keys_of_both_kinds(server: Option<String>, browser: Option<String>) -> Result<WriteKeys, ConfigError> {
    let split = |value: &str| -> Vec<SecretString> {
        value.split(',').map(str::trim).filter(|key| !key.is_empty()).map(SecretString::from).collect()
    };
    let Some(browser) = browser.filter(|b| !b.trim().is_empty()) else { return write_keys(server) };
    let browser = split(&browser);
    let server_keys = server.as_deref().map(split).unwrap_or_default();
    write_keys(server)?;
    let both = server_keys.iter().any(|s| browser.iter().any(|b| s.expose_secret() == b.expose_secret()));
    if both {
        let reason = "a key is also in WRITE_KEYS: a key is a server's or a browser's, not both".into();
        return Err(ConfigError::Invalid { name: "BROWSER_WRITE_KEYS", reason });
    }
    WriteKeys::with_browser_keys(&server_keys, &browser)
        .ok_or(ConfigError::Invalid { name: "WRITE_KEYS", reason: "holds no write key".into() })
}

pub fn write_keys(value: Option<String>) -> Result<WriteKeys, ConfigError> {
    let hint = "set it to one or more write keys, comma-separated";
    let value = value.map(SecretString::from).ok_or(ConfigError::Missing { name: "WRITE_KEYS", hint })?;
    let keys: Vec<SecretString> = secrecy::ExposeSecret::expose_secret(&value)
        .split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(SecretString::from)
        .collect();
    WriteKeys::new(&keys)
        .ok_or(ConfigError::Invalid { name: "WRITE_KEYS", reason: format!("holds no write key: {hint}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<IngestConfig, ConfigError> {
        IngestConfig::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    const QUEUE: (&str, &str) = ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events.fifo");

    #[test]
    fn browser_keys_are_their_own_and_never_also_a_servers() {
        let keys =
            config(&[QUEUE, ("WRITE_KEYS", "srv-1"), ("BROWSER_WRITE_KEYS", "pub-1, pub-2")]).unwrap().write_keys;
        assert_eq!(keys.kind_of("pub-2"), Some(crate::envelope::KeyKind::Browser));
        assert_eq!(keys.kind_of("srv-1"), Some(crate::envelope::KeyKind::Server));
        let both = config(&[QUEUE, ("WRITE_KEYS", "k-1,k-2"), ("BROWSER_WRITE_KEYS", "k-2")]).unwrap_err();
        assert!(both.to_string().starts_with("BROWSER_WRITE_KEYS is invalid: a key is also in WRITE_KEYS"), "{both}");
    }

    #[test]
    fn write_keys_are_required() {
        assert_eq!(
            config(&[QUEUE]).unwrap_err().to_string(),
            "WRITE_KEYS is not set: set it to one or more write keys, comma-separated"
        );
        assert_eq!(
            config(&[QUEUE, ("WRITE_KEYS", " , ")]).unwrap_err().to_string(),
            "WRITE_KEYS is invalid: holds no write key: set it to one or more write keys, comma-separated"
        );
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WRITE_KEYS", "k")], "QUEUE_URL is not set"),
            (&[("WRITE_KEYS", "k"), ("QUEUE_URL", "events.fifo")], "QUEUE_URL is invalid"),
            (&[("WRITE_KEYS", "k"), QUEUE, ("CORS_ALLOWED_ORIGINS", "example.com")], "CORS_ALLOWED_ORIGINS is invalid"),
            (&[("WRITE_KEYS", "k"), QUEUE, ("ENQUEUE_MAX_ATTEMPTS", "0")], "ENQUEUE_MAX_ATTEMPTS is invalid"),
            (&[("WRITE_KEYS", "k"), QUEUE, ("ENQUEUE_TIMEOUT_MS", "10s")], "ENQUEUE_TIMEOUT_MS is invalid"),
        ];
        for (vars, expected) in cases {
            let error = config(vars).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    fn forward(vars: &[(&str, &str)]) -> Result<ForwardConfig, ConfigError> {
        let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        ForwardFunctionConfig::from_lookup(lookup).map(|config| config.forward)
    }

    const TOKEN: (&str, &str) = ("INTERCOM_ACCESS_TOKEN", "dG9rOmEtc2VjcmV0LXRva2Vu");
    const DLQ: (&str, &str) = ("DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events-dlq.fifo");

    #[test]
    fn the_forwarder_defaults_to_the_us_region_and_the_pinned_version() {
        let config = forward(&[TOKEN, DLQ]).unwrap();
        assert_eq!((config.region, config.base_url.as_str()), (Region::Us, "https://api.intercom.io"));
        assert_eq!(config.api_version.as_str(), "2.16");
        assert!(config.create_attributes);
        assert_eq!((config.timeout, config.concurrency), (Duration::from_secs(5), 8));
        let options = config.options();
        assert_eq!((options.retry.attempts, options.call_timeout), (4, Duration::from_secs(5)));
        assert_eq!((options.horizon, options.alias_wait), (Duration::from_secs(86_400), Duration::from_secs(300)));
        assert_eq!(
            (options.redelivery.min_delay, options.redelivery.max_delay),
            (Duration::from_secs(10), Duration::from_secs(900))
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains(TOKEN.1), "{printed}");
    }

    #[test]
    fn the_function_timeout_defaults_to_the_forward_function_timeout_in_the_template() {
        let template = include_str!("../../../template.yaml");
        let function = &template[template.find("\n  ForwardFunction:\n").expect("the template has ForwardFunction")..];
        let timeout = function.lines().find_map(|line| line.trim().strip_prefix("Timeout: ")).expect("a Timeout");
        let default = forward(&[TOKEN, DLQ]).unwrap().function_timeout;
        assert_eq!(default, Duration::from_secs(timeout.parse().unwrap()));
        let set = forward(&[TOKEN, DLQ, ("FUNCTION_TIMEOUT_SECONDS", "900")]).unwrap().function_timeout;
        assert_eq!(set, Duration::from_secs(900));
    }

    #[test]
    fn a_base_url_overrides_the_region() {
        let config = forward(&[TOKEN, DLQ, ("INTERCOM_REGION", "eu"), ("INTERCOM_BASE_URL", "http://127.0.0.1:4010/")]);
        let config = config.unwrap();
        assert_eq!((config.region, config.base_url.as_str()), (Region::Eu, "http://127.0.0.1:4010"));
    }

    #[test]
    fn plain_http_reaches_intercom_only_on_this_machine() {
        for url in ["http://127.0.0.1:4010", "http://127.8.9.10/", "http://[::1]:8080", "http://localhost:4010/v"] {
            let config = forward(&[TOKEN, DLQ, ("INTERCOM_BASE_URL", url)]).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(config.base_url, url.trim_end_matches('/'));
        }
        for url in ["https://api.intercom.io", "https://proxy.internal:8443/intercom"] {
            assert_eq!(forward(&[TOKEN, DLQ, ("INTERCOM_BASE_URL", url)]).unwrap().base_url, url);
        }
        let refused = [
            "http://api.intercom.io",
            "http://10.0.0.5:4010",
            "http://[::ffff:10.0.0.5]",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
        ];
        for url in refused {
            let error = forward(&[TOKEN, DLQ, ("INTERCOM_BASE_URL", url)]).unwrap_err().to_string();
            assert!(error.starts_with("INTERCOM_BASE_URL is invalid: "), "{error}");
            assert!(error.contains("unencrypted") && error.contains("use https://"), "{url}: {error}");
        }
        for url in ["ftp://127.0.0.1", "https://", "127.0.0.1:4010"] {
            let error = forward(&[TOKEN, DLQ, ("INTERCOM_BASE_URL", url)]).unwrap_err().to_string();
            assert!(error.starts_with("INTERCOM_BASE_URL is invalid: must be an http(s) URL"), "{url}: {error}");
        }
    }

    #[test]
    fn every_bad_forwarder_value_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[DLQ], "INTERCOM_ACCESS_TOKEN is not set"),
            (&[TOKEN], "DLQ_URL is not set"),
            (&[TOKEN, DLQ, ("INTERCOM_REGION", "ca")], "INTERCOM_REGION is invalid: must be us, eu or au"),
            (&[TOKEN, DLQ, ("INTERCOM_BASE_URL", "api.intercom.io")], "INTERCOM_BASE_URL is invalid"),
            (&[TOKEN, DLQ, ("INTERCOM_CREATE_ATTRIBUTES", "maybe")], "INTERCOM_CREATE_ATTRIBUTES is invalid"),
            (&[TOKEN, DLQ, ("INTERCOM_TIMEOUT_MS", "0")], "INTERCOM_TIMEOUT_MS is invalid"),
            (&[TOKEN, DLQ, ("INTERCOM_CONCURRENCY", "many")], "INTERCOM_CONCURRENCY is invalid"),
            (&[TOKEN, DLQ, ("INTERCOM_RETRY_ATTEMPTS", "0")], "INTERCOM_RETRY_ATTEMPTS is invalid"),
            (&[TOKEN, DLQ, ("MAX_RECEIVES", "5")], "MAX_RECEIVES is invalid: no longer read"),
            (&[TOKEN, DLQ, ("RETRY_HORIZON", "15d")], "RETRY_HORIZON is invalid: must be from 1 s to 1209600 s"),
            (&[TOKEN, DLQ, ("RETRY_HORIZON", "a day")], "RETRY_HORIZON is invalid: `a day` is not a duration"),
            (&[TOKEN, DLQ, ("RETRY_BACKOFF_MAX", "5s")], "RETRY_BACKOFF_MAX is invalid: must be from 10 s"),
            (&[TOKEN, DLQ, ("RETRY_BACKOFF_MIN", "13h")], "RETRY_BACKOFF_MIN is invalid"),
            (&[TOKEN, DLQ, ("ALIAS_WAIT", "2d")], "ALIAS_WAIT is invalid"),
            (&[TOKEN, DLQ, ("CIRCUIT_OPEN_MIN", "1ms")], "CIRCUIT_OPEN_MIN is invalid"),
            (&[TOKEN, DLQ, ("CIRCUIT_OPEN_MAX", "1s")], "CIRCUIT_OPEN_MAX is invalid: must be from 5 s"),
            (&[TOKEN, DLQ, ("FUNCTION_TIMEOUT_SECONDS", "901")], "FUNCTION_TIMEOUT_SECONDS is invalid"),
        ];
        for (vars, expected) in cases {
            let error = forward(vars).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn only_the_api_versions_the_requests_are_written_for_are_accepted() {
        for version in ["2.15", "2.16", " 2.15 "] {
            assert_eq!(
                forward(&[TOKEN, DLQ, ("INTERCOM_API_VERSION", version)]).unwrap().api_version.as_str(),
                version.trim()
            );
        }
        // 1.x is another API; 2.14 is one Intercom still takes, but no spec we wrote the requests to.
        for version in ["1.0", "1.4", "2.0", "2.14", "2.17", "3.0", "v2.16"] {
            let error = forward(&[TOKEN, DLQ, ("INTERCOM_API_VERSION", version)]).unwrap_err().to_string();
            assert_eq!(
                error,
                format!(
                    "INTERCOM_API_VERSION is invalid: `{version}` is not a version intercom-relay's requests are written \
                     for; use one of 2.15, 2.16"
                )
            );
        }
    }

    #[test]
    fn settings_come_from_the_variable_or_a_file_and_override_create_attributes() {
        assert!(forward(&[TOKEN, DLQ]).unwrap().settings.is_default());
        let inline =
            forward(&[TOKEN, DLQ, ("RELAY_SETTINGS", r#"{"attributes": {"create_missing": false}}"#)]).unwrap();
        assert!(!inline.create_attributes && !inline.settings.is_default());
        let env_says_no = forward(&[TOKEN, DLQ, ("INTERCOM_CREATE_ATTRIBUTES", "false")]).unwrap();
        assert!(!env_says_no.create_attributes);
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/settings/shop.json");
        let from_file = forward(&[TOKEN, DLQ, ("INTERCOM_CREATE_ATTRIBUTES", "false"), ("RELAY_SETTINGS_FILE", file)]);
        let from_file = from_file.unwrap();
        assert!(from_file.create_attributes, "the document's create_missing: true wins");
        assert_eq!(from_file.settings.document().page.as_deref(), Some("Page Viewed"));
        let blank = forward(&[TOKEN, DLQ, ("RELAY_SETTINGS", "  ")]).unwrap();
        assert!(blank.settings.is_default(), "an empty variable (the template's default) means no settings");

        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("RELAY_SETTINGS", "{}"), ("RELAY_SETTINGS_FILE", file)],
                "RELAY_SETTINGS is invalid: and RELAY_SETTINGS_FILE are both set",
            ),
            (&[("RELAY_SETTINGS", "{\"page\": 1}")], "RELAY_SETTINGS is invalid: page: must be a string or null"),
            (&[("RELAY_SETTINGS", "nope")], "RELAY_SETTINGS is invalid: is not JSON"),
            (
                &[("RELAY_SETTINGS_FILE", "/nonexistent.json")],
                "RELAY_SETTINGS_FILE is invalid: cannot read /nonexistent.json",
            ),
        ];
        for (vars, expected) in cases {
            let all: Vec<(&str, &str)> = [TOKEN, DLQ].into_iter().chain(vars.iter().copied()).collect();
            let error = forward(&all).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn keys_are_split_trimmed_and_never_printed() {
        let config = config(&[QUEUE, ("WRITE_KEYS", " first ,second")]).unwrap();
        assert!(config.write_keys.verify("first") && config.write_keys.verify("second"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("first") && !printed.contains("second"), "{printed}");
        assert_eq!(config.allowed_origins, AllowedOrigins::Any);
    }
}
