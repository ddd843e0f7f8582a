//! One archive line through the ingest API's validation and normalisation, the `--since`/`--until` filter and the
//! duplicate check: the events it gives to send, and what it counted and refused.

use std::collections::HashSet;
use std::num::NonZeroUsize;

use lru::LruCache;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::report::LineRejection;
use crate::local::archive::{self, Record};
use crate::local::checkpoint::Totals;
use intercom_relay_lambda::envelope::Envelope;
use intercom_relay_lambda::event::{Event, FieldError, RawEvent, parse_event, timestamp_member};
use intercom_relay_lambda::ingest::oversize;
use intercom_relay_lambda::queue::QueuedMessage;

/// MessageIds remembered to drop an event that comes again soon after (Segment writes its archive at least once).
const RECENT_IDS: NonZeroUsize = NonZeroUsize::new(100_000).expect("not zero");

/// What one line gave.
#[derive(Default)]
pub(crate) struct LineResult {
    pub(crate) messages: Vec<QueuedMessage>,
    pub(crate) sources: Vec<String>,
    pub(crate) rejections: Vec<LineRejection>,
    pub(crate) counts: Totals,
}

impl LineResult {
    /// Line `line` of `file` refused whole, for `message`; `counts` says what it counts as (a rejection among them).
    pub(crate) fn refused(file: &str, line: u64, message: String, counts: Totals) -> LineResult {
        let errors = vec![FieldError::new("", message)];
        let rejection = LineRejection { file: file.to_owned(), line, index: None, message_id: None, errors };
        LineResult { rejections: vec![rejection], counts, ..LineResult::default() }
    }

    fn refuse(
        &mut self,
        file: &str,
        line: u64,
        index: Option<usize>,
        message_id: Option<String>,
        errors: Vec<FieldError>,
    ) {
        self.counts.rejected += 1;
        self.rejections.push(LineRejection { file: file.to_owned(), line, index, message_id, errors });
    }
}

/// The messageIds met so far: those the run this resumes sent past its place, and the recent ones.
pub(crate) struct Seen {
    carried: HashSet<String>,
    recent: LruCache<String, ()>,
}

/// Whether an event was met before.
enum Repeat {
    /// Confirmed by the queue in the run this resumes.
    Sent,
    /// Met a short while ago in this run.
    Duplicate,
    New,
}

impl Seen {
    /// Knowing `carried`, the events the destination confirmed past the checkpoint's place.
    pub(crate) fn new(carried: &[String]) -> Seen {
        Seen { carried: carried.iter().cloned().collect(), recent: LruCache::new(RECENT_IDS) }
    }

    /// The confirmed events past the checkpoint's place not met again yet.
    pub(crate) fn carried(&self) -> Vec<String> {
        self.carried.iter().cloned().collect()
    }

    fn check(&mut self, message_id: &str) -> Repeat {
        if self.carried.remove(message_id) {
            // A repeat of it later is a duplicate.
            self.recent.put(message_id.to_owned(), ());
            return Repeat::Sent;
        }
        if self.recent.put(message_id.to_owned(), ()).is_some() {
            return Repeat::Duplicate;
        }
        Repeat::New
    }
}

/// How lines are read: which events pass, and what the events are given.
pub(crate) struct LineRules {
    pub(crate) since: Option<OffsetDateTime>,
    pub(crate) until: Option<OffsetDateTime>,
    /// Whether each event's source (`file:line [index]`) is wanted.
    pub(crate) sources: bool,
    /// The receipt time of events that carry none (nor a `sentAt`), as the ingest API would give them.
    pub(crate) now: OffsetDateTime,
}

/// A line being read, and where it is.
struct Line<'a> {
    file: &'a str,
    number: u64,
    text: &'a str,
    record: &'a Record<'a>,
    /// Whether the line holds a batch (its events are named by their index in it).
    in_batch: bool,
}

impl LineRules {
    /// Validates and normalises the events of line `number` of `file` as the ingest API does, and filters them.
    pub(crate) fn line(&self, file: &str, number: u64, bytes: &[u8], seen: &mut Seen) -> LineResult {
        let mut result = LineResult { counts: Totals { lines: 1, ..Totals::default() }, ..LineResult::default() };
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.trim_start_matches('\u{feff}').trim(),
            Err(e) => {
                let message = format!("is not UTF-8 text (the first bad byte is at offset {})", e.valid_up_to());
                result.refuse(file, number, None, None, vec![FieldError::new("", message)]);
                return result;
            }
        };
        if text.is_empty() {
            return result;
        }
        let record = match archive::record(text) {
            Ok(record) => record,
            Err(error) => {
                result.refuse(file, number, None, None, vec![error]);
                return result;
            }
        };
        let in_batch = record.batch.events.len() > 1 || record.shape != archive::Shape::Event;
        let line = Line { file, number, text, record: &record, in_batch };
        for (index, raw) in record.batch.events.iter().enumerate() {
            result.counts.events += 1;
            self.event(&line, index, raw, seen, &mut result);
        }
        result
    }

    /// Event `index` of `line`: refused, filtered, met before, or to send.
    fn event(&self, line: &Line, index: usize, raw: &RawEvent, seen: &mut Seen, result: &mut LineResult) {
        let place = line.in_batch.then_some(index);
        let refuse = |result: &mut LineResult, message_id: Option<String>, errors: Vec<FieldError>| {
            result.refuse(line.file, line.number, place, message_id, errors);
        };
        let received_at = match self.received_at(raw, line.record) {
            Ok(at) => at,
            Err(error) => {
                let message_id = raw.member("messageId").and_then(|m| serde_json::from_str(m.get()).ok());
                refuse(result, message_id, vec![error]);
                return;
            }
        };
        let mut event = match parse_event(raw, None, &line.record.batch.defaults, received_at) {
            Ok(event) => event,
            Err(refusal) => {
                refuse(result, refusal.message_id, refusal.errors);
                return;
            }
        };
        if self.since.is_some_and(|since| event.timestamp < since)
            || self.until.is_some_and(|until| event.timestamp >= until)
        {
            result.counts.filtered += 1;
            return;
        }
        if !raw.has_message_id() {
            // The same id on every run, so that a resume (and SQS's deduplication) knows the event again.
            event.message_id = derived_id(line.file, line.number, index, line.text);
        }
        match seen.check(&event.message_id) {
            Repeat::Sent => result.counts.sent += 1,
            Repeat::Duplicate => result.counts.duplicates += 1,
            Repeat::New => self.keep(line, place, event, result),
        }
    }

    /// An event to send, unless it is over the queue's size limit.
    fn keep(&self, line: &Line, place: Option<usize>, event: Event, result: &mut LineResult) {
        let message = QueuedMessage::new(Envelope::server(event));
        if let Some(error) = oversize(&message) {
            result.refuse(line.file, line.number, place, Some(message.message_id), vec![error]);
            return;
        }
        if self.sources {
            let index = place.map(|i| format!(" [{i}]")).unwrap_or_default();
            result.sources.push(format!("{}:{}{index}", line.file, line.number));
        }
        result.messages.push(message);
    }

    /// When the CDP received `raw`: its own receivedAt, else its record's, else when it was sent (no network delay),
    /// else now, as the ingest API would. Skew correction measures from this, so it must be the past.
    fn received_at(&self, raw: &RawEvent, record: &Record) -> Result<OffsetDateTime, FieldError> {
        Ok(match timestamp_member(raw.member("receivedAt"), "receivedAt")? {
            Some(at) => at,
            None => record
                .received_at
                .or_else(|| timestamp_member(raw.member("sentAt"), "sentAt").ok().flatten())
                .or(record.batch.defaults.sent_at)
                .unwrap_or(self.now),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_id_is_the_same_for_the_same_line_and_another_for_another() {
        let id = derived_id("archive/a/1.gz", 3, 0, "{}");
        assert_eq!(id, derived_id("elsewhere/1.gz", 3, 0, "{}"), "the directory does not count");
        assert_ne!(id, derived_id("archive/a/1.gz", 4, 0, "{}"));
        assert!(id.starts_with("backfill-") && id.len() == 41, "{id}");
    }
}
