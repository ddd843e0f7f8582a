//! `sandbox`: the Intercom sandbox alone, on a port, until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Args;
use intercom_relay::local::LocalError;
use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use tracing_subscriber::filter::LevelFilter;

use super::output::{out, unchanged};

#[derive(Args)]
pub(crate) struct SandboxArgs {
    /// 0 picks a free port.
    #[arg(long, default_value_t = 4010)]
    port: u16,
    /// The access token it accepts as `Authorization: Bearer …`.
    #[arg(long, default_value = "sandbox-token")]
    token: String,
    /// Calls allowed per 10-second window before it answers 429 (Intercom's default is 1,666).
    #[arg(long, default_value_t = SandboxOptions::default().rate_limit)]
    rate_limit: u64,
    /// Seconds a new contact stays invisible to search, as Intercom's search index lags (by minutes there).
    #[arg(long, value_name = "SECONDS", default_value_t = SandboxOptions::default().search_lag)]
    search_lag: u64,
}

pub(crate) async fn run(args: SandboxArgs) -> Result<ExitCode, LocalError> {
    intercom_relay_lambda::logging::init_local(LevelFilter::INFO);
    let options = SandboxOptions {
        token: args.token,
        rate_limit: args.rate_limit,
        search_lag: args.search_lag,
        ..SandboxOptions::default()
    };
    let sandbox = SandboxServer::start(options, args.port)
        .await
        .map_err(|e| LocalError::Io(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    out(&format!(
        "Intercom sandbox on {url}\n  token: {token}\n  what it holds: GET {url}/_sandbox/state\n  what it was asked: GET {url}/_sandbox/requests\n\
         Point the forwarder at it: INTERCOM_BASE_URL={url} INTERCOM_ACCESS_TOKEN={token}\n",
        url = sandbox.url,
        token = sandbox.token(),
    ));
    super::shutdown_signal().await;
    out(&format!(
        "Stopped after {} requests ({}); it held {}.\n",
        sandbox.requests().len(),
        unchanged(&sandbox),
        sandbox.state().summary()
    ));
    Ok(ExitCode::SUCCESS)
}
