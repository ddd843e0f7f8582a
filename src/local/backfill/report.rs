//! What a backfill tells its user: the lines refused, how it ended, and its report with the summary and next step.

use std::path::PathBuf;

use serde::Serialize;

use super::sink::DRY_RUN;
use crate::local::checkpoint::Totals;
use intercom_relay_lambda::event::FieldError;

/// Rejections listed one by one in the report; the rest are counted.
pub const MAX_LISTED: usize = 1000;

/// A line, or one event of it, that was refused.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LineRejection {
    pub(crate) file: String,
    /// From 1; 0 when the whole file could not be read.
    pub(crate) line: u64,
    /// The event's place in the line's batch, when the line holds one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message_id: Option<String>,
    /// What is wrong, each at its path in the event (or the line).
    pub(crate) errors: Vec<FieldError>,
}

impl LineRejection {
    /// `archive/1.gz:17 [2]: timestamp: must be an RFC 3339 timestamp …`
    pub fn text(&self) -> String {
        let index = self.index.map(|i| format!(" [{i}]")).unwrap_or_default();
        let errors: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        format!("{}:{}{index}: {}", self.file, self.line, errors.join("; "))
    }
}

/// A run's rejections: the first [`MAX_LISTED`], and how many more there were.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    pub(crate) listed: Vec<LineRejection>,
    pub(crate) not_listed: u64,
}

impl Rejections {
    pub(crate) fn add(&mut self, rejection: LineRejection) {
        if self.listed.len() < MAX_LISTED {
            self.listed.push(rejection);
        } else {
            self.not_listed += 1;
        }
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
    pub(crate) destination: String,
    #[serde(flatten)]
    pub ending: Ending,
    /// Archive files, and files the directory walks passed over (not .gz, .ndjson or .jsonl).
    pub(crate) files: usize,
    pub(crate) passed_over: usize,
    pub(crate) checkpoint: Option<PathBuf>,
    /// Where this run started, when it resumed an earlier one: `archive/x.gz after line 5000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<String>,
    /// Where the next run starts, when this one did not finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stopped_at: Option<String>,
    /// Over the whole backfill (earlier runs included), as far as confirmed.
    pub totals: Totals,
    /// Events sent by this run, and how long it took.
    pub sent_this_run: u64,
    pub(crate) seconds: f64,
    pub(crate) events_per_second: f64,
    /// This run's refused lines and events (the first [`MAX_LISTED`]), and how many more there were.
    pub(crate) rejected: Vec<LineRejection>,
    pub(crate) rejected_not_listed: u64,
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
