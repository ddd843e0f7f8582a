//! `backfill PATH…`: a CDP's archive streamed, filtered and sent to the deployed events queue (or forwarded here),
//! with a checkpoint to resume from, a bar while it runs and a stop that finishes the batch in flight.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use intercom_relay::local::{
    BackfillOptions, BackfillReport, DryRun, Ending, LineRejection, Local, LocalError, Progress, ReplayOptions, Report,
    Tally, backfill, parse_time, replay_archives,
};
use intercom_relay_lambda::config;
use tracing_subscriber::filter::LevelFilter;

use super::output::{intercom_line, note, out};
use super::progress::Bar;
use super::queue::{events_queue, queue_of};
use super::replay::ReplayArgs;

/// What makes a run a backfill; flattened into `replay`'s and `backfill`'s options.
#[derive(Args)]
pub(crate) struct BackfillArgs {
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

#[derive(Debug, thiserror::Error)]
#[error("must be a number of events from 1 to 100000")]
pub(crate) struct BatchSizeError;

fn batch_size(text: &str) -> Result<usize, BatchSizeError> {
    text.parse::<usize>().ok().filter(|n| (1..=100_000).contains(n)).ok_or(BatchSizeError)
}

impl BackfillArgs {
    /// Whether any option asks for a backfill.
    pub(crate) fn any(&self) -> bool {
        self.to_queue.is_some()
            || self.stack.is_some()
            || self.dry_run
            || self.since.is_some()
            || self.until.is_some()
            || self.checkpoint.is_some()
            || self.limit.is_some()
    }

    fn options(&self, paths: &[PathBuf], strict: bool) -> Result<BackfillOptions, LocalError> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(LocalError::Usage("--since must be before --until".into()));
        }
        let mut options = BackfillOptions::new(paths.to_vec());
        options.since = self.since;
        options.until = self.until;
        options.strict = strict;
        options.limit = self.limit;
        options.checkpoint = self.checkpoint.clone();
        options.batch = self.batch;
        Ok(options)
    }
}

/// What a run handed back: the backfill's report and, forwarded here, what the forwarder did.
type Outcome = (Result<BackfillReport, LocalError>, Option<(Local, Arc<Tally>)>);

pub(crate) async fn run(args: ReplayArgs) -> Result<ExitCode, LocalError> {
    intercom_relay_lambda::logging::init_local(LevelFilter::WARN);
    let mut options = args.backfill.options(&args.paths, args.strict)?;
    let to_queue = queue_of(args.backfill.to_queue.clone(), args.backfill.stack.as_deref()).await?;
    let progress = Arc::new(Progress::default());
    let stop = stop_on_signal();
    let bar = progress_bar(progress.clone());
    let on_rejected = rejection_printer(args.json, bar.as_ref());
    let (report, forwarded) = match &to_queue {
        None if args.backfill.dry_run => (backfill(options, &DryRun, progress, stop, &on_rejected).await, None),
        Some(url) => {
            options.checkpoint = Some(options.checkpoint.unwrap_or_else(|| default_checkpoint(&args.paths[0])));
            let queue = events_queue(url).await?;
            (backfill(options, &queue, progress, stop, &on_rejected).await, None)
        }
        None => forward_here(&args, options, progress, stop, &on_rejected).await?,
    };
    drop(bar);
    let report = report?;
    let forwarded_report = forwarded.as_ref().map(|(_, tally)| tally.report());
    print_report(&report, args.json, forwarded.as_ref().map(|(local, _)| local).zip(forwarded_report.as_ref()));
    if let Some(next) = report.next_step() {
        note(&next);
    }
    Ok(status(&report, args.strict, forwarded_report.as_ref()))
}

/// The archive forwarded in this process, as `replay` forwards files.
async fn forward_here(
    args: &ReplayArgs,
    options: BackfillOptions,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    on_rejected: &(dyn Fn(&LineRejection) + Sync),
) -> Result<Outcome, LocalError> {
    let write_keys = config::write_keys(Some(args.write_keys.clone()))?;
    let replay_options =
        ReplayOptions { paths: args.paths.clone(), destination: args.intercom.destination(), write_keys };
    let tally = Arc::new(Tally::new(false, args.show_requests));
    let env = args.settings.env();
    let result = replay_archives(replay_options, options, env, tally.clone(), progress, stop, on_rejected).await;
    Ok(match result {
        Ok((local, report)) => (Ok(report), Some((local, tally))),
        Err(e) => (Err(e), None),
    })
}

/// The first SIGINT or SIGTERM asks the run to stop after the batch in flight; the second quits at once.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        stopping.store(true, Ordering::Release);
        note(
            "Stopping after the batch in flight, then writing the checkpoint (a second Ctrl-C quits at once: the last \
             checkpoint written stays, and the batch in flight is sent again on resume).",
        );
        super::shutdown_signal().await;
        std::process::exit(130);
    });
    stop
}

/// Each rejected line printed as it is met, above the bar (`--json` lists the first 1,000 and counts the rest).
fn rejection_printer(json: bool, bar: Option<&Bar>) -> impl Fn(&LineRejection) + Sync + use<> {
    let bar = bar.map(Bar::handle);
    move |rejection: &LineRejection| {
        if json {
            return;
        }
        let line = format!("{:<13} {}\n", "rejected", rejection.text());
        match &bar {
            Some(bar) => bar.suspend(|| out(&line)),
            None => out(&line),
        }
    }
}

fn print_report(report: &BackfillReport, json: bool, forwarded: Option<(&Local, &Report)>) {
    if json {
        let mut document = serde_json::json!({"backfill": report});
        if let Some((_, forwarded)) = forwarded {
            document["forwarded"] = serde_json::to_value(forwarded).expect("a report serialises");
        }
        out(&format!("{}\n", serde_json::to_string_pretty(&document).expect("a report serialises")));
        return;
    }
    if let Some((local, forwarded)) = forwarded {
        for letter in &forwarded.dead_lettered {
            let id = letter.message_id.as_deref().unwrap_or("-");
            out(&format!("dead-lettered {id} ({}): {}\n", letter.source, letter.reason));
        }
        out(&forwarded.summary());
        out(&intercom_line(local));
    }
    out(&format!("Backfill: {}\n", report.summary()));
}

/// 0 when done, 1 when it stopped before the end (or, forwarding here with --strict, something was dead-lettered),
/// 130 when interrupted.
fn status(report: &BackfillReport, strict: bool, forwarded: Option<&Report>) -> ExitCode {
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
fn default_checkpoint(path: &Path) -> PathBuf {
    match path.file_name() {
        Some(name) => {
            let mut name = name.to_os_string();
            name.push(".checkpoint");
            path.with_file_name(name)
        }
        None => PathBuf::from("backfill.checkpoint"),
    }
}

/// Bytes of the archive read, events read, sent, filtered and rejected, the rate and the time left.
fn progress_bar(progress: Arc<Progress>) -> Option<Bar> {
    let started = Instant::now();
    let mut first = true;
    let template = "{bar:30} {percent:>3}% {msg}, {elapsed} elapsed, {eta} left";
    Bar::start(template, Duration::from_millis(200), move |bar| {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        bar.set_length(load(&progress.bytes_total).max(1));
        bar.set_position(load(&progress.bytes_read));
        if std::mem::take(&mut first) {
            // Files done in an earlier run are not this run's speed.
            bar.reset_eta();
        }
        let rate = load(&progress.sent_this_run) as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{} read, {} sent, {} filtered, {} rejected, {:.0} events/s",
            indicatif::HumanCount(load(&progress.events)),
            indicatif::HumanCount(load(&progress.sent)),
            indicatif::HumanCount(load(&progress.filtered)),
            indicatif::HumanCount(load(&progress.rejected)),
            rate
        ));
    })
}
