//! A backfill: archive files streamed a line at a time through the ingest API's validation and normalisation,
//! filtered by the events' time, sent in batches to the events queue (or the local pipeline), with a checkpoint written
//! after every batch the destination confirmed, so that a run stopped any way resumes without sending anything twice.
//!
//! A blocking thread reads and validates (gunzip and JSON are CPU work); the async side sends one batch at a time, in
//! order, so a person's events reach the queue in the order of the archive.

use std::collections::HashSet;
use std::future::Future;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::archive::{self, ArchiveFile, LineError, Lines};
use super::checkpoint::{CHECKPOINT_VERSION, Checkpoint, Place, Run, Start, Totals, prefix_digests};
use super::{Local, LocalError};
use intercom_relay_lambda::envelope::Envelope;
use intercom_relay_lambda::event::{FieldError, format_timestamp, parse_event, timestamp_member};
use intercom_relay_lambda::ingest::oversize;
use intercom_relay_lambda::queue::{Enqueue, MemoryQueue, QueuedMessage, SqsQueue, Unconfirmed};
use intercom_relay_lambda::retry::RetryPolicy;

/// Events per batch sent, and so per checkpoint written.
pub const BATCH_EVENTS: usize = 1000;

/// Lines read between checkpoints when none of them holds an event to send (a stretch outside `--since`/`--until`).
const IDLE_LINES: u64 = 20_000;

/// MessageIds remembered to drop an event that comes again soon after (Segment writes its archive at least once).
const RECENT_IDS: NonZeroUsize = NonZeroUsize::new(100_000).expect("not zero");

/// Rejections listed one by one in the report; the rest are counted.
pub const MAX_LISTED: usize = 1000;

/// How a batch the destination took only in part is tried again before the run stops (after the queue's own retries).
pub const SEND_RETRY: RetryPolicy =
    RetryPolicy { attempts: 6, min_delay: Duration::from_secs(1), max_delay: Duration::from_secs(30) };

/// What to backfill and how.
#[derive(Clone, Debug)]
pub struct BackfillOptions {
    /// Archive files and directories of them (walked recursively, in name order).
    pub paths: Vec<PathBuf>,
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

/// Where a backfill's events go.
pub trait Sink: Sync {
    /// The destination as the checkpoint records it (a resume must go to the same one).
    fn name(&self) -> String;

    /// Whether [`Sink::send`] uses the events' sources (`file:line`); building them costs time.
    fn wants_sources(&self) -> bool {
        false
    }

    /// Sends `messages` in order, confirming each; `sources` is empty unless [`Sink::wants_sources`].
    fn send(
        &self,
        messages: &[QueuedMessage],
        sources: &[String],
    ) -> impl Future<Output = Result<(), Unconfirmed>> + Send;
}

/// The events queue: confirmed is in SQS.
impl Sink for SqsQueue {
    fn name(&self) -> String {
        self.url().to_owned()
    }

    async fn send(&self, messages: &[QueuedMessage], _: &[String]) -> Result<(), Unconfirmed> {
        self.send_each(messages).await
    }
}

/// Nowhere: a check of an archive (every line read and validated, the counts and bad lines reported) that sends nothing.
pub struct DryRun;

/// What a dry run's report names as its destination.
pub const DRY_RUN: &str = "nowhere (--dry-run)";

impl Sink for DryRun {
    fn name(&self) -> String {
        DRY_RUN.to_owned()
    }

    async fn send(&self, _: &[QueuedMessage], _: &[String]) -> Result<(), Unconfirmed> {
        Ok(())
    }
}

/// The local pipeline: confirmed is forwarded to the end (delivered, skipped or dead-lettered).
pub struct InProcess<'a> {
    local: &'a Local,
    queue: MemoryQueue,
    name: String,
}

impl<'a> InProcess<'a> {
    /// Forwards through `local`; `name` says where to, stably across runs (`the built-in sandbox`, a URL).
    pub fn new(local: &'a Local, name: impl Into<String>) -> InProcess<'a> {
        InProcess { local, queue: MemoryQueue::new(), name: name.into() }
    }
}

impl Sink for InProcess<'_> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn wants_sources(&self) -> bool {
        true
    }

    async fn send(&self, messages: &[QueuedMessage], sources: &[String]) -> Result<(), Unconfirmed> {
        let before = self.queue.enqueued();
        self.local.tally.accepted(messages.len());
        // The memory queue always takes what it is given.
        let _ = self.queue.enqueue(messages.to_vec()).await;
        for ((id, message), source) in self.queue.since(before).iter().zip(sources) {
            self.local.tally.origin(id, source, Some(&message.message_id));
        }
        self.local.drain(&self.queue, &AtomicBool::new(true)).await;
        Ok(())
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

/// A line, or one event of it, that was refused.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LineRejection {
    pub file: String,
    /// From 1; 0 when the whole file could not be read.
    pub line: u64,
    /// The event's place in the line's batch, when the line holds one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// What is wrong, each at its path in the event (or the line).
    pub errors: Vec<FieldError>,
}

impl LineRejection {
    /// `archive/1.gz:17 [2]: timestamp: must be an RFC 3339 timestamp …`
    pub fn text(&self) -> String {
        let index = self.index.map(|i| format!(" [{i}]")).unwrap_or_default();
        let errors: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        format!("{}:{}{index}: {}", self.file, self.line, errors.join("; "))
    }
}

/// How a backfill ended.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ending {
    /// Every file was read and every event sent, filtered or refused.
    Finished,
    /// Stopped (SIGINT, SIGTERM) after the batch in flight.
    Interrupted,
    /// `limit` events were sent.
    Limit,
    /// `strict`, and this line was bad: nothing of it or after it was sent.
    BadLine { file: String, line: u64 },
    /// The destination did not confirm a batch, tried again as `retry` says.
    QueueFailed { reason: String },
}

/// What a backfill did.
#[derive(Clone, Debug, Serialize)]
pub struct BackfillReport {
    /// The queue URL, or where the local pipeline forwarded.
    pub destination: String,
    #[serde(flatten)]
    pub ending: Ending,
    /// Archive files, and files the directory walks passed over (not .gz, .ndjson or .jsonl).
    pub files: usize,
    pub passed_over: usize,
    pub checkpoint: Option<PathBuf>,
    /// Where this run started, when it resumed an earlier one: `archive/x.gz after line 5000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<String>,
    /// Where the next run starts, when this one did not finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Over the whole backfill (earlier runs included), as far as confirmed.
    pub totals: Totals,
    /// Events sent by this run, and how long it took.
    pub sent_this_run: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// This run's refused lines and events (the first [`MAX_LISTED`]), and how many more there were.
    pub rejected: Vec<LineRejection>,
    pub rejected_not_listed: u64,
}

impl BackfillReport {
    /// The counts in a sentence or two.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let sent = if self.destination == DRY_RUN {
            format!("{} valid (--dry-run: nothing sent)", t.sent)
        } else {
            format!("{} sent to {}", t.sent, self.destination)
        };
        let mut out = format!(
            "{} files, {} lines, {} events: {sent}, {} outside --since/--until, {} rejected, {} duplicates dropped",
            self.files, t.lines, t.events, t.filtered, t.rejected, t.duplicates
        );
        if self.resumed_at.is_some() {
            out.push_str(" (over every run)");
        }
        let verb = if self.destination == DRY_RUN { "found" } else { "sent" };
        out.push_str(&format!(
            "; this run {verb} {} in {:.1} s ({:.0} events/s).",
            self.sent_this_run, self.seconds, self.events_per_second
        ));
        if let Some(at) = &self.resumed_at {
            out.push_str(&format!(" Resumed {at}."));
        }
        if self.passed_over > 0 {
            out.push_str(&format!(
                " Passed over {} files that are not archives (.gz, .ndjson, .jsonl).",
                self.passed_over
            ));
        }
        out
    }

    /// What stopped the run and how to go on, when it did not finish.
    pub fn next_step(&self) -> Option<String> {
        let resume = match (&self.checkpoint, &self.stopped_at) {
            (Some(checkpoint), Some(at)) => {
                format!(
                    "the checkpoint {} holds the place ({at}): run the same command to resume",
                    checkpoint.display()
                )
            }
            _ => "no checkpoint was kept (--checkpoint PATH keeps one)".to_owned(),
        };
        Some(match &self.ending {
            Ending::Finished => return None,
            Ending::Interrupted => {
                format!("Interrupted after {} events sent in this run; {resume}.", self.sent_this_run)
            }
            Ending::Limit => format!(
                "Stopped after {} events (--limit); {resume}, without --limit to send the rest.",
                self.sent_this_run
            ),
            Ending::BadLine { file, line } => format!(
                "Stopped at {file}:{line} (--strict): nothing of that line or after it was sent. Fix or remove the \
                 line, or run without --strict to pass over bad lines; {resume}."
            ),
            Ending::QueueFailed { reason } => {
                format!("Stopped: {} did not take the events ({reason}); {resume}.", { &self.destination })
            }
        })
    }
}

/// How far the archive is done: the first `file` files, then `lines` lines of the next; `sent` holds events of later
/// lines the destination confirmed already.
#[derive(Clone, Debug, Default)]
struct Position {
    file: usize,
    lines: u64,
    sent: Vec<String>,
}

/// What the reader hands the sender: events of whole lines, in archive order.
struct Chunk {
    messages: Vec<QueuedMessage>,
    sources: Vec<String>,
    rejections: Vec<LineRejection>,
    /// How far the archive is done once these are confirmed.
    end: Position,
    /// The reader's counts at `end`: `sent` counts only events the queue held before this run.
    counts: Totals,
    /// The reader stopped here, and why.
    last: Option<Ending>,
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
    let (files, passed_over) = archive::archive_files(&options.paths)?;
    if files.is_empty() {
        let paths: Vec<String> = options.paths.iter().map(|p| p.display().to_string()).collect();
        return Err(LocalError::Usage(format!("no .gz, .ndjson or .jsonl files in {}", paths.join(", "))));
    }
    // Two runs of one backfill at once would send its events twice.
    let _lock = match &options.checkpoint {
        Some(path) => Some(lock(path)?),
        None => None,
    };
    let digests = prefix_digests(&files);
    let run = Run {
        paths: options.paths.iter().map(|p| p.display().to_string()).collect(),
        destination: sink.name(),
        since: options.since.map(format_timestamp),
        until: options.until.map(format_timestamp),
    };
    let start = match &options.checkpoint {
        Some(path) => match Checkpoint::load(path).map_err(LocalError::Usage)? {
            Some(checkpoint) => checkpoint.start(&run, &files, &digests, path).map_err(LocalError::Usage)?,
            None => Start::default(),
        },
        None => Start::default(),
    };
    let resumed_at = start.resumed.then(|| place_text(&files, start.file, start.lines));
    let saver = Saver { path: options.checkpoint.clone(), run, files: &files, digests: &digests };
    // Written before anything is sent: a checkpoint that cannot be written stops the run now, not after a batch.
    let mut confirmed = Position { file: start.file, lines: start.lines, sent: start.sent.clone() };
    let mut totals = start.totals;
    saver.save(&confirmed, &totals, false)?;

    progress.bytes_total.store(files.iter().map(|f| f.bytes).sum(), Ordering::Relaxed);
    progress.bytes_read.store(files[..start.file].iter().map(|f| f.bytes).sum(), Ordering::Relaxed);
    for (counter, value) in [
        (&progress.events, totals.events),
        (&progress.sent, totals.sent),
        (&progress.filtered, totals.filtered),
        (&progress.rejected, totals.rejected),
    ] {
        counter.store(value, Ordering::Relaxed);
    }

    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let halt = Arc::new(AtomicBool::new(false));
    let reader = Reader {
        files: files.clone(),
        start,
        since: options.since,
        until: options.until,
        strict: options.strict,
        limit: options.limit,
        batch: options.batch.max(1),
        sources: sink.wants_sources(),
        progress: progress.clone(),
        halt: halt.clone(),
        now: OffsetDateTime::now_utc(),
    };
    let reading = tokio::task::spawn_blocking(move || reader.run(tx));

    let mut rejected = Vec::new();
    let mut rejected_not_listed = 0;
    let mut sent_this_run = 0;
    let mut ending = Ending::Interrupted;
    loop {
        // A stop is heard while the reader is still on its way to a chunk (skipping to a resume's place, say).
        let chunk = tokio::select! {
            chunk = rx.recv() => chunk,
            () = stopped(&stop) => None,
        };
        let Some(chunk) = chunk else { break };
        for rejection in chunk.rejections {
            on_rejected(&rejection);
            if rejected.len() < MAX_LISTED {
                rejected.push(rejection);
            } else {
                rejected_not_listed += 1;
            }
        }
        match send(sink, &chunk.messages, &chunk.sources, &options.retry, &progress, &stop).await {
            Ok(()) => {}
            Err((confirmed_ids, reason)) => {
                sent_this_run += confirmed_ids.len() as u64;
                confirmed.sent.extend(confirmed_ids);
                saver.save(&confirmed, &totals, false)?;
                if !stop.load(Ordering::Acquire) {
                    ending = Ending::QueueFailed { reason };
                }
                break;
            }
        }
        sent_this_run += chunk.messages.len() as u64;
        progress.sent_this_run.store(sent_this_run, Ordering::Relaxed);
        totals = Totals { sent: chunk.counts.sent + sent_this_run, ..chunk.counts };
        confirmed = chunk.end;
        let finished = chunk.last == Some(Ending::Finished);
        saver.save(&confirmed, &totals, finished)?;
        if let Some(last) = chunk.last {
            ending = last;
            break;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
    }
    // The reader stops at its next line, or once nothing receives its chunks.
    halt.store(true, Ordering::Release);
    drop(rx);
    if let Err(error) = reading.await
        && error.is_panic()
    {
        return Err(LocalError::Io(format!(
            "reading the archive failed ({error}); the checkpoint holds the place: {}",
            place_text(&files, confirmed.file, confirmed.lines)
        )));
    }
    let seconds = began.elapsed().as_secs_f64();
    Ok(BackfillReport {
        destination: saver.run.destination.clone(),
        stopped_at: (ending != Ending::Finished).then(|| place_text(&files, confirmed.file, confirmed.lines)),
        ending,
        files: files.len(),
        passed_over,
        checkpoint: options.checkpoint,
        resumed_at,
        totals,
        sent_this_run,
        seconds,
        events_per_second: if seconds > 0.0 { sent_this_run as f64 / seconds } else { 0.0 },
        rejected,
        rejected_not_listed,
    })
}

/// Returns once `stop` is set.
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Holds `<checkpoint>.lock` for the run: a second run of the same backfill is refused while the first goes on. The
/// file stays when the run ends (removing it would let two later runs lock two different files).
fn lock(checkpoint: &std::path::Path) -> Result<std::fs::File, LocalError> {
    let mut name = checkpoint.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    let path = checkpoint.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LocalError::Io(format!("cannot write the checkpoint's lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LocalError::Usage(format!(
            "another run of this backfill is under way (it holds {}): wait for it, or stop it with Ctrl-C",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LocalError::Io(format!("cannot lock the checkpoint's lock file {}: {e}", path.display())))
        }
    }
}

/// Sends one chunk, trying again what the destination did not confirm; `Err` holds the messageIds it confirmed (the
/// rest of the chunk is not confirmed) and why it stopped.
async fn send<S: Sink>(
    sink: &S,
    messages: &[QueuedMessage],
    sources: &[String],
    retry: &RetryPolicy,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<(), (Vec<String>, String)> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut confirmed = Vec::new();
    let mut delays = retry.delays();
    loop {
        let result = if pending.len() == messages.len() {
            sink.send(messages, sources).await
        } else {
            let subset: Vec<QueuedMessage> = pending.iter().map(|&i| messages[i].clone()).collect();
            let labels: Vec<String> = pending.iter().filter_map(|&i| sources.get(i).cloned()).collect();
            sink.send(&subset, &labels).await
        };
        let Err(Unconfirmed { confirmed: flags, reason }) = result else {
            progress.sent.fetch_add(pending.len() as u64, Ordering::Relaxed);
            return Ok(());
        };
        let mut still = Vec::new();
        for (&index, sent) in pending.iter().zip(flags) {
            if sent {
                confirmed.push(messages[index].message_id.clone());
                progress.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                still.push(index);
            }
        }
        pending = still;
        match delays.next() {
            Some(delay) if !stop.load(Ordering::Acquire) => {
                tracing::warn!(
                    unconfirmed = pending.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    %reason,
                    "The queue did not take a batch; trying again."
                );
                tokio::time::sleep(delay).await;
            }
            _ => return Err((confirmed, reason)),
        }
    }
}

/// Writes the checkpoint, when one is kept.
struct Saver<'a> {
    path: Option<PathBuf>,
    run: Run,
    files: &'a [ArchiveFile],
    digests: &'a [String],
}

impl Saver<'_> {
    fn save(&self, at: &Position, totals: &Totals, finished: bool) -> Result<(), LocalError> {
        let Some(path) = &self.path else { return Ok(()) };
        let current = self.files.get(at.file).filter(|_| at.lines > 0 || !at.sent.is_empty()).map(|file| Place {
            path: file.path.display().to_string(),
            bytes: file.bytes,
            lines: at.lines,
            sent: at.sent.clone(),
        });
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            run: self.run.clone(),
            files_done: at.file,
            files_digest: self.digests[at.file].clone(),
            last_done: at.file.checked_sub(1).map(|i| self.files[i].path.display().to_string()),
            current,
            finished,
            totals: *totals,
            updated_at: format_timestamp(OffsetDateTime::now_utc()),
        };
        checkpoint.save(path).map_err(|e| {
            LocalError::Io(format!(
                "cannot write the checkpoint {}: {e}; events up to {} are sent",
                path.display(),
                place_text(self.files, at.file, at.lines)
            ))
        })
    }
}

/// `archive/x.gz after line 5000`, `the start of archive/y.gz`, `the end of the archive`.
fn place_text(files: &[ArchiveFile], file: usize, lines: u64) -> String {
    match files.get(file) {
        None => "the end of the archive".to_owned(),
        Some(f) if lines == 0 => format!("the start of {}", f.path.display()),
        Some(f) => format!("{} after line {lines}", f.path.display()),
    }
}

/// Reads the archive from `start` on a blocking thread, handing chunks of whole lines to the sender.
struct Reader {
    files: Vec<ArchiveFile>,
    start: Start,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    strict: bool,
    limit: Option<u64>,
    batch: usize,
    sources: bool,
    progress: Arc<Progress>,
    /// Set when the sender stops: nothing more is read.
    halt: Arc<AtomicBool>,
    /// The receipt time of events that carry none (nor a `sentAt`), as the ingest API would give them.
    now: OffsetDateTime,
}

/// What one line gave.
#[derive(Default)]
struct LineResult {
    messages: Vec<QueuedMessage>,
    sources: Vec<String>,
    rejections: Vec<LineRejection>,
    counts: Totals,
}

impl Reader {
    fn run(self, tx: mpsc::Sender<Chunk>) {
        let mut counts = self.start.totals;
        let mut carried: HashSet<String> = self.start.sent.iter().cloned().collect();
        let mut recent: LruCache<String, ()> = LruCache::new(RECENT_IDS);
        let mut chunk = self.chunk(Position { file: self.start.file, lines: self.start.lines, sent: vec![] }, counts);
        let mut produced = 0u64;
        let mut idle = 0u64;
        let mut line = Vec::with_capacity(4096);
        // Events past the chunk's end that the queue holds already go with it (a chunk may end before meeting them).
        let emit = |mut chunk: Chunk, carried: &HashSet<String>| {
            chunk.end.sent = carried.iter().cloned().collect();
            tx.blocking_send(chunk).is_ok()
        };
        for index in self.start.file..self.files.len() {
            let file = &self.files[index];
            let name = file.path.display().to_string();
            let skip = if index == self.start.file { self.start.lines } else { 0 };
            let bad = |line: u64, message: String| LineRejection {
                file: name.clone(),
                line,
                index: None,
                message_id: None,
                errors: vec![FieldError::new("", message)],
            };
            let mut lines = match Lines::open(file, self.progress.bytes_read.clone()) {
                Ok(lines) => Some(lines),
                Err(e) => {
                    let mut result = LineResult::default();
                    result.rejections.push(bad(0, format!("cannot be read: {e}")));
                    result.counts.rejected += 1;
                    if self.strict {
                        chunk.rejections.extend(result.rejections);
                        chunk.last = Some(Ending::BadLine { file: name, line: 0 });
                        emit(chunk, &carried);
                        return;
                    }
                    self.commit(&mut chunk, &mut counts, result);
                    None
                }
            };
            while let Some(reader) = lines.as_mut() {
                if self.halt.load(Ordering::Acquire) {
                    return;
                }
                let result = match reader.next_line(&mut line) {
                    Ok(false) => break,
                    // Lines before the checkpoint's place were counted by the run that read them.
                    Ok(true) | Err(LineError::TooLong) if reader.number() <= skip => continue,
                    Ok(true) => self.line(&name, reader.number(), &line, &mut carried, &mut recent),
                    Err(LineError::TooLong) => LineResult {
                        rejections: vec![bad(
                            reader.number(),
                            format!("is over {} bytes: not read", archive::MAX_LINE_BYTES),
                        )],
                        counts: Totals { lines: 1, rejected: 1, ..Totals::default() },
                        ..LineResult::default()
                    },
                    Err(LineError::Broken(e)) => {
                        // Nothing after this can be read: the file counts as done once what came before is sent.
                        let message = format!("the file cannot be read past line {}: {e}", reader.number());
                        let result = LineResult {
                            rejections: vec![bad(reader.number() + 1, message)],
                            counts: Totals { rejected: 1, ..Totals::default() },
                            ..LineResult::default()
                        };
                        lines = None;
                        result
                    }
                };
                let number = lines.as_ref().map_or(0, Lines::number);
                if self.strict && !result.rejections.is_empty() {
                    let at = result.rejections[0].line;
                    chunk.rejections.extend(result.rejections);
                    chunk.last = Some(Ending::BadLine { file: name, line: at });
                    emit(chunk, &carried);
                    return;
                }
                let sending = !result.messages.is_empty();
                produced += result.messages.len() as u64;
                self.commit(&mut chunk, &mut counts, result);
                if lines.is_some() {
                    chunk.end = Position { file: index, lines: number, sent: Vec::new() };
                }
                idle = if sending { 0 } else { idle + 1 };
                if self.limit.is_some_and(|limit| produced >= limit) {
                    chunk.last = Some(Ending::Limit);
                    emit(chunk, &carried);
                    return;
                }
                if chunk.messages.len() >= self.batch || idle >= IDLE_LINES {
                    idle = 0;
                    let next = self.chunk(chunk.end.clone(), counts);
                    if !emit(std::mem::replace(&mut chunk, next), &carried) {
                        return;
                    }
                }
            }
            chunk.end = Position { file: index + 1, lines: 0, sent: Vec::new() };
        }
        chunk.last = Some(Ending::Finished);
        emit(chunk, &carried);
    }

    fn chunk(&self, end: Position, counts: Totals) -> Chunk {
        Chunk {
            messages: Vec::with_capacity(self.batch + 16),
            sources: Vec::new(),
            rejections: Vec::new(),
            end,
            counts,
            last: None,
        }
    }

    fn commit(&self, chunk: &mut Chunk, counts: &mut Totals, result: LineResult) {
        let c = result.counts;
        for (total, add, live) in [
            (&mut counts.lines, c.lines, None),
            (&mut counts.events, c.events, Some(&self.progress.events)),
            (&mut counts.sent, c.sent, Some(&self.progress.sent)),
            (&mut counts.filtered, c.filtered, Some(&self.progress.filtered)),
            (&mut counts.rejected, c.rejected, Some(&self.progress.rejected)),
            (&mut counts.duplicates, c.duplicates, None),
        ] {
            *total += add;
            if let Some(live) = live {
                live.fetch_add(add, Ordering::Relaxed);
            }
        }
        chunk.counts = *counts;
        chunk.messages.extend(result.messages);
        chunk.sources.extend(result.sources);
        chunk.rejections.extend(result.rejections);
    }

    /// Validates and normalises the events of line `number` of `file` as the ingest API does, and filters them.
    fn line(
        &self,
        file: &str,
        number: u64,
        bytes: &[u8],
        carried: &mut HashSet<String>,
        recent: &mut LruCache<String, ()>,
    ) -> LineResult {
        let mut result = LineResult { counts: Totals { lines: 1, ..Totals::default() }, ..LineResult::default() };
        let refuse = |result: &mut LineResult, index: Option<usize>, message_id: Option<String>, errors| {
            result.counts.rejected += 1;
            result.rejections.push(LineRejection { file: file.to_owned(), line: number, index, message_id, errors });
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.trim_start_matches('\u{feff}').trim(),
            Err(e) => {
                let message = format!("is not UTF-8 text (the first bad byte is at offset {})", e.valid_up_to());
                refuse(&mut result, None, None, vec![FieldError::new("", message)]);
                return result;
            }
        };
        if text.is_empty() {
            return result;
        }
        let record = match archive::record(text) {
            Ok(record) => record,
            Err(error) => {
                refuse(&mut result, None, None, vec![error]);
                return result;
            }
        };
        let in_batch = record.batch.events.len() > 1 || record.shape != archive::Shape::Event;
        for (index, raw) in record.batch.events.iter().enumerate() {
            result.counts.events += 1;
            let place = in_batch.then_some(index);
            // When the CDP received it: its own receivedAt, else its record's, else when it was sent (no network
            // delay), else now, as the ingest API would. Skew correction measures from this, so it must be the past.
            let received_at = match timestamp_member(raw.member("receivedAt"), "receivedAt") {
                Ok(Some(at)) => at,
                Ok(None) => record
                    .received_at
                    .or_else(|| timestamp_member(raw.member("sentAt"), "sentAt").ok().flatten())
                    .or(record.batch.defaults.sent_at)
                    .unwrap_or(self.now),
                Err(error) => {
                    let message_id = raw.member("messageId").and_then(|m| serde_json::from_str(m.get()).ok());
                    refuse(&mut result, place, message_id, vec![error]);
                    continue;
                }
            };
            let mut event = match parse_event(raw, None, &record.batch.defaults, received_at) {
                Ok(event) => event,
                Err(refusal) => {
                    refuse(&mut result, place, refusal.message_id, refusal.errors);
                    continue;
                }
            };
            if self.since.is_some_and(|since| event.timestamp < since)
                || self.until.is_some_and(|until| event.timestamp >= until)
            {
                result.counts.filtered += 1;
                continue;
            }
            if !raw.has_message_id() {
                // The same id on every run, so that a resume (and SQS's deduplication) knows the event again.
                event.message_id = derived_id(file, number, index, text);
            }
            if carried.remove(&event.message_id) {
                // Confirmed by the queue in the run this resumes: a repeat of it later is a duplicate.
                recent.put(event.message_id.clone(), ());
                result.counts.sent += 1;
                continue;
            }
            if recent.put(event.message_id.clone(), ()).is_some() {
                result.counts.duplicates += 1;
                continue;
            }
            let message = QueuedMessage::new(Envelope::server(event));
            if let Some(error) = oversize(&message) {
                refuse(&mut result, place, Some(message.message_id), vec![error]);
                continue;
            }
            if self.sources {
                let index = place.map(|i| format!(" [{i}]")).unwrap_or_default();
                result.sources.push(format!("{file}:{number}{index}"));
            }
            result.messages.push(message);
        }
        result
    }
}

/// A messageId for an archived event that has none: from its file's name, its place and its text.
fn derived_id(file: &str, line: u64, index: usize, text: &str) -> String {
    let name = std::path::Path::new(file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(format!("{name}:{line}:{index}:").as_bytes());
    hasher.update(text.as_bytes());
    let digest = hasher.finalize();
    format!("backfill-{}", intercom_relay_lambda::hex(&digest[..16]))
}

/// Reads `--since`/`--until`: an RFC 3339 time, or a date (`2025-01-01`, its midnight UTC).
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    if let Some(at) = intercom_relay_lambda::event::parse_timestamp(text.trim()) {
        return Ok(at);
    }
    let date = || {
        let mut parts = text.trim().splitn(3, '-');
        let mut next = || parts.next().filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let (year, month, day) = (next()?.parse().ok()?, next()?.parse::<u8>().ok()?, next()?.parse().ok()?);
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
    };
    date()
        .map(|date| date.midnight().assume_utc())
        .ok_or_else(|| format!("`{text}` is neither an RFC 3339 time (2025-01-01T00:00:00Z) nor a date (2025-01-01)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_dates_at_midnight_utc() {
        assert_eq!(format_timestamp(parse_time("2025-01-31").unwrap()), "2025-01-31T00:00:00.000Z");
        assert_eq!(format_timestamp(parse_time("2025-01-31T10:00:00+02:00").unwrap()), "2025-01-31T08:00:00.000Z");
        assert!(parse_time("31/01/2025").unwrap_err().contains("neither an RFC 3339 time"));
    }

    #[test]
    fn a_derived_id_is_the_same_for_the_same_line_and_another_for_another() {
        let id = derived_id("archive/a/1.gz", 3, 0, "{}");
        assert_eq!(id, derived_id("elsewhere/1.gz", 3, 0, "{}"), "the directory does not count");
        assert_ne!(id, derived_id("archive/a/1.gz", 4, 0, "{}"));
        assert!(id.starts_with("backfill-") && id.len() == 41, "{id}");
    }
}
