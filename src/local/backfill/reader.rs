//! The blocking reader: the archive's files read from the checkpoint's place, their lines handed to the sender in
//! chunks of whole lines.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::line::{LineResult, LineRules, Seen};
use super::place::Position;
use super::report::{Ending, LineRejection};
use super::{BackfillOptions, Progress};
use crate::local::archive::{self, ArchiveFile, LineError, Lines};
use crate::local::checkpoint::{Start, Totals};
use intercom_relay_lambda::queue::QueuedMessage;

/// Lines read between checkpoints when none of them holds an event to send (a stretch outside `--since`/`--until`).
const IDLE_LINES: u64 = 20_000;

/// What the reader hands the sender: events of whole lines, in archive order.
#[derive(Default)]
pub(crate) struct Chunk {
    pub(crate) messages: Vec<QueuedMessage>,
    pub(crate) sources: Vec<String>,
    pub(crate) rejections: Vec<LineRejection>,
    /// How far the archive is done once these are confirmed.
    pub(crate) end: Position,
    /// The reader's counts at `end`: `sent` counts only events the queue held before this run.
    pub(crate) counts: Totals,
    /// The reader stopped here, and why.
    pub(crate) last: Option<Ending>,
}

/// Reads the archive from `start` on a blocking thread, handing chunks of whole lines to the sender.
pub(crate) struct Reader {
    files: Vec<ArchiveFile>,
    start: Start,
    strict: bool,
    limit: Option<u64>,
    batch: usize,
    rules: LineRules,
    progress: Arc<Progress>,
    /// Set when the sender stops: nothing more is read.
    halt: Arc<AtomicBool>,
}

/// The reader's state as it goes: the chunk it fills, and what it counted and met.
struct Filling {
    chunk: Chunk,
    counts: Totals,
    seen: Seen,
    /// Events to send read in this run.
    produced: u64,
    /// Lines read since the last that held an event to send.
    idle: u64,
    line: Vec<u8>,
}

impl Filling {
    /// Hands the chunk on, `next` taking its place; false when nothing receives it any more.
    fn hand_on(&mut self, tx: &mpsc::Sender<Chunk>, next: Chunk) -> bool {
        let mut chunk = std::mem::replace(&mut self.chunk, next);
        // Events past the chunk's end that the queue holds already go with it (a chunk may end before meeting them).
        chunk.end.sent = self.seen.carried();
        tx.blocking_send(chunk).is_ok()
    }

    /// Hands on the last chunk, ending with `last`: the reader stops.
    fn finish(&mut self, tx: &mpsc::Sender<Chunk>, last: Ending) -> ControlFlow<()> {
        self.chunk.last = Some(last);
        self.hand_on(tx, Chunk::default());
        ControlFlow::Break(())
    }
}

impl Reader {
    /// A reader of `files` from `start` as `options` say, giving events their sources when `sources`; it stops at its
    /// next line once `halt` is set.
    pub(crate) fn new(
        options: &BackfillOptions,
        files: Vec<ArchiveFile>,
        start: Start,
        sources: bool,
        progress: Arc<Progress>,
        halt: Arc<AtomicBool>,
    ) -> Reader {
        Reader {
            files,
            start,
            strict: options.strict,
            limit: options.limit,
            batch: options.batch.max(1),
            rules: LineRules { since: options.since, until: options.until, sources, now: OffsetDateTime::now_utc() },
            progress,
            halt,
        }
    }

    pub(crate) fn run(self, tx: mpsc::Sender<Chunk>) {
        let counts = self.start.totals;
        let mut fill = Filling {
            chunk: self.chunk(Position { file: self.start.file, lines: self.start.lines, sent: vec![] }, counts),
            counts,
            seen: Seen::new(&self.start.sent),
            produced: 0,
            idle: 0,
            line: Vec::with_capacity(4096),
        };
        for index in self.start.file..self.files.len() {
            if self.file(index, &mut fill, &tx).is_break() {
                return;
            }
            fill.chunk.end = Position { file: index + 1, lines: 0, sent: Vec::new() };
        }
        let _ = fill.finish(&tx, Ending::Finished);
    }

    /// Reads file `index` (past the checkpoint's place, when the run starts in it); breaks when the reader stops.
    fn file(&self, index: usize, fill: &mut Filling, tx: &mpsc::Sender<Chunk>) -> ControlFlow<()> {
        let file = &self.files[index];
        let name = file.path.display().to_string();
        let mut lines = match Lines::open(file, self.progress.bytes_read.clone()) {
            Ok(lines) => lines,
            Err(e) => {
                let counts = Totals { rejected: 1, ..Totals::default() };
                let result = LineResult::refused(&name, 0, format!("cannot be read: {e}"), counts);
                return self.take(fill, result, &name, tx);
            }
        };
        // Lines before the checkpoint's place were counted by the run that read them.
        let skip = if index == self.start.file { self.start.lines } else { 0 };
        loop {
            if self.halt.load(Ordering::Acquire) {
                return ControlFlow::Break(());
            }
            let (result, broken) = match lines.next_line(&mut fill.line) {
                Ok(false) => return ControlFlow::Continue(()),
                Ok(true) | Err(LineError::TooLong) if lines.number() <= skip => continue,
                Ok(true) => (self.rules.line(&name, lines.number(), &fill.line, &mut fill.seen), false),
                Err(error) => {
                    let broken = matches!(error, LineError::Broken(_));
                    (unreadable(&name, lines.number(), error), broken)
                }
            };
            let sending = !result.messages.is_empty();
            self.take(fill, result, &name, tx)?;
            // Nothing after a broken line can be read: the file counts as done once what came before is sent.
            let end = (!broken).then(|| Position { file: index, lines: lines.number(), sent: Vec::new() });
            self.after_line(fill, end, sending, tx)?;
            if broken {
                return ControlFlow::Continue(());
            }
        }
    }

    /// Adds a line's result to the chunk; with `strict`, a line refused stops the reader there instead, the chunk
    /// handed on with the line's rejections.
    fn take(&self, fill: &mut Filling, result: LineResult, file: &str, tx: &mpsc::Sender<Chunk>) -> ControlFlow<()> {
        if self.strict && !result.rejections.is_empty() {
            let line = result.rejections[0].line;
            fill.chunk.rejections.extend(result.rejections);
            return fill.finish(tx, Ending::BadLine { file: file.to_owned(), line });
        }
        fill.produced += result.messages.len() as u64;
        self.commit(fill, result);
        ControlFlow::Continue(())
    }

    /// After a line taken: moves the chunk's end to `end`, and hands the chunk on when the limit is reached (the reader
    /// stops), when it is full, or after a long stretch of lines with nothing to send.
    fn after_line(
        &self,
        fill: &mut Filling,
        end: Option<Position>,
        sending: bool,
        tx: &mpsc::Sender<Chunk>,
    ) -> ControlFlow<()> {
        if let Some(end) = end {
            fill.chunk.end = end;
        }
        fill.idle = if sending { 0 } else { fill.idle + 1 };
        if self.limit.is_some_and(|limit| fill.produced >= limit) {
            return fill.finish(tx, Ending::Limit);
        }
        if fill.chunk.messages.len() >= self.batch || fill.idle >= IDLE_LINES {
            fill.idle = 0;
            let next = self.chunk(fill.chunk.end.clone(), fill.counts);
            if !fill.hand_on(tx, next) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
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

    fn commit(&self, fill: &mut Filling, result: LineResult) {
        let (counts, c) = (&mut fill.counts, result.counts);
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
        fill.chunk.counts = *counts;
        fill.chunk.messages.extend(result.messages);
        fill.chunk.sources.extend(result.sources);
        fill.chunk.rejections.extend(result.rejections);
    }
}

/// What a line that could not be read gives: `number` is the last line read.
fn unreadable(file: &str, number: u64, error: LineError) -> LineResult {
    match error {
        LineError::TooLong => LineResult::refused(
            file,
            number,
            format!("is over {} bytes: not read", archive::MAX_LINE_BYTES),
            Totals { lines: 1, rejected: 1, ..Totals::default() },
        ),
        LineError::Broken(e) => LineResult::refused(
            file,
            number + 1,
            format!("the file cannot be read past line {number}: {e}"),
            Totals { rejected: 1, ..Totals::default() },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks a reader hands on from one NDJSON file holding `text`.
    fn chunks(name: &str, text: &str, options: &BackfillOptions) -> Vec<Chunk> {
        let dir = std::env::temp_dir().join(format!("reader-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.ndjson");
        std::fs::write(&path, text).unwrap();
        let files = vec![ArchiveFile { path, bytes: text.len() as u64 }];
        let reader = Reader::new(options, files, Start::default(), false, Arc::default(), Arc::default());
        let (tx, mut rx) = mpsc::channel(16);
        let reading = std::thread::spawn(move || reader.run(tx));
        let chunks = std::iter::from_fn(|| rx.blocking_recv()).collect();
        reading.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        chunks
    }

    fn archive_with_a_line_too_long() -> String {
        let event = |id: &str| format!(r#"{{"type": "track", "userId": "u-1", "event": "E", "messageId": "{id}"}}"#);
        [event("m-1"), "x".repeat(archive::MAX_LINE_BYTES + 1), event("m-2")].join("\n") + "\n"
    }

    fn ids(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().flat_map(|chunk| &chunk.messages).map(|message| message.message_id.as_str()).collect()
    }

    #[test]
    fn a_line_too_long_is_refused_and_the_lines_after_it_are_read() {
        let chunks = chunks("too-long", &archive_with_a_line_too_long(), &BackfillOptions::new(vec![]));
        assert_eq!(ids(&chunks), ["m-1", "m-2"]);
        let last = chunks.last().unwrap();
        assert_eq!(last.last, Some(Ending::Finished));
        assert_eq!((last.counts.lines, last.counts.events, last.counts.rejected), (3, 2, 1));
        let rejections: Vec<u64> = chunks.iter().flat_map(|chunk| &chunk.rejections).map(|r| r.line).collect();
        assert_eq!(rejections, [2]);
    }

    #[test]
    fn with_strict_a_line_too_long_stops_the_reader_before_it() {
        let options = BackfillOptions { strict: true, ..BackfillOptions::new(vec![]) };
        let chunks = chunks("too-long-strict", &archive_with_a_line_too_long(), &options);
        assert_eq!(ids(&chunks), ["m-1"]);
        let last = chunks.last().unwrap();
        assert!(matches!(&last.last, Some(Ending::BadLine { line: 2, .. })), "{:?}", last.last);
        assert_eq!((last.end.file, last.end.lines), (0, 1), "the next run starts at the bad line");
    }
}
