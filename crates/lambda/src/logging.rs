//! Log setup for the Lambdas: Lambda's log controls honoured, with the runtime's request dumps kept out.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, LevelFilter};

/// Crates that log whole requests or events at TRACE (the runtime logs each raw invocation, write key included).
const QUIET_AT_TRACE: [&str; 5] =
    ["lambda_runtime", "lambda_runtime_api_client", "lambda_http", "aws_smithy_runtime", "aws_smithy_runtime_api"];

/// Installs the global subscriber as `lambda_runtime::tracing::init_default_subscriber` does (level from
/// `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO; JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`), except that the crates in
/// [`QUIET_AT_TRACE`] never log below DEBUG, so no level setting can put a write key or an event in the logs.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_default();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let subscriber = tracing_subscriber::fmt().with_target(false).without_time().with_env_filter(filter(&level));
    // The current span (the invocation's request id) once per line, not again in a list of spans: it would double
    // the bytes every line costs in CloudWatch Logs.
    if json { subscriber.json().with_span_list(false).init() } else { subscriber.init() }
}

/// Installs the subscriber for the `intercom-relay` CLI: human-readable lines on stderr (stdout is for reports), level
/// from `RUST_LOG`, else `default`, with the same caps as [`init`].
pub fn init_local(default: LevelFilter) {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr).with_env_filter(filter(&level)).init();
}

fn filter(level: &str) -> EnvFilter {
    // tracing reads "" as ERROR, and no level set (`cargo lambda watch`, a shell) is "" here.
    let level = match level.trim() {
        "" => LevelFilter::INFO,
        level => LevelFilter::from_str(level).unwrap_or(LevelFilter::INFO),
    };
    let mut filter = EnvFilter::builder().with_default_directive(level.into()).parse_lossy("");
    // In tracing's order a more verbose level is the greater one, so `min` caps these crates at DEBUG.
    let capped = level.min(LevelFilter::DEBUG);
    for target in QUIET_AT_TRACE {
        filter = filter.add_directive(Directive::from_str(&format!("{target}={capped}")).expect("a valid directive"));
    }
    filter
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn logged_at(level: &str) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(level))
            .with_writer(move || WriteTo(writer.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "lambda_runtime::layers::api_response", body = "the-write-key", "raw JSON event");
            tracing::trace!(target: "aws_smithy_runtime::client", "request body");
            tracing::trace!(target: "intercom_relay::ingest", "our own trace line");
            tracing::debug!(target: "lambda_runtime::runtime", "runtime debug line");
            tracing::info!(target: "intercom_relay::forward", "our own info line");
        });
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    struct WriteTo(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for WriteTo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_reaches_our_code_but_never_the_runtimes_request_dumps() {
        let logs = logged_at("trace");
        assert!(logs.contains("our own trace line") && logs.contains("runtime debug line"), "{logs}");
        assert!(!logs.contains("the-write-key") && !logs.contains("request body"), "{logs}");
    }

    #[test]
    fn an_unknown_level_or_none_means_info() {
        for level in ["chatty", "", " "] {
            let logs = logged_at(level);
            assert!(logs.contains("our own info line"), "{level:?}: {logs}");
            assert!(!logs.contains("our own trace line") && !logs.contains("runtime debug line"), "{level:?}: {logs}");
        }
    }
}
