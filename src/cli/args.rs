//! The options several commands share: where Intercom is (`IntercomArgs`) and the destination settings
//! (`SettingsArg`).

use std::path::PathBuf;

use clap::Args;
use intercom_relay::local::Destination;
use intercom_relay::sandbox::SandboxOptions;

use super::output::env;

#[derive(Args)]
pub(crate) struct IntercomArgs {
    /// Send Intercom calls to this server (a standalone `intercom-relay sandbox`, a proxy) with the token in
    /// INTERCOM_ACCESS_TOKEN, instead of a sandbox started in this process.
    #[arg(long, value_name = "URL", conflicts_with = "live")]
    intercom_url: Option<String>,
    /// Send to the real Intercom workspace of INTERCOM_ACCESS_TOKEN in INTERCOM_REGION (us, eu or au). Never the default.
    #[arg(long)]
    live: bool,
    /// Calls per 10-second window the built-in sandbox allows before answering 429, as Intercom does (its default is
    /// 1,666: a replay of 100,000 events takes about ten minutes, as it would against Intercom).
    #[arg(long, value_name = "CALLS", default_value_t = SandboxOptions::default().rate_limit, conflicts_with_all = ["intercom_url", "live"])]
    rate_limit: u64,
    /// Seconds a new contact stays invisible to the built-in sandbox's search, as Intercom's search index lags (by
    /// minutes there).
    #[arg(long, value_name = "SECONDS", default_value_t = SandboxOptions::default().search_lag, conflicts_with_all = ["intercom_url", "live"])]
    search_lag: u64,
}

impl IntercomArgs {
    pub(crate) fn destination(&self) -> Destination {
        match (&self.intercom_url, self.live) {
            (_, true) => Destination::Live,
            (Some(url), false) => Destination::Url(url.clone()),
            (None, false) => Destination::Sandbox { rate_limit: self.rate_limit, search_lag: self.search_lag },
        }
    }
}

#[derive(Args)]
pub(crate) struct SettingsArg {
    /// Destination settings to forward under (a JSON document; see `intercom-relay settings`), instead of
    /// RELAY_SETTINGS or RELAY_SETTINGS_FILE.
    #[arg(long = "settings", value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
}

impl SettingsArg {
    /// The environment as the forwarder reads it, with `--settings` in place of RELAY_SETTINGS(_FILE).
    pub(crate) fn env(&self) -> impl Fn(&str) -> Option<String> + Clone + Send + Sync + 'static {
        let file = self.file.as_ref().map(|path| path.display().to_string());
        move |name: &str| match (name, &file) {
            ("RELAY_SETTINGS", Some(_)) => None,
            ("RELAY_SETTINGS_FILE", Some(path)) => Some(path.clone()),
            _ => env(name),
        }
    }
}
