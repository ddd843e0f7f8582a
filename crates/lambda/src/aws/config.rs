//! The one SDK configuration of a process: loaded once (credentials, region and endpoints as the AWS CLI finds them),
//! with the process's timeouts and retries and one HTTPS client, and every AWS client (SQS, DynamoDB,
//! CloudFormation) built from it.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

/// Which process loads the configuration: each has its own time for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The forward function: a dead letter and the records' waits are sent within the invocation's last 1.5 s.
    Forward,
    /// The ingest function: short tries leave room for its own retries within the function's timeout.
    Ingest,
    /// The command line: an operator waits, on any network.
    Cli,
}

impl Caller {
    /// The SDK's timeouts for this caller's calls.
    pub(crate) fn timeouts(self) -> TimeoutConfig {
        let builder = TimeoutConfig::builder();
        match self {
            Caller::Forward => {
                builder.connect_timeout(Duration::from_secs(1)).operation_attempt_timeout(Duration::from_secs(2))
            }
            Caller::Ingest => {
                builder.connect_timeout(Duration::from_secs(1)).operation_attempt_timeout(Duration::from_secs(3))
            }
            Caller::Cli => {
                builder.operation_attempt_timeout(Duration::from_secs(10)).operation_timeout(Duration::from_secs(30))
            }
        }
        .build()
    }
}

/// The SDK's retries, for every caller: its standard mode (throttling, 5xx and timeouts tried again with jittered
/// backoff), three tries a call; the queues and the suppression list add their own on top where they need more.
pub(crate) fn retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(3)
}

/// The process's SDK configuration, for `caller`: load it once and build every client from it.
pub async fn load(caller: Caller) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(caller.timeouts())
        .retry_config(retries())
        .http_client(https_client())
        .load()
        .await
}

/// The HTTPS client every AWS client shares: the SDK's default (hyper 1, rustls with aws-lc, the system's CA
/// certificates, a proxy from the environment), built once, so that the CA bundle is read once per process and the
/// clients share one connection pool; left to itself each client would build its own.
fn https_client() -> aws_sdk_sqs::config::SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_keeps_its_time_for_a_call() {
        let forward = Caller::Forward.timeouts();
        assert_eq!(forward.connect_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(forward.operation_attempt_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(Caller::Ingest.timeouts().operation_attempt_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(Caller::Cli.timeouts().operation_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(retries().max_attempts(), 3);
    }
}
