//! `replay PATH…`: events from files through validation, an in-memory queue and the forwarder, every outcome reported.
//! The options of `backfill` are here too, as `replay` took them before `backfill` was a command of its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use intercom_relay::local::{LocalError, ReplayOptions, Report, Tally, replay};
use intercom_relay_lambda::config;
use tracing_subscriber::filter::LevelFilter;

use super::args::{IntercomArgs, SettingsArg};
use super::output::{intercom_line, note, out};
use super::progress::Bar;

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// Files and directories of events.
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) intercom: IntercomArgs,
    /// Print one JSON report instead of a line per event.
    #[arg(long)]
    pub(crate) json: bool,
    /// Include every Intercom request (method, path, status and body) in the report.
    #[arg(long)]
    pub(crate) show_requests: bool,
    /// Exit with status 1 if any event was rejected or dead-lettered; in a backfill, stop at the first bad line (the
    /// same command resumes there).
    #[arg(long)]
    pub(crate) strict: bool,
    #[command(flatten)]
    pub(crate) settings: SettingsArg,
    /// Write keys the function-URL requests among the files must carry (comma-separated); the default is the key of
    /// the samples in events/requests.
    #[arg(long = "write-keys", env = "WRITE_KEYS", hide_env_values = true, default_value = "test-write-key")]
    pub(crate) write_keys: String,
    #[command(flatten)]
    pub(crate) backfill: super::backfill::BackfillArgs,
}

impl ReplayArgs {
    /// Whether `replay` runs as `backfill`: streamed, filtered, resumable.
    fn is_backfill(&self) -> bool {
        self.backfill.any() || intercom_relay::local::archive::holds_gzip(&self.paths)
    }
}

pub(crate) async fn run(args: ReplayArgs) -> Result<ExitCode, LocalError> {
    if args.is_backfill() {
        note("replay: these files or options make this a backfill; it runs as `intercom-relay backfill` does.");
        return super::backfill::run(args).await;
    }
    intercom_relay_lambda::logging::init_local(LevelFilter::WARN);
    let write_keys = config::write_keys(Some(args.write_keys))?;
    let options = ReplayOptions { paths: args.paths, destination: args.intercom.destination(), write_keys };
    let tally = Arc::new(Tally::new(true, args.show_requests));
    let bar = progress_bar(tally.clone());
    let local = replay(options, args.settings.env(), tally.clone()).await;
    drop(bar);
    let local = local?;
    let report = Report { identity_store: local.store_usage(), ..tally.report() };
    if args.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report).expect("a report serialises")));
    } else {
        out(&report.text());
        out(&intercom_line(&local));
    }
    let failed = !report.rejected.is_empty() || !report.dead_lettered.is_empty();
    Ok(if args.strict && failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Events forwarded of those accepted so far.
fn progress_bar(tally: Arc<Tally>) -> Option<Bar> {
    Bar::start("{bar:40} {pos}/{len} events forwarded ({elapsed})", Duration::from_millis(100), move |bar| {
        let (accepted, finished) = tally.progress();
        if accepted > 0 {
            bar.set_length(accepted as u64);
            bar.set_position(finished as u64);
        }
    })
}
