//! A backfill's options and its driver: the reader's chunks sent in order, a checkpoint written after each confirmed.
//!
//! A backfill streams archive files a line at a time through the ingest API's validation and normalisation, filtered
//! by the events' time, sent in batches to the events queue (or the local pipeline), with a checkpoint written after
//! every batch the destination confirmed, so that a run stopped any way resumes without sending anything twice.
//!
//! A blocking thread reads and validates (gunzip and JSON are CPU work); the async side sends one batch at a time, in
//! order, so a person's events reach the queue in the order of the archive.

mod line;
mod place;
mod reader;
mod report;
mod sink;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::LocalError;
use super::archive::{self, ArchiveFile};
use super::checkpoint::{Checkpoint, Run, Start, Totals, prefix_digests};
use intercom_relay_lambda::event::format_timestamp;
use intercom_relay_lambda::retry::RetryPolicy;
use place::{Position, Saver, lock, place_text};
use reader::{Chunk, Reader};
use report::Rejections;

pub use report::{BackfillReport, Ending, LineRejection, MAX_LISTED};
pub use sink::{DRY_RUN, DryRun, InProcess, SEND_RETRY, Sink};

/// Events per batch sent, and so per checkpoint written.
pub const BATCH_EVENTS: usize = 1000;

/// What to backfill and how.
#[derive(Clone, Debug)]
pub struct BackfillOptions {
    /// Archive files and directories of them (walked recursively, in name order).
    pub(crate) paths: Vec<PathBuf>,
    /// Only events at or after this time (their `timestamp` as the ingest API normalises it).
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// Where the checkpoint is kept; none: the run cannot be resumed.
    pub checkpoint: Option<PathBuf>,
    /// Stop at the first bad line (else bad lines are reported and passed over).
    pub strict: bool,
    /// Stop once this many events were sent in this run (at the end of the line that reaches it).
    pub limit: Option<u64>,
    pub retry: RetryPolicy,
    /// Events per batch.
    pub batch: usize,
}

impl BackfillOptions {
    pub fn new(paths: Vec<PathBuf>) -> BackfillOptions {
        BackfillOptions {
            paths,
            since: None,
            until: None,
            checkpoint: None,
            strict: false,
            limit: None,
            retry: SEND_RETRY,
            batch: BATCH_EVENTS,
        }
    }
}

/// Counters a progress bar reads while a backfill runs (over the whole backfill, earlier runs included).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the archive's files (compressed), and of those read so far (files done in earlier runs included).
    pub bytes_total: AtomicU64,
    pub bytes_read: Arc<AtomicU64>,
    pub events: AtomicU64,
    pub sent: AtomicU64,
    pub filtered: AtomicU64,
    pub rejected: AtomicU64,
    /// Events sent in this run (for its rate).
    pub sent_this_run: AtomicU64,
}

impl Progress {
    /// Sets the counters to where a run over `files` starts: `start`.
    fn start_at(&self, files: &[ArchiveFile], start: &Start) {
        self.bytes_total.store(files.iter().map(|f| f.bytes).sum(), Ordering::Relaxed);
        self.bytes_read.store(files[..start.file].iter().map(|f| f.bytes).sum(), Ordering::Relaxed);
        for (counter, value) in [
            (&self.events, start.totals.events),
            (&self.sent, start.totals.sent),
            (&self.filtered, start.totals.filtered),
            (&self.rejected, start.totals.rejected),
        ] {
            counter.store(value, Ordering::Relaxed);
        }
    }
}

/// Runs a backfill of `options.paths` into `sink`. `stop` (set on SIGINT) ends it after the batch in flight;
/// `on_rejected` hears of each bad line as it is met; `progress` is updated as it goes.
pub async fn backfill<S: Sink>(
    options: BackfillOptions,
    sink: &S,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    on_rejected: &(dyn Fn(&LineRejection) + Sync),
) -> Result<BackfillReport, LocalError> {
    let began = Instant::now();
    let setup = Setup::new(&options, sink)?;
    let saver = setup.saver(options.checkpoint.clone());
    let mut done = Done::new(&setup.start);
    // Written before anything is sent: a checkpoint that cannot be written stops the run now, not after a batch.
    saver.save(&done.confirmed, &done.totals, false)?;
    progress.start_at(&setup.files, &setup.start);

    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let halt = Arc::new(AtomicBool::new(false));
    let (files, start, sources) = (setup.files.clone(), setup.start.clone(), sink.wants_sources());
    let reader = Reader::new(&options, files, start, sources, progress.clone(), halt.clone());
    let reading = tokio::task::spawn_blocking(move || reader.run(tx));
    let sending = Sending { sink, retry: &options.retry, progress: &progress, stop: &stop, on_rejected, saver };
    let ending = sending.all(&mut rx, &mut done).await?;

    // The reader stops at its next line, or once nothing receives its chunks.
    halt.store(true, Ordering::Release);
    drop(rx);
    if let Err(error) = reading.await
        && error.is_panic()
    {
        return Err(LocalError::Io(format!(
            "reading the archive failed ({error}); the checkpoint holds the place: {}",
            place_text(&setup.files, done.confirmed.file, done.confirmed.lines)
        )));
    }
    Ok(done.report(ending, &setup, options.checkpoint, began))
}

/// What a run reads and where it starts, found before anything is read.
struct Setup {
    files: Vec<ArchiveFile>,
    passed_over: usize,
    digests: Vec<String>,
    run: Run,
    start: Start,
    /// Held until the run ends.
    _lock: Option<std::fs::File>,
}

impl Setup {
    /// The archive's files, the checkpoint's lock taken, and the place the checkpoint holds (the start when none).
    fn new<S: Sink>(options: &BackfillOptions, sink: &S) -> Result<Setup, LocalError> {
        let (files, passed_over) = archive::archive_files(&options.paths)?;
        if files.is_empty() {
            let paths: Vec<String> = options.paths.iter().map(|p| p.display().to_string()).collect();
            return Err(LocalError::Usage(format!("no .gz, .ndjson or .jsonl files in {}", paths.join(", "))));
        }
        // Two runs of one backfill at once would send its events twice.
        let _lock = options.checkpoint.as_deref().map(lock).transpose()?;
        let digests = prefix_digests(&files);
        let run = Run {
            paths: options.paths.iter().map(|p| p.display().to_string()).collect(),
            destination: sink.name(),
            since: options.since.map(format_timestamp),
            until: options.until.map(format_timestamp),
        };
        let start = match &options.checkpoint {
            Some(path) => match Checkpoint::load(path).map_err(LocalError::Usage)? {
                Some(checkpoint) => checkpoint
                    .start(&run, &files, &digests, path)
                    .map_err(|error| LocalError::Usage(error.to_string()))?,
                None => Start::default(),
            },
            None => Start::default(),
        };
        Ok(Setup { files, passed_over, digests, run, start, _lock })
    }

    /// What writes the checkpoint at `path`, when one is kept.
    fn saver(&self, path: Option<PathBuf>) -> Saver<'_> {
        Saver { path, run: self.run.clone(), files: &self.files, digests: &self.digests }
    }
}

/// What this run has had confirmed, and the rejections it met.
struct Done {
    confirmed: Position,
    totals: Totals,
    sent_this_run: u64,
    rejected: Rejections,
}

impl Done {
    fn new(start: &Start) -> Done {
        let confirmed = Position { file: start.file, lines: start.lines, sent: start.sent.clone() };
        Done { confirmed, totals: start.totals, sent_this_run: 0, rejected: Rejections::default() }
    }

    /// The report of a run set up as `setup` that began at `began` and ended with `ending`.
    fn report(self, ending: Ending, setup: &Setup, checkpoint: Option<PathBuf>, began: Instant) -> BackfillReport {
        let seconds = began.elapsed().as_secs_f64();
        let (files, start, confirmed) = (&setup.files, &setup.start, &self.confirmed);
        BackfillReport {
            destination: setup.run.destination.clone(),
            stopped_at: (ending != Ending::Finished).then(|| place_text(files, confirmed.file, confirmed.lines)),
            ending,
            files: files.len(),
            passed_over: setup.passed_over,
            checkpoint,
            resumed_at: start.resumed.then(|| place_text(files, start.file, start.lines)),
            totals: self.totals,
            sent_this_run: self.sent_this_run,
            seconds,
            events_per_second: if seconds > 0.0 { self.sent_this_run as f64 / seconds } else { 0.0 },
            rejected: self.rejected.listed,
            rejected_not_listed: self.rejected.not_listed,
        }
    }
}

/// The sending side of a run: each chunk's rejections told, its events sent, its end checkpointed once confirmed.
struct Sending<'a, S> {
    sink: &'a S,
    retry: &'a RetryPolicy,
    progress: &'a Progress,
    stop: &'a AtomicBool,
    on_rejected: &'a (dyn Fn(&LineRejection) + Sync),
    saver: Saver<'a>,
}

impl<S: Sink> Sending<'_, S> {
    /// Takes the reader's chunks until the last, a stop or a batch the destination did not take: how the run ended.
    async fn all(&self, rx: &mut mpsc::Receiver<Chunk>, done: &mut Done) -> Result<Ending, LocalError> {
        loop {
            // A stop is heard while the reader is still on its way to a chunk (skipping to a resume's place, say).
            let chunk = tokio::select! {
                chunk = rx.recv() => chunk,
                () = stopped(self.stop) => None,
            };
            let Some(chunk) = chunk else { return Ok(Ending::Interrupted) };
            if let Some(ending) = self.one(chunk, done).await? {
                return Ok(ending);
            }
            if self.stop.load(Ordering::Acquire) {
                return Ok(Ending::Interrupted);
            }
        }
    }

    /// Sends one chunk and checkpoints what was confirmed: how the run ended, when it did.
    async fn one(&self, chunk: Chunk, done: &mut Done) -> Result<Option<Ending>, LocalError> {
        for rejection in chunk.rejections {
            (self.on_rejected)(&rejection);
            done.rejected.add(rejection);
        }
        let sent = sink::send(self.sink, &chunk.messages, &chunk.sources, self.retry, self.progress, self.stop).await;
        if let Err((confirmed, reason)) = sent {
            done.sent_this_run += confirmed.len() as u64;
            done.confirmed.sent.extend(confirmed);
            self.saver.save(&done.confirmed, &done.totals, false)?;
            let stopped = self.stop.load(Ordering::Acquire);
            return Ok(Some(if stopped { Ending::Interrupted } else { Ending::QueueFailed { reason } }));
        }
        done.sent_this_run += chunk.messages.len() as u64;
        self.progress.sent_this_run.store(done.sent_this_run, Ordering::Relaxed);
        done.totals = Totals { sent: chunk.counts.sent + done.sent_this_run, ..chunk.counts };
        done.confirmed = chunk.end;
        let finished = chunk.last == Some(Ending::Finished);
        self.saver.save(&done.confirmed, &done.totals, finished)?;
        Ok(chunk.last)
    }
}

/// Returns once `stop` is set.
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `--since`/`--until` that is neither an RFC 3339 time nor a date.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is neither an RFC 3339 time (2025-01-01T00:00:00Z) nor a date (2025-01-01)")]
pub struct TimeError(String);

/// Reads `--since`/`--until`: an RFC 3339 time, or a date (`2025-01-01`, its midnight UTC).
pub fn parse_time(text: &str) -> Result<OffsetDateTime, TimeError> {
    if let Some(at) = intercom_relay_lambda::event::parse_timestamp(text.trim()) {
        return Ok(at);
    }
    let date = || {
        let mut parts = text.trim().splitn(3, '-');
        let mut next = || parts.next().filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let (year, month, day) = (next()?.parse().ok()?, next()?.parse::<u8>().ok()?, next()?.parse().ok()?);
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
    };
    date().map(|date| date.midnight().assume_utc()).ok_or_else(|| TimeError(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_dates_at_midnight_utc() {
        assert_eq!(format_timestamp(parse_time("2025-01-31").unwrap()), "2025-01-31T00:00:00.000Z");
        assert_eq!(format_timestamp(parse_time("2025-01-31T10:00:00+02:00").unwrap()), "2025-01-31T08:00:00.000Z");
        let error = parse_time("31/01/2025").unwrap_err().to_string();
        assert_eq!(error, "`31/01/2025` is neither an RFC 3339 time (2025-01-01T00:00:00Z) nor a date (2025-01-01)");
    }
}
