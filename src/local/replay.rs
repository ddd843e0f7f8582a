//! `intercom-relay replay`: files through the ingest validation, an in-memory queue and the forwarder.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use time::OffsetDateTime;

use super::backfill::{BackfillOptions, BackfillReport, InProcess, LineRejection, Progress, backfill};
use super::input::{self, Input};
use super::{Destination, Local, LocalDeadLetter, LocalError, RejectedInput, Tally};
use intercom_relay_lambda::envelope::Envelope;
use intercom_relay_lambda::envelope::KeyKind;
use intercom_relay_lambda::event::{Rejected, parse_batch, parse_single};
use intercom_relay_lambda::ingest::{
    AllowedOrigins, CorsHeaders, Ingest, IngestError, IngestOptions, Route, WriteKeys, accept_events,
};
use intercom_relay_lambda::queue::MemoryDeadLetter;
use intercom_relay_lambda::queue::{Enqueue, MemoryQueue, SqsRecordExt};

/// What to replay and where to.
pub struct ReplayOptions {
    /// Files and directories (walked recursively).
    pub paths: Vec<PathBuf>,
    pub destination: Destination,
    /// Keys the function-URL requests among the files must carry.
    pub write_keys: WriteKeys,
}

/// Reads every file (all of them first: a file that cannot be read stops the run before anything is sent), then runs
/// their events through the pipeline until each is delivered, skipped or dead-lettered. Returns the forwarding half,
/// whose sandbox can still be looked at; the tally holds the report.
pub async fn replay(
    options: ReplayOptions,
    env: impl Fn(&str) -> Option<String>,
    tally: Arc<Tally>,
) -> Result<Local, LocalError> {
    let inputs = read_inputs(&options.paths)?;
    let dead_letter = LocalDeadLetter::Memory(MemoryDeadLetter::new());
    let local = Local::start(&options.destination, env, tally.clone(), dead_letter).await?;
    let ingest = Ingest::new(
        IngestOptions {
            write_keys: options.write_keys,
            allowed_origins: AllowedOrigins::Any,
            cors_headers: CorsHeaders::Ours,
        },
        MemoryQueue::new(),
    );
    let files = Files { ingest: &ingest, tally: &tally };
    // Events are forwarded once every file is in the queue; an SQS event's records come after the events before them.
    let drained = AtomicBool::new(true);
    for (path, input) in inputs {
        let source = path.display().to_string();
        tracing::info!(file = %source, shape = %input.describe(), "Replaying.");
        match input {
            Input::Event(text) => files.raw(&source, parse_single(&text), false).await,
            Input::Batch(text) => files.raw(&source, parse_batch(&text), true).await,
            Input::Array(events) => {
                for (index, text) in events.iter().enumerate() {
                    files.raw(&format!("{source} [{index}]"), parse_single(text), false).await;
                }
            }
            Input::Ndjson(lines) => {
                for line in &lines {
                    let parsed = if line.batch { parse_batch(&line.text) } else { parse_single(&line.text) };
                    files.raw(&format!("{source}:{}", line.number), parsed, line.batch).await;
                }
            }
            Input::Request(request) => files.request(&source, *request).await,
            Input::Settings => {}
            Input::Sqs(event) => {
                local.drain(ingest.queue(), &drained).await;
                tally.accepted(event.records.len());
                for record in &event.records {
                    let envelope = record.body.as_deref().and_then(|body| Envelope::from_body(body).ok());
                    tally.origin(record.id(), &source, envelope.as_ref().map(|e| e.event.message_id.as_str()));
                }
                local.forward_until_done(event).await;
            }
        }
    }
    local.drain(ingest.queue(), &drained).await;
    Ok(local)
}

/// Reads every file under `paths`, the settings documents met in a directory left out; else why there is nothing to
/// replay.
fn read_inputs(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Input)>, LocalError> {
    let files = input::files(paths)?;
    if files.is_empty() {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(LocalError::Usage(format!("no .json, .ndjson or .jsonl files in {}", paths.join(", "))));
    }
    let mut inputs =
        files.into_iter().map(|path| input::read(&path).map(|input| (path, input))).collect::<Result<Vec<_>, _>>()?;
    // Settings documents met in a directory (events/settings/) are not events; one named on its own is a mistake.
    if let Some((path, _)) =
        inputs.iter().find(|(path, input)| matches!(input, Input::Settings) && paths.contains(path))
    {
        return Err(LocalError::Usage(format!(
            "{} is a settings document, not events: pass it with --settings",
            path.display()
        )));
    }
    inputs.retain(|(_, input)| !matches!(input, Input::Settings));
    if inputs.is_empty() {
        return Err(LocalError::Usage("the files hold settings documents only, no events".into()));
    }
    Ok(inputs)
}

/// Streams archives (`.gz`, `.ndjson`, `.jsonl`) through the ingest validation and the forwarder in batches, as a
/// backfill to the queue does, but forwarding here: a batch is confirmed once each of its events is delivered, skipped
/// or dead-lettered. Memory holds a batch, not the archive. Returns the forwarding half (its tally holds the forwarder's
/// report) and the backfill's report.
pub async fn replay_archives(
    options: ReplayOptions,
    backfill_options: BackfillOptions,
    env: impl Fn(&str) -> Option<String>,
    tally: Arc<Tally>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    on_rejected: &(dyn Fn(&LineRejection) + Sync),
) -> Result<(Local, BackfillReport), LocalError> {
    let dead_letter = LocalDeadLetter::Memory(MemoryDeadLetter::new());
    let local = Local::start(&options.destination, env, tally, dead_letter).await?;
    // Stable across runs, for the checkpoint: the sandbox's port is new each time.
    let name = match &options.destination {
        Destination::Sandbox { .. } => "the built-in sandbox".to_owned(),
        Destination::Url(url) => url.clone(),
        Destination::Live => "Intercom (--live)".to_owned(),
    };
    let sink = InProcess::new(&local, name);
    let report = backfill(backfill_options, &sink, progress, stop, on_rejected).await?;
    Ok((local, report))
}

struct Files<'a> {
    ingest: &'a Ingest<MemoryQueue>,
    tally: &'a Tally,
}

impl Files<'_> {
    /// Raw events (no HTTP around them): validated and normalised as the ingest API does, then queued.
    async fn raw(
        &self,
        source: &str,
        parsed: Result<intercom_relay_lambda::event::Batch<'_>, intercom_relay_lambda::event::BodyError>,
        batch: bool,
    ) {
        let refused = |error: IngestError| RejectedInput {
            source: source.to_owned(),
            index: None,
            message_id: None,
            status: None,
            errors: error.to_json(),
        };
        let batch_body = match parsed {
            Ok(body) => body,
            Err(error) => return self.tally.rejected(refused(error.into())),
        };
        let total = batch_body.events.len();
        let (messages, rejected) = match accept_events(&batch_body, None, OffsetDateTime::now_utc(), KeyKind::Server) {
            Ok(outcome) => outcome,
            Err(error) => return self.tally.rejected(refused(error)),
        };
        let before = self.ingest.queue().enqueued();
        self.tally.accepted(messages.len());
        // The memory queue always takes what it is given.
        let _ = self.ingest.queue().enqueue(messages).await;
        self.record(source, before, total, batch, rejected.iter().map(|r| rejection(source, r)).collect());
    }

    /// A function-URL request, answered by the ingest API itself.
    async fn request(&self, source: &str, request: lambda_http::Request) {
        let batch = Route::parse(request.uri().path()) == Some(Route::Batch);
        let before = self.ingest.queue().enqueued();
        let response = self.ingest.handle(request).await;
        let status = response.status().as_u16();
        let queued = self.ingest.queue().since(before).len();
        self.tally.accepted(queued);
        let rejected = RejectedInput::from_answer(source, status, response.body().as_ref());
        let total = queued + rejected.iter().filter(|r| r.index.is_some()).count();
        self.record(source, before, total, batch, rejected);
    }

    /// Tells the tally the refusals and where each newly queued event came from (`file [3]` for the fourth of a batch).
    fn record(&self, source: &str, before: u64, total: usize, batch: bool, rejected: Vec<RejectedInput>) {
        let refused: Vec<usize> = rejected.iter().filter_map(|r| r.index).collect();
        let places = (0..total).filter(|index| !refused.contains(index));
        for (place, (id, message)) in places.zip(self.ingest.queue().since(before)) {
            let label = if batch { format!("{source} [{place}]") } else { source.to_owned() };
            self.tally.origin(&id, &label, Some(&message.message_id));
        }
        for rejected in rejected {
            self.tally.rejected(rejected);
        }
    }
}

fn rejection(source: &str, rejected: &Rejected) -> RejectedInput {
    RejectedInput {
        source: source.to_owned(),
        index: Some(rejected.index),
        message_id: rejected.message_id.clone(),
        status: None,
        errors: serde_json::to_value(&rejected.errors).unwrap_or(Value::Null),
    }
}
