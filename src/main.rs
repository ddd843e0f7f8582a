//! The `intercom-relay` CLI: `replay` files or `serve` the HTTP API through the whole pipeline in one process, against
//! the built-in Intercom sandbox unless told otherwise; `sandbox` runs the sandbox alone.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use intercom_relay::local::{
    BackfillOptions, BackfillReport, Destination, DryRun, Ending, GenerateOptions, LineRejection, LocalError, Progress,
    ReplayOptions, ServeOptions, Tally, backfill, generate, generate_archive, generate_page_loads, parse_time, replay,
    replay_archives, serve,
};
use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use intercom_relay_lambda::aws::Caller;
use intercom_relay_lambda::config;
use intercom_relay_lambda::erasure::ErasureRequest;
use intercom_relay_lambda::ingest::AllowedOrigins;
use intercom_relay_lambda::queue::{ENQUEUE_RETRY, ENQUEUE_TIMEOUT, SqsQueue};
use intercom_relay_lambda::settings::{self, Settings};
use tracing_subscriber::filter::LevelFilter;

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
    /// A backfill from a CDP's archive: .gz files (gzipped NDJSON as Segment's S3 destination and RudderStack's event
    /// replay archive write them) and directories of them are streamed a line at a time, and so are .ndjson and .jsonl
    /// files with --to-queue, --since, --until, --checkpoint or --limit. Bad lines are reported with their file and
    /// line and passed over (with --strict the run stops at the first one). --to-queue sends the accepted events to
    /// the deployed events queue, keeping a checkpoint: rerun the same command to resume. Exit status: 0 when done,
    /// 1 when it stopped before the end (--strict, the queue failing), 130 when interrupted, 2 for usage errors.
    Replay(ReplayArgs),
    /// Serve Segment's HTTP Tracking API on this machine, forwarding what it accepts as it arrives.
    ///
    /// Write keys come from WRITE_KEYS (one is made and printed when it is unset), CORS origins from
    /// CORS_ALLOWED_ORIGINS. With QUEUE_URL set, events go through that SQS queue (and dead letters to DLQ_URL when
    /// set). SIGINT or SIGTERM stops accepting, forwards what is queued and prints the summary.
    Serve(ServeArgs),
    /// Run the Intercom sandbox alone (e.g. for `cargo lambda watch` with INTERCOM_BASE_URL pointing at it).
    Sandbox(SandboxArgs),
    /// Print a seeded, realistic day of events as NDJSON (identifies of new and returning users, tracks, pages,
    /// screens, groups, aliases), the same for the same options: `generate --events 10000 --users 1000 > day.ndjson`;
    /// with --page-loads, a day of page loads instead (identify and page on every load, group for half the users).
    Generate(GenerateArgs),
    /// Destination settings: check a document offline, or print their JSON Schema.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Erase a person from Intercom (GDPR, CCPA right to erasure), by userId and/or email.
    ///
    /// With --queue-url (or --stack), the request goes to the deployed events queue with your AWS credentials (never
    /// with a write key: the ingest API takes no such request), in the person's FIFO lane, so it runs after the events
    /// already queued for them; the forward function's log line `Erased.` (with the request id printed here) says what
    /// was done. With --live (or --intercom-url) it is carried out here and the outcome printed.
    Erase(EraseArgs),
}

#[derive(Args)]
struct EraseArgs {
    /// The person's userId: the user whose external_id it is.
    #[arg(long, value_name = "USER_ID")]
    user_id: Option<String>,
    /// Their email: with no --user-id, every contact holding it (users and leads).
    #[arg(long, value_name = "EMAIL")]
    email: Option<String>,
    /// Also erase the leads holding the email (the user's own, with --user-id and no --email).
    #[arg(long)]
    leads: bool,
    /// The deployed events queue (the stack's EventsQueueUrl output).
    #[arg(long, value_name = "URL", conflicts_with_all = ["live", "intercom_url", "stack"])]
    queue_url: Option<String>,
    /// The deployed stack (its name or ARN, in AWS_REGION): its events queue is read from its EventsQueueUrl output,
    /// which takes cloudformation:DescribeStacks.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["live", "intercom_url"])]
    stack: Option<String>,
    #[command(flatten)]
    intercom: IntercomArgs,
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Check a settings document (as RELAY_SETTINGS or RELAY_SETTINGS_FILE would be read) and list every problem by
    /// its path. Exit status: 0 when valid, 1 when not, 2 when the file cannot be read.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the settings document's JSON Schema (as committed in src/settings/settings.schema.json).
    Schema,
    /// Check a settings document and print it as the template's Settings parameter, quoted for
    /// `sam deploy --parameter-overrides "$(intercom-relay settings parameter FILE)"`.
    Parameter {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// The most the template's `Settings` parameter takes (its MaxLength; Lambda keeps at most 4 KB of environment).
const SETTINGS_PARAMETER_MAX: usize = 3072;

#[derive(Args)]
struct IntercomArgs {
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
    fn destination(&self) -> Destination {
        match (&self.intercom_url, self.live) {
            (_, true) => Destination::Live,
            (Some(url), false) => Destination::Url(url.clone()),
            (None, false) => Destination::Sandbox { rate_limit: self.rate_limit, search_lag: self.search_lag },
        }
    }
}

#[derive(Args)]
struct ReplayArgs {
    /// Files and directories of events.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    intercom: IntercomArgs,
    /// Print one JSON report instead of a line per event.
    #[arg(long)]
    json: bool,
    /// Include every Intercom request (method, path, status and body) in the report.
    #[arg(long)]
    show_requests: bool,
    /// Exit with status 1 if any event was rejected or dead-lettered; in a backfill, stop at the first bad line (the
    /// same command resumes there).
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    settings: SettingsArg,
    /// Write keys the function-URL requests among the files must carry (comma-separated); the default is the key of
    /// the samples in events/requests.
    #[arg(long = "write-keys", env = "WRITE_KEYS", hide_env_values = true, default_value = "test-write-key")]
    write_keys: String,
    /// Send the accepted events to this SQS queue (the stack's EventsQueueUrl output) with the envelope, message
    /// group and deduplication id ingest gives them, for the deployed forwarders to pace, instead of forwarding here.
    /// AWS credentials and region as the AWS CLI reads them.
    #[arg(long, value_name = "URL", conflicts_with_all = ["intercom_url", "live", "rate_limit", "search_lag", "file", "show_requests", "stack"])]
    to_queue: Option<String>,
    /// As --to-queue, to the events queue of this deployed stack (its name or ARN, in AWS_REGION), read from its
    /// EventsQueueUrl output (which takes cloudformation:DescribeStacks).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["intercom_url", "live", "rate_limit", "search_lag", "file", "show_requests"])]
    stack: Option<String>,
    /// Only events at or after this time (RFC 3339, or a date: its midnight UTC), by their timestamp as the ingest API
    /// normalises it (the event's own, corrected for clock skew; else when it was received or sent).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<time::OffsetDateTime>,
    /// Only events before this time (RFC 3339, or a date: its midnight UTC, so `--until 2025-02-01` ends with January).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<time::OffsetDateTime>,
    /// Keep the backfill's place in this file, written after every batch confirmed; the same command resumes from it.
    /// With --to-queue the default is the first PATH with `.checkpoint` added (`archive.checkpoint`).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Stop once this many events were sent (at the end of the line that reaches it): a trial run; the same command
    /// without --limit sends the rest.
    #[arg(long, value_name = "EVENTS", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Read and validate every line, report the counts and the bad lines, and send nothing (no checkpoint either): a
    /// check of an archive before a backfill.
    #[arg(long, conflicts_with_all = ["to_queue", "stack", "intercom_url", "live", "checkpoint", "limit"])]
    dry_run: bool,
    /// Events sent at once, and so between checkpoints.
    #[arg(long, value_name = "EVENTS", default_value_t = intercom_relay::local::BATCH_EVENTS, value_parser = batch_size)]
    batch: usize,
}

fn batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err("must be a number of events from 1 to 100000".into()),
    }
}

impl ReplayArgs {
    /// Whether the run is a backfill: streamed, filtered, resumable.
    fn is_backfill(&self) -> bool {
        self.to_queue.is_some()
            || self.stack.is_some()
            || self.dry_run
            || self.since.is_some()
            || self.until.is_some()
            || self.checkpoint.is_some()
            || self.limit.is_some()
            || intercom_relay::local::archive::holds_gzip(&self.paths)
    }
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[command(flatten)]
    intercom: IntercomArgs,
    #[command(flatten)]
    settings: SettingsArg,
}

#[derive(Args)]
struct SettingsArg {
    /// Destination settings to forward under (a JSON document; see `intercom-relay settings`), instead of
    /// RELAY_SETTINGS or RELAY_SETTINGS_FILE.
    #[arg(long = "settings", value_name = "FILE")]
    file: Option<PathBuf>,
}

impl SettingsArg {
    /// The environment as the forwarder reads it, with `--settings` in place of RELAY_SETTINGS(_FILE).
    fn env(&self) -> impl Fn(&str) -> Option<String> + Clone + Send + Sync + 'static {
        let file = self.file.as_ref().map(|path| path.display().to_string());
        move |name: &str| match (name, &file) {
            ("RELAY_SETTINGS", Some(_)) => None,
            ("RELAY_SETTINGS_FILE", Some(path)) => Some(path.clone()),
            _ => env(name),
        }
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The first day's start (RFC 3339); the events spread over the `--days` × 24 hours after it.
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    start: String,
    /// Days the events spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Write them as Segment's S3 destination archives events, under DIR/segment-logs/gen-source/<received-day>/
    /// (one gzipped NDJSON file per hour), instead of NDJSON on stdout: a sample archive for `replay`.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
    /// Instead of the mix, a day of page loads in a signed-in app using analytics.js: each load an identify (the same
    /// traits every time) and a page, and for every other user a group (the same company traits every time); the
    /// loads are drawn until the next would pass --events. What a relay that writes only changes should make little of.
    #[arg(long, conflicts_with = "archive")]
    page_loads: bool,
}

#[derive(Args)]
struct SandboxArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&LocalError::Io(format!("cannot start the async runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Replay(args) => run_replay(args).await,
            Command::Serve(args) => run_serve(args).await,
            Command::Sandbox(args) => run_sandbox(args).await,
            Command::Settings(command) => run_settings(command),
            Command::Generate(args) => run_generate(args),
            Command::Erase(args) => run_erase(args).await,
        }
    });
    result.unwrap_or_else(|error| fail(&error))
}

async fn run_erase(args: EraseArgs) -> Result<ExitCode, LocalError> {
    intercom_relay_lambda::logging::init_local(LevelFilter::WARN);
    let request = ErasureRequest::new(args.user_id, args.email, args.leads)
        .map_err(|e| LocalError::Usage(format!("erase: {e}")))?;
    if let Some(url) = queue_of(args.queue_url, args.stack.as_deref()).await? {
        let aws = intercom_relay_lambda::aws::load(Caller::Cli).await;
        let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &url, ENQUEUE_RETRY, ENQUEUE_TIMEOUT);
        queue.send_erasure(&request).await.map_err(|e| LocalError::Io(e.to_string()))?;
        out(&format!(
            "queued erasure {} in the person's lane of {url}: it runs after the events already queued for them; the \
             forward function's log line `Erased.` with this request_id says what was done.\n",
            request.request_id
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let (report, local) = intercom_relay::local::erase_here(&request, &args.intercom.destination(), env).await?;
    for erased in &report.erased {
        let contacts = erased.reason["contacts"].as_array().map_or(0, Vec::len);
        let notes: Vec<&str> =
            erased.reason["notes"].as_array().into_iter().flatten().filter_map(|n| n.as_str()).collect();
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
        out(&format!("erased {contacts} contacts in {}{notes}: {}\n", local.destination, erased.reason["contacts"]));
    }
    if let Some(failed) = report.dead_lettered.first() {
        out(&format!("not erased: {}\n", failed.reason));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn fail(error: &LocalError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "intercom-relay: {error}");
    ExitCode::from(2)
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn run_replay(args: ReplayArgs) -> Result<ExitCode, LocalError> {
    intercom_relay_lambda::logging::init_local(LevelFilter::WARN);
    if args.is_backfill() {
        return run_backfill(args).await;
    }
    let write_keys = config::write_keys(Some(args.write_keys))?;
    let options = ReplayOptions { paths: args.paths, destination: args.intercom.destination(), write_keys };
    let tally = Arc::new(Tally::new(true, args.show_requests));
    let progress = progress_bar(tally.clone());
    let local = replay(options, args.settings.env(), tally.clone()).await;
    if let Some(progress) = progress {
        progress.abort();
    }
    let local = local?;
    let report = intercom_relay::local::Report { identity_store: local.store_usage(), ..tally.report() };
    if args.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report).expect("a report serialises")));
    } else {
        out(&report.text());
        let held = local.sandbox_summary().map(|s| format!(": it holds {s}")).unwrap_or_default();
        let unchanged = local.sandbox.as_ref().map(|s| format!("; {}", unchanged(s))).unwrap_or_default();
        out(&format!("Intercom: {}{held}{unchanged}.\n", local.destination));
    }
    let failed = !report.rejected.is_empty() || !report.dead_lettered.is_empty();
    Ok(if args.strict && failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// A bar on stderr while events are forwarded, when stderr is a terminal.
fn progress_bar(tally: Arc<Tally>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events forwarded ({elapsed})")
            .expect("a valid template"),
    );
    Some(tokio::spawn(async move {
        let _clear = ClearOnDrop(bar.clone());
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (accepted, finished) = tally.progress();
            if accepted > 0 {
                bar.set_length(accepted as u64);
                bar.set_position(finished as u64);
            }
        }
    }))
}

/// `replay` of archives: streamed, filtered, to the queue or forwarded here, with a checkpoint.
async fn run_backfill(args: ReplayArgs) -> Result<ExitCode, LocalError> {
    let mut options = BackfillOptions::new(args.paths.clone());
    options.since = args.since;
    options.until = args.until;
    options.strict = args.strict;
    options.limit = args.limit;
    options.checkpoint = args.checkpoint.clone();
    options.batch = args.batch;
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return Err(LocalError::Usage("--since must be before --until".into()));
    }
    let to_queue = queue_of(args.to_queue.clone(), args.stack.as_deref()).await?;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopping.store(true, Ordering::Release);
        let _ = writeln!(
            std::io::stderr(),
            "Stopping after the batch in flight, then writing the checkpoint (a second Ctrl-C quits at once: the \
             last checkpoint written stays, and the batch in flight is sent again on resume)."
        );
        shutdown_signal().await;
        std::process::exit(130);
    });
    let bar = backfill_bar(progress.clone());
    let bar_handle = bar.as_ref().map(|(bar, _)| bar.clone());
    let json = args.json;
    let on_rejected = move |rejection: &LineRejection| {
        if json {
            return;
        }
        let line = format!("{:<13} {}\n", "rejected", rejection.text());
        match &bar_handle {
            Some(bar) => bar.suspend(|| out(&line)),
            None => out(&line),
        }
    };
    let (report, forwarded) = match &to_queue {
        None if args.dry_run => (backfill(options, &DryRun, progress, stop, &on_rejected).await, None),
        Some(url) => {
            options.checkpoint = Some(options.checkpoint.unwrap_or_else(|| default_checkpoint(&args.paths[0])));
            let queue = events_queue(url).await?;
            (backfill(options, &queue, progress, stop, &on_rejected).await, None)
        }
        None => {
            let write_keys = config::write_keys(Some(args.write_keys.clone()))?;
            let replay_options =
                ReplayOptions { paths: args.paths.clone(), destination: args.intercom.destination(), write_keys };
            let tally = Arc::new(Tally::new(false, args.show_requests));
            let result = replay_archives(
                replay_options,
                options,
                args.settings.env(),
                tally.clone(),
                progress,
                stop,
                &on_rejected,
            )
            .await;
            match result {
                Ok((local, report)) => (Ok(report), Some((local, tally))),
                Err(e) => (Err(e), None),
            }
        }
    };
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let report = report?;
    let forwarded_report = forwarded.as_ref().map(|(_, tally)| tally.report());
    if args.json {
        let mut document = serde_json::json!({"backfill": report});
        if let Some(forwarded) = &forwarded_report {
            document["forwarded"] = serde_json::to_value(forwarded).expect("a report serialises");
        }
        out(&format!("{}\n", serde_json::to_string_pretty(&document).expect("a report serialises")));
    } else {
        // Every rejection was printed as it was met (`--json` lists the first 1,000 and counts the rest).
        if let (Some((local, _)), Some(forwarded)) = (&forwarded, &forwarded_report) {
            for letter in &forwarded.dead_lettered {
                let id = letter.message_id.as_deref().unwrap_or("-");
                out(&format!("dead-lettered {id} ({}): {}\n", letter.source, letter.reason));
            }
            out(&forwarded.summary());
            let held = local.sandbox_summary().map(|s| format!(": it holds {s}")).unwrap_or_default();
            let unchanged = local.sandbox.as_ref().map(|s| format!("; {}", unchanged(s))).unwrap_or_default();
            out(&format!("Intercom: {}{held}{unchanged}.\n", local.destination));
        }
        out(&format!("Backfill: {}\n", report.summary()));
    }
    if let Some(next) = report.next_step() {
        let _ = writeln!(std::io::stderr(), "{next}");
    }
    Ok(backfill_status(&report, args.strict, forwarded_report.as_ref()))
}

/// 0 when done, 1 when it stopped before the end (or, forwarding here with --strict, something was dead-lettered),
/// 130 when interrupted.
fn backfill_status(
    report: &BackfillReport,
    strict: bool,
    forwarded: Option<&intercom_relay::local::Report>,
) -> ExitCode {
    match report.ending {
        Ending::Finished | Ending::Limit => {
            let dead = forwarded.is_some_and(|f| !f.dead_lettered.is_empty());
            if strict && dead { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Ending::Interrupted => ExitCode::from(130),
        Ending::BadLine { .. } | Ending::QueueFailed { .. } => ExitCode::from(1),
    }
}

/// `archive.checkpoint` beside `archive` (a trailing slash left out); `backfill.checkpoint` for `.` or `/`.
fn default_checkpoint(path: &std::path::Path) -> PathBuf {
    match path.file_name() {
        Some(name) => {
            let mut name = name.to_os_string();
            name.push(".checkpoint");
            path.with_file_name(name)
        }
        None => PathBuf::from("backfill.checkpoint"),
    }
}

/// The queue of `--to-queue URL` / `--queue-url URL`, or of `--stack NAME` (its EventsQueueUrl output), if either.
async fn queue_of(url: Option<String>, stack: Option<&str>) -> Result<Option<String>, LocalError> {
    use intercom_relay::aws::stack::{EVENTS_QUEUE_OUTPUT, StackError, events_queue_url};
    let Some(stack) = stack.filter(|_| url.is_none()) else { return Ok(url) };
    let aws = intercom_relay_lambda::aws::load(Caller::Cli).await;
    match events_queue_url(&aws, stack).await {
        Ok(url) => {
            let _ = writeln!(std::io::stderr(), "the stack {stack}'s {EVENTS_QUEUE_OUTPUT}: {url}");
            Ok(Some(url))
        }
        Err(e @ (StackError::Unreachable { .. } | StackError::Malformed { .. })) => Err(LocalError::Io(e.to_string())),
        Err(e) => Err(LocalError::Usage(e.to_string())),
    }
}

/// The events queue at `url`, checked before anything is read: it exists and these credentials reach it.
async fn events_queue(url: &str) -> Result<SqsQueue, LocalError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let aws = intercom_relay_lambda::aws::load(Caller::Cli).await;
    let client = aws_sdk_sqs::Client::new(&aws);
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::FifoQueue)
        .send()
        .await
        .map_err(|e| {
            LocalError::Usage(format!("cannot reach the queue {url}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))
        })?;
    let fifo = attributes.attributes().and_then(|a| a.get(&QueueAttributeName::FifoQueue)).is_some_and(|v| v == "true");
    if !fifo {
        let _ = writeln!(
            std::io::stderr(),
            "warning: {url} is not a FIFO queue: a person's events may be forwarded out of order, and an event sent \
             twice is not dropped. The stack's EventsQueueUrl is FIFO."
        );
    }
    Ok(SqsQueue::new(client, url, ENQUEUE_RETRY, ENQUEUE_TIMEOUT))
}

/// A bar on stderr while a backfill runs, when stderr is a terminal: bytes of the archive read, events read, sent,
/// filtered and rejected, the rate and the time left.
fn backfill_bar(progress: Arc<Progress>) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}, {elapsed} elapsed, {eta} left")
            .expect("a valid template"),
    );
    let drawn = bar.clone();
    let ticker = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut first = true;
        loop {
            let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            drawn.set_length(load(&progress.bytes_total).max(1));
            drawn.set_position(load(&progress.bytes_read));
            if first {
                // Files done in an earlier run are not this run's speed.
                drawn.reset_eta();
                first = false;
            }
            let rate = load(&progress.sent_this_run) as f64 / started.elapsed().as_secs_f64().max(0.001);
            drawn.set_message(format!(
                "{} read, {} sent, {} filtered, {} rejected, {:.0} events/s",
                indicatif::HumanCount(load(&progress.events)),
                indicatif::HumanCount(load(&progress.sent)),
                indicatif::HumanCount(load(&progress.filtered)),
                indicatif::HumanCount(load(&progress.rejected)),
                rate
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some((bar, ticker))
}

struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

async fn run_serve(args: ServeArgs) -> Result<ExitCode, LocalError> {
    intercom_relay_lambda::logging::init_local(LevelFilter::INFO);
    let (write_keys, generated) = match env("WRITE_KEYS") {
        Some(text) => (config::write_keys_of_both_kinds(Some(text), env("BROWSER_WRITE_KEYS"))?, None),
        None => {
            let key = format!("local-{}", uuid::Uuid::new_v4().simple());
            (config::write_keys_of_both_kinds(Some(key.clone()), env("BROWSER_WRITE_KEYS"))?, Some(key))
        }
    };
    let allowed_origins = match env("CORS_ALLOWED_ORIGINS") {
        None => AllowedOrigins::Any,
        Some(text) => AllowedOrigins::parse(&text)
            .map_err(|reason| LocalError::Usage(format!("CORS_ALLOWED_ORIGINS is invalid: {reason}")))?,
    };
    let queue_url = env("QUEUE_URL").filter(|url| !url.trim().is_empty());
    let dlq_url = env("DLQ_URL").filter(|url| !url.trim().is_empty());
    if queue_url.is_some() && dlq_url.is_none() {
        // Dead letters kept in memory would be deleted from SQS and gone when the process ends.
        return Err(LocalError::Usage("with QUEUE_URL set, DLQ_URL must name the dead-letter queue too".into()));
    }
    let options = ServeOptions {
        host: args.host,
        port: args.port,
        destination: args.intercom.destination(),
        write_keys,
        allowed_origins,
        queue_url,
        dlq_url,
    };
    let queue = options.queue_url.clone().map_or_else(|| "in memory".to_owned(), |url| format!("SQS {url}"));
    let settings = match (&args.settings.file, env("RELAY_SETTINGS"), env("RELAY_SETTINGS_FILE")) {
        (Some(file), _, _) => file.display().to_string(),
        (None, Some(_), _) => "from RELAY_SETTINGS".to_owned(),
        (None, None, Some(file)) => file,
        (None, None, None) => "the defaults (everything forwarded)".to_owned(),
    };
    let tally = Arc::new(Tally::new(false, false));
    let server = serve(options, args.settings.env(), tally.clone()).await?;
    let local = server.local().clone();
    let key = match &generated {
        Some(key) => format!("{key} (made for this run; set WRITE_KEYS to choose)"),
        None => "from WRITE_KEYS".to_owned(),
    };
    let example_key = generated.as_deref().unwrap_or("$WRITE_KEY");
    out(&format!(
        "Segment HTTP Tracking API on {url}\n  write key: {key}\n  queue:     {queue}\n  Intercom:  {}\n  settings:  {settings}\n\
         Try: curl -u '{example_key}:' -H 'content-type: application/json' -d '{{\"userId\":\"user-1\",\"event\":\"Signed Up\"}}' {url}/v1/track\n\
         Ctrl-C stops it: what is queued is forwarded first.\n",
        local.destination,
        url = server.url,
    ));
    server
        .run(async {
            shutdown_signal().await;
            out("Stopping: no new requests; forwarding what is queued (a second Ctrl-C quits at once).\n");
            tokio::spawn(async {
                shutdown_signal().await;
                std::process::exit(130);
            });
        })
        .await;
    let report = tally.report();
    for letter in &report.dead_lettered {
        let id = letter.message_id.as_deref().unwrap_or("-");
        out(&format!("dead-lettered {id} ({}): {}\n", letter.source, letter.reason));
    }
    let held = match (local.sandbox_summary(), &local.sandbox) {
        (Some(held), Some(sandbox)) => {
            format!("Intercom ({}) holds {held}; {}.\n", local.destination, unchanged(sandbox))
        }
        _ => String::new(),
    };
    out(&format!("Stopped. {}{held}", report.summary()));
    Ok(ExitCode::SUCCESS)
}

async fn run_sandbox(args: SandboxArgs) -> Result<ExitCode, LocalError> {
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
    shutdown_signal().await;
    out(&format!(
        "Stopped after {} requests ({}); it held {}.\n",
        sandbox.requests().len(),
        unchanged(&sandbox),
        sandbox.state().summary()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `12 calls changed nothing (4 writes, 8 reads)`: refused writes, writes of what was already held, and reads.
fn unchanged(sandbox: &SandboxServer) -> String {
    let calls = sandbox.unchanged_calls();
    format!("{} calls changed nothing ({} writes, {} reads)", calls.total(), calls.writes, calls.reads)
}

fn run_generate(args: GenerateArgs) -> Result<ExitCode, LocalError> {
    let start =
        time::OffsetDateTime::parse(&args.start, &time::format_description::well_known::Rfc3339).map_err(|e| {
            LocalError::Usage(format!("--start must be an RFC 3339 time such as 2026-01-01T00:00:00Z: {e}"))
        })?;
    let options = GenerateOptions { events: args.events, users: args.users, seed: args.seed, start, days: args.days };
    if let Some(dir) = &args.archive {
        let written = generate_archive(&options, dir)
            .map_err(|e| LocalError::Io(format!("cannot write the archive under {}: {e}", dir.display())))?;
        out(&format!(
            "{} events in {} files ({} bytes gzipped) under {}\n",
            written.events,
            written.files,
            written.bytes,
            written.root.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written =
        if args.page_loads { generate_page_loads(&options, &mut stdout) } else { generate(&options, &mut stdout) };
    written.and_then(|()| stdout.flush()).map_err(|e| LocalError::Io(format!("cannot write the events: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

fn run_settings(command: SettingsCommand) -> Result<ExitCode, LocalError> {
    match command {
        SettingsCommand::Schema => {
            out(&format!("{}\n", serde_json::to_string_pretty(&settings::schema()).expect("a schema serialises")));
            Ok(ExitCode::SUCCESS)
        }
        SettingsCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| LocalError::Usage(format!("cannot read {}: {e}", file.display())))?;
            match Settings::parse(&text) {
                Ok(settings) => {
                    out(&format!("{}: valid settings.\n{}", file.display(), settings.describe()));
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    let _ = writeln!(std::io::stderr(), "{}: {problems}", file.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
        SettingsCommand::Parameter { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| LocalError::Usage(format!("cannot read {}: {e}", file.display())))?;
            if let Err(problems) = Settings::parse(&text) {
                let _ = writeln!(std::io::stderr(), "{}: {problems}", file.display());
                return Ok(ExitCode::from(1));
            }
            let mut document: serde_json::Value = serde_json::from_str(&text).expect("checked above");
            // Only editors read `$schema`; the deployed function does not need the bytes.
            document.as_object_mut().map(|members| members.shift_remove("$schema"));
            let compact = serde_json::to_string(&document).expect("JSON serialises");
            if compact.len() > SETTINGS_PARAMETER_MAX {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}: is {} bytes as one line; the Settings parameter takes at most {SETTINGS_PARAMETER_MAX}",
                    file.display(),
                    compact.len()
                );
                return Ok(ExitCode::from(1));
            }
            // SAM CLI reads `Key="value"` with backslash escapes: a JSON string literal of the document is exactly that.
            out(&format!("Settings={}\n", serde_json::Value::String(compact)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM can be listened for");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
