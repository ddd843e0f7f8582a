//! Every environment variable, typed and read once at start; secrets as `SecretString`.

use secrecy::SecretString;

use crate::ingest::{AllowedOrigins, IngestOptions, WriteKeys};
use crate::queue::RetryPolicy;

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
    pub write_keys: WriteKeys,
    /// `QUEUE_URL`: the SQS queue events go to (FIFO when it ends in `.fifo`).
    pub queue_url: String,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call from a browser, or `*` (the default).
    pub allowed_origins: AllowedOrigins,
    /// `ENQUEUE_MAX_ATTEMPTS`: attempts per SendMessageBatch before answering 503 (default 4);
    /// `ENQUEUE_TIMEOUT_MS`: the most enqueueing one request may take (default 7000, under the function's 10 s timeout).
    pub enqueue_retry: RetryPolicy,
}

impl IngestConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<IngestConfig, ConfigError> {
        IngestConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<IngestConfig, ConfigError> {
        let write_keys = write_keys(lookup("WRITE_KEYS"))?;
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
                .map_err(|reason| ConfigError::Invalid { name: "CORS_ALLOWED_ORIGINS", reason })?,
        };
        let mut enqueue_retry = RetryPolicy::default();
        if let Some(text) = lookup("ENQUEUE_MAX_ATTEMPTS") {
            enqueue_retry.attempts =
                text.trim().parse().ok().filter(|n| (1..=20).contains(n)).ok_or_else(|| ConfigError::Invalid {
                    name: "ENQUEUE_MAX_ATTEMPTS",
                    reason: format!("must be a whole number from 1 to 20, not `{text}`"),
                })?;
        }
        if let Some(text) = lookup("ENQUEUE_TIMEOUT_MS") {
            let millis = text.trim().parse().ok().filter(|n| (100..=60_000).contains(n)).ok_or_else(|| {
                ConfigError::Invalid {
                    name: "ENQUEUE_TIMEOUT_MS",
                    reason: format!("must be a whole number of milliseconds from 100 to 60000, not `{text}`"),
                }
            })?;
            enqueue_retry.deadline = std::time::Duration::from_millis(millis);
        }
        Ok(IngestConfig { write_keys, queue_url: queue_url.trim().to_owned(), allowed_origins, enqueue_retry })
    }

    /// The HTTP API's part of the configuration.
    pub fn options(&self) -> IngestOptions {
        IngestOptions { write_keys: self.write_keys.clone(), allowed_origins: self.allowed_origins.clone() }
    }
}

fn write_keys(value: Option<String>) -> Result<WriteKeys, ConfigError> {
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

    #[test]
    fn keys_are_split_trimmed_and_never_printed() {
        let config = config(&[QUEUE, ("WRITE_KEYS", " first ,second")]).unwrap();
        assert!(config.write_keys.verify("first") && config.write_keys.verify("second"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("first") && !printed.contains("second"), "{printed}");
        assert_eq!(config.allowed_origins, AllowedOrigins::Any);
    }
}
