//! One SQS batch: each record decoded on its own, a person's records in order, people concurrently, every record ending
//! delivered, skipped, handed back to SQS, or in the dead-letter queue with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::dead_letter::{DeadLetter, DeadLetterMessage, Reason};
use super::execute::{ALIAS_PREVIOUS_UNKNOWN, Executor, Failed, Patience};
use super::sqs_event::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsRecord};
use crate::envelope::Envelope;
use crate::intercom::{IntercomApi, IntercomError};
use crate::mapping::{Unmapped, map_with};
use crate::settings::Settings;

tokio::task_local! {
    /// The SQS message id of the record whose calls are being made.
    static RECORD: String;
}

/// The SQS message id of the record the calling code works for, when called from within [`Forwarder::handle`]: lets an
/// Intercom client's observer tell which event each call served, though people are worked on concurrently.
pub fn current_record() -> Option<String> {
    RECORD.try_with(String::clone).ok()
}

/// How a batch is worked through.
#[derive(Clone, Copy, Debug)]
pub struct ForwardOptions {
    /// People (message groups) worked on at once.
    pub concurrency: usize,
    /// Tries of one Intercom call within an invocation, the first included.
    pub attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The Intercom client's timeout: no try starts unless it can end before the stop.
    pub call_timeout: Duration,
    /// Time kept back from the invocation's deadline to dead-letter, answer and log.
    pub margin: Duration,
    /// From this receive on, an event that still fails for a retryable reason is dead-lettered (with the last reason)
    /// instead of handed back: the queue's own redrive would move it without saying why.
    pub max_receives: u32,
}

impl Default for ForwardOptions {
    fn default() -> ForwardOptions {
        ForwardOptions {
            concurrency: 8,
            attempts: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
            call_timeout: Duration::from_secs(5),
            margin: Duration::from_millis(1500),
            max_receives: 5,
        }
    }
}

/// What became of one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Intercom holds it.
    Delivered { calls: usize },
    /// Nothing Intercom can hold (no contact identifier, an alias for unknown contacts…), or the destination settings
    /// said no (`skipped_by` names the rule: `events.deny[2]`); acknowledged.
    Skipped {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped_by: Option<String>,
        calls: usize,
    },
    /// Handed back to SQS, which delivers it again after the visibility timeout.
    Retry { reason: String, calls: usize },
    /// In the dead-letter queue with the reason, acknowledged.
    DeadLettered { reason: Reason, calls: usize },
}

impl Outcome {
    /// Intercom calls spent on the record in this invocation.
    pub fn calls(&self) -> usize {
        match self {
            Outcome::Delivered { calls }
            | Outcome::Skipped { calls, .. }
            | Outcome::Retry { calls, .. }
            | Outcome::DeadLettered { calls, .. } => *calls,
        }
    }
}

/// One record's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordOutcome {
    /// SQS's message id.
    pub sqs_message_id: String,
    /// The event's `messageId`, when the body could be read.
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Every record's outcome, in the order of the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    pub records: Vec<RecordOutcome>,
}

impl BatchReport {
    /// The answer for Lambda: the records SQS must hand out again.
    pub fn response(&self) -> SqsBatchResponse {
        let failures = self.records.iter().filter(|r| matches!(r.outcome, Outcome::Retry { .. }));
        SqsBatchResponse {
            batch_item_failures: failures
                .map(|r| BatchItemFailure { item_identifier: r.sqs_message_id.clone() })
                .collect(),
        }
    }

    /// Intercom calls spent on the whole batch.
    pub fn calls(&self) -> usize {
        self.records.iter().map(|r| r.outcome.calls()).sum()
    }
}

/// The forwarder: an executor for Intercom and a place for dead letters; one per cold start.
pub struct Forwarder<A, D> {
    executor: Executor<A>,
    dead_letter: D,
    options: ForwardOptions,
    settings: Arc<Settings>,
}

/// A record with its body read.
struct Item<'a> {
    index: usize,
    record: &'a SqsRecord,
    envelope: Result<Envelope, String>,
    /// The person it is about: its FIFO message group, else the event's ordering key, else (unreadable, on a standard
    /// queue) the record alone.
    group: String,
}

impl<A: IntercomApi, D: DeadLetter> Forwarder<A, D> {
    pub fn new(executor: Executor<A>, dead_letter: D, options: ForwardOptions) -> Forwarder<A, D> {
        Forwarder { executor, dead_letter, options, settings: Arc::new(Settings::default()) }
    }

    /// The destination settings every record is evaluated against (the defaults unless given).
    pub fn with_settings(self, settings: Arc<Settings>) -> Forwarder<A, D> {
        Forwarder { settings, ..self }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn executor(&self) -> &Executor<A> {
        &self.executor
    }

    pub fn dead_letter(&self) -> &D {
        &self.dead_letter
    }

    /// Works through `event`, finishing before `deadline` (the invocation's).
    pub async fn handle(&self, event: &SqsEvent, deadline: Instant) -> BatchReport {
        let stop = deadline.checked_sub(self.options.margin).unwrap_or_else(Instant::now);
        let items = event.records.iter().enumerate().map(|(index, record)| {
            let envelope = match &record.body {
                Some(body) => Envelope::from_body(body).map_err(|e| e.to_string()),
                None => Err("the message has no body".to_owned()),
            };
            let group = record
                .attributes
                .message_group_id
                .clone()
                .or_else(|| envelope.as_ref().ok().map(|e| e.event.ordering_key().to_owned()))
                .unwrap_or_else(|| record.message_id.clone());
            Item { index, record, envelope, group }
        });
        // A person's records in the order SQS gave them; people in the order first seen.
        let mut groups: Vec<Vec<Item<'_>>> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for item in items {
            let next = groups.len();
            let group = *group_of.entry(item.group.clone()).or_insert(next);
            if group == next {
                groups.push(Vec::new());
            }
            groups[group].push(item);
        }
        // The futures are made up front (none runs until polled): a closure in the stream would make the whole future
        // depend on a higher-ranked lifetime, which `tokio::spawn` (the local `serve`) cannot prove Send.
        let work: Vec<_> = groups.into_iter().map(|group| self.group(group, stop)).collect();
        let mut outcomes: Vec<(usize, RecordOutcome)> = futures_util::stream::iter(work)
            .buffer_unordered(self.options.concurrency.max(1))
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
        outcomes.sort_by_key(|(index, _)| *index);
        BatchReport { records: outcomes.into_iter().map(|(_, outcome)| outcome).collect() }
    }

    /// One person's records, in order; once one is handed back, so are the rest, to keep the order.
    async fn group(&self, group: Vec<Item<'_>>, stop: Instant) -> Vec<(usize, RecordOutcome)> {
        let mut handed_back = false;
        let mut outcomes = Vec::with_capacity(group.len());
        for item in group {
            let outcome = if handed_back {
                Outcome::Retry { reason: "an earlier event of the same person was handed back".into(), calls: 0 }
            } else if Instant::now() >= stop {
                Outcome::Retry { reason: "the invocation's time ran out before this event".into(), calls: 0 }
            } else {
                let record = RECORD.scope(item.record.message_id.clone(), self.record(&item, stop));
                match tokio::time::timeout_at(stop, record).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        Outcome::Retry { reason: "the invocation's time ran out during this event".into(), calls: 0 }
                    }
                }
            };
            handed_back = matches!(outcome, Outcome::Retry { .. });
            let envelope = item.envelope.as_ref().ok();
            let outcome = RecordOutcome {
                sqs_message_id: item.record.message_id.clone(),
                message_id: envelope.map(|e| e.event.message_id.clone()),
                event_type: envelope.map(|e| e.event.kind.as_str().to_owned()),
                outcome,
            };
            log(&outcome);
            outcomes.push((item.index, outcome));
        }
        outcomes
    }

    async fn record(&self, item: &Item<'_>, stop: Instant) -> Outcome {
        let envelope = match &item.envelope {
            Ok(envelope) => envelope,
            Err(message) => {
                return self.send_to_dead_letter(item, Reason::ours("malformed_envelope", message.clone()), 0).await;
            }
        };
        let plan = match map_with(&envelope.event, &self.settings) {
            Ok(plan) => plan,
            Err(Unmapped::Skipped(reason)) => {
                return Outcome::Skipped { reason: reason.into(), skipped_by: None, calls: 0 };
            }
            Err(Unmapped::SkippedBy(skip)) => {
                return Outcome::Skipped { reason: skip.reason, skipped_by: Some(skip.rule), calls: 0 };
            }
            Err(Unmapped::Unreadable(message)) => {
                return self.send_to_dead_letter(item, Reason::ours("unreadable_event", message), 0).await;
            }
        };
        let patience = Patience {
            attempts: self.options.attempts,
            min_delay: self.options.min_delay,
            max_delay: self.options.max_delay,
            until: stop,
            call_timeout: self.options.call_timeout,
        };
        let last_chance = item.record.receive_count() >= self.options.max_receives;
        match self.executor.execute(&plan, patience).await {
            Ok(delivery) => {
                for dropped in &delivery.dropped {
                    info!(message_id = %envelope.event.message_id, path = %dropped.path, reason = dropped.reason, "Left out of what Intercom receives.");
                }
                match delivery.skipped {
                    // The previous contact may still be on its way in another FIFO group: skipped only at the last try.
                    Some(ALIAS_PREVIOUS_UNKNOWN) if !last_chance => Outcome::Retry {
                        reason: "alias: Intercom does not hold the previous contact yet".into(),
                        calls: delivery.calls,
                    },
                    Some(reason) => Outcome::Skipped { reason: reason.into(), skipped_by: None, calls: delivery.calls },
                    None => Outcome::Delivered { calls: delivery.calls },
                }
            }
            Err(Failed { error, attempts, calls }) => {
                if error.is_retryable() && !last_chance {
                    return Outcome::Retry { reason: error.to_string(), calls };
                }
                let mut reason = reason_of(&error, attempts);
                if error.is_retryable() {
                    let receives = item.record.receive_count();
                    reason.error_message = format!("still failing after {receives} receives; last: {error}");
                    reason.error_code = "retries_exhausted".into();
                }
                self.send_to_dead_letter(item, reason, calls).await
            }
        }
    }

    /// Dead-letters the record; if the dead-letter queue does not take it, it is handed back instead.
    async fn send_to_dead_letter(&self, item: &Item<'_>, reason: Reason, calls: usize) -> Outcome {
        let record = item.record;
        let letter = DeadLetterMessage {
            body: record.body.clone().unwrap_or_default(),
            group_id: item.group.clone(),
            dedup_id: record.attributes.message_deduplication_id.clone().unwrap_or_else(|| record.message_id.clone()),
            receive_count: record.receive_count(),
            event_type: record.attribute("event_type").map(str::to_owned),
            event_name: record.attribute("event_name").map(str::to_owned),
            reason,
        };
        match self.dead_letter.send(&letter).await {
            Ok(()) => Outcome::DeadLettered { reason: letter.reason, calls },
            Err(problem) => {
                error!(sqs_message_id = %record.message_id, %problem, "The dead-letter queue did not take the event; handing it back.");
                Outcome::Retry { reason: format!("the dead-letter queue did not take it: {problem}"), calls }
            }
        }
    }
}

/// The dead-letter reason for an Intercom failure.
fn reason_of(error: &IntercomError, attempts: u32) -> Reason {
    let (code, message, request_id) = match error {
        IntercomError::Api { code, message, request_id, .. } => (code.clone(), message.clone(), request_id.clone()),
        IntercomError::Transport(message) => ("transport".into(), message.clone(), None),
        IntercomError::Unexpected(message) => ("unexpected_answer".into(), message.clone(), None),
    };
    let message = if message.is_empty() { error.to_string() } else { message };
    Reason {
        error_code: code,
        error_message: message,
        http_status: error.status(),
        intercom_request_id: request_id,
        attempts,
    }
}

/// One line per record; nothing personal (no user ids, emails or traits), only ids and reasons.
fn log(record: &RecordOutcome) {
    let (sqs_message_id, message_id, event_type) = (
        &record.sqs_message_id,
        record.message_id.as_deref().unwrap_or("-"),
        record.event_type.as_deref().unwrap_or("-"),
    );
    match &record.outcome {
        Outcome::Delivered { calls } => info!(sqs_message_id, message_id, event_type, calls, "Delivered."),
        Outcome::Skipped { reason, skipped_by, calls } => {
            let skipped_by = skipped_by.as_deref();
            info!(sqs_message_id, message_id, event_type, calls, reason, skipped_by, "Skipped.")
        }
        Outcome::Retry { reason, calls } => {
            warn!(sqs_message_id, message_id, event_type, calls, reason, "Handed back to SQS.")
        }
        Outcome::DeadLettered { reason, calls } => error!(
            sqs_message_id,
            message_id,
            event_type,
            calls,
            error_code = reason.error_code,
            http_status = reason.http_status,
            error_message = reason.error_message,
            "Dead-lettered."
        ),
    }
}
