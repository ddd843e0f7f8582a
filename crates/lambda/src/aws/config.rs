//! The one SDK configuration of a process: loaded once (credentials, region and endpoints as the AWS CLI finds them),
//! with the process's timeouts and retries and one HTTPS client, and every AWS client (SQS, DynamoDB,
//! CloudFormation) built from it; and the one TLS configuration of a process ([`tls`]), which the Lambdas' SDK
//! client and the Intercom client share.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
    let http_client = match caller {
        Caller::Forward | Caller::Ingest => SharedHttpClient::new(SharedTlsClient::default()),
        Caller::Cli => https_client(),
    };
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(caller.timeouts())
        .retry_config(retries())
        .http_client(http_client)
        .load()
        .await
}

/// The process's one rustls configuration (aws-lc, TLS 1.2 and 1.3), built on first use and shared by reqwest (the
/// Intercom client) and the Lambdas' AWS clients: Mozilla's roots compiled in (`webpki-roots`, already parsed), plus
/// those of `SSL_CERT_FILE` when it is set (an operator's own CA; Lambda sets none). Reading and parsing the system's
/// CA bundle and `/etc/ssl/certs` instead took most of the functions' start-up, once per client.
pub(crate) fn tls() -> rustls::ClientConfig {
    static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(new_tls);
    TLS.clone()
}

fn new_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        match CertificateDer::pem_file_iter(&path) {
            Ok(certs) => {
                roots.add_parsable_certificates(certs.filter_map(Result::ok));
            }
            Err(error) => tracing::warn!(%error, "The certificates of SSL_CERT_FILE could not be read."),
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The Lambdas' HTTPS client for the SDK: hyper 1 with rustls on [`tls`], a connection pool per connect timeout (the
/// SDK asks for a connector per timeout settings). Read timeouts are not applied (no caller sets one: each call's
/// attempt timeout bounds it), and no proxy is taken from the environment (Lambda has none); the CLI keeps the SDK's
/// own client for both.
#[derive(Debug, Default)]
struct SharedTlsClient {
    connectors: Mutex<HashMap<Option<Duration>, SharedHttpConnector>>,
}

impl HttpClient for SharedTlsClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        let mut connectors = self.connectors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let timeout = settings.connect_timeout();
        connectors.entry(timeout).or_insert_with(|| SharedHttpConnector::new(TlsConnector::new(timeout))).clone()
    }
}

/// One hyper client on [`tls`]; HTTP/1.1 only (SQS and DynamoDB speak it; hyper's HTTP/2 is left out of the build).
#[derive(Debug)]
struct TlsConnector {
    client: Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>,
}

impl TlsConnector {
    fn new(connect_timeout: Option<Duration>) -> TlsConnector {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        // The timer is what closes idle pooled connections.
        let client = Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(https);
        TlsConnector { client }
    }
}

impl HttpConnector for TlsConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(error) => return HttpConnectorFuture::ready(Err(ConnectorError::user(error.into()))),
        };
        let response = self.client.request(request);
        HttpConnectorFuture::new(async move {
            match response.await {
                Ok(response) => Response::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|error| ConnectorError::other(error.into(), None)),
                Err(error) => Err(connector_error(error)),
            }
        })
    }
}

/// What the SDK's retries need to know of a failed call (as the SDK's own client sorts hyper's errors): a timeout or
/// an I/O failure is tried again; a request hyper refused is not.
fn connector_error(error: hyper_util::client::legacy::Error) -> ConnectorError {
    let io = source::<std::io::Error>(&error).map(std::io::Error::kind);
    if io == Some(std::io::ErrorKind::TimedOut) {
        return ConnectorError::timeout(error.into());
    }
    if error.is_connect() || io.is_some() {
        return ConnectorError::io(error.into());
    }
    match source::<hyper::Error>(&error) {
        Some(hyper) if hyper.is_timeout() => ConnectorError::timeout(error.into()),
        Some(hyper) if hyper.is_user() => ConnectorError::user(error.into()),
        Some(hyper) if hyper.is_closed() || hyper.is_canceled() => ConnectorError::io(error.into()),
        Some(hyper) if hyper.is_incomplete_message() => {
            ConnectorError::other(error.into(), Some(ErrorKind::TransientError))
        }
        _ => ConnectorError::other(error.into(), None),
    }
}

/// The first error of type `E` in `error`'s chain.
fn source<'a, E: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    std::iter::successors(Some(error), |error| error.source()).find_map(|error| error.downcast_ref::<E>())
}

/// The CLI's HTTPS client for every AWS client: the SDK's default (hyper 1, rustls with aws-lc, the system's CA
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

    #[test]
    fn the_tls_configuration_trusts_the_compiled_in_roots_and_offers_no_protocol() {
        let tls = tls();
        // hyper-rustls refuses a configuration with ALPN set; reqwest sets its own.
        assert!(tls.alpn_protocols.is_empty());
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
    }

    /// The SDK tries a call again only on the kinds it knows: a refused connection must read as I/O.
    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_the_sdk_tries_again() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let connector = TlsConnector::new(Some(Duration::from_secs(5)));
        let request = http::Request::builder().uri(format!("http://{address}/")).body(SdkBody::empty()).unwrap();
        let error = connector.call(HttpRequest::try_from(request).unwrap()).await.unwrap_err();
        assert!(error.is_io(), "{error:?}");
    }
}
