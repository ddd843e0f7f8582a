//! The commands: clap's definitions and what each runs, one file per command; `args` holds the options several
//! commands share, `progress` the bar, `output` how they print.

mod args;
mod backfill;
mod erase;
mod generate;
mod output;
mod progress;
mod queue;
mod replay;
mod sandbox;
mod serve;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use intercom_relay::local::LocalError;

use output::fail;

#[derive(Parser)]
#[command(name = "intercom-relay", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run events from files through validation, an in-memory queue and the forwarder, and report every outcome.
    ///
    /// Each file may hold one Segment event, a batch body ({"batch": [...]}), a JSON array of events, NDJSON, a
    /// function-URL request event or an SQS event of envelopes; directories are walked for .json, .ndjson and .jsonl
    /// files. Exit status: 0 when the run completed, 1 with --strict if anything was rejected or dead-lettered,
    /// 2 for usage or input errors.
    ///
    /// With .gz files or any of backfill's options (--to-queue, --stack, --since, --until, --checkpoint, --limit,
    /// --dry-run) it runs as `intercom-relay backfill`, and says so.
    Replay(replay::ReplayArgs),
    /// Send a CDP's archive: stream, filter and forward (or queue) it, resumably.
    ///
    /// .gz files (gzipped NDJSON as Segment's S3 destination and RudderStack's event replay archive write them),
    /// .ndjson and .jsonl files and directories of them are streamed a line at a time. Bad lines are reported with
    /// their file and line and passed over (with --strict the run stops at the first one). --to-queue sends the
    /// accepted events to the deployed events queue, keeping a checkpoint: rerun the same command to resume. Without
    /// --to-queue or --stack the events are forwarded here, as `replay` does. Exit status: 0 when done, 1 when it
    /// stopped before the end (--strict, the queue failing), 130 when interrupted, 2 for usage errors.
    Backfill(replay::ReplayArgs),
    /// Serve Segment's HTTP Tracking API on this machine, forwarding what it accepts as it arrives.
    ///
    /// Write keys come from WRITE_KEYS (one is made and printed when it is unset), CORS origins from
    /// CORS_ALLOWED_ORIGINS. With QUEUE_URL set, events go through that SQS queue (and dead letters to DLQ_URL when
    /// set). SIGINT or SIGTERM stops accepting, forwards what is queued and prints the summary.
    Serve(serve::ServeArgs),
    /// Run the Intercom sandbox alone (e.g. for `cargo lambda watch` with INTERCOM_BASE_URL pointing at it).
    Sandbox(sandbox::SandboxArgs),
    /// Print a seeded, realistic day of events as NDJSON (identifies of new and returning users, tracks, pages,
    /// screens, groups, aliases), the same for the same options: `generate --events 10000 --users 1000 > day.ndjson`;
    /// with --page-loads, a day of page loads instead (identify and page on every load, group for half the users).
    Generate(generate::GenerateArgs),
    /// Destination settings: check a document offline, or print their JSON Schema.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// Erase a person from Intercom (GDPR, CCPA right to erasure), by userId and/or email.
    ///
    /// With --queue-url (or --stack), the request goes to the deployed events queue with your AWS credentials (never
    /// with a write key: the ingest API takes no such request), in the person's FIFO lane, so it runs after the events
    /// already queued for them; the forward function's log line `Erased.` (with the request id printed here) says what
    /// was done. With --live (or --intercom-url) it is carried out here and the outcome printed.
    Erase(erase::EraseArgs),
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&LocalError::Io(format!("cannot start the async runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Replay(args) => replay::run(args).await,
            Command::Backfill(args) => backfill::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Sandbox(args) => sandbox::run(args).await,
            Command::Settings(command) => settings::run(command),
            Command::Generate(args) => generate::run(args),
            Command::Erase(args) => erase::run(args).await,
        }
    });
    result.unwrap_or_else(|error| fail(&error))
}

/// SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM can be listened for");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
