//! One SQS batch: each record decoded on its own, a person's records in order, people concurrently, every record ending
//! delivered, skipped, handed back to SQS, or in the dead-letter queue with the reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::{error, info};

use super::body::{Body, UnreadableBody};
use super::identities::StoreView;
use super::options::{HORIZON_SHARE, QUEUE_RETENTION};
use super::outcome::{log, reason_of};
use super::poison::ServerErrors;
use super::{ALIAS_PREVIOUS_UNKNOWN, Delivery, Erased, Executor, Failed};
use super::{BatchReport, ForwardOptions, Outcome, RecordOutcome};
use crate::envelope::{Envelope, KeyKind};
use crate::erasure::ErasureRequest;
use crate::intercom::{IntercomApi, IntercomError};
use crate::mapping::{Unmapped, map_with};
use crate::queue::{DeadLetter, DeadLetterMessage, Reason, SqsEvent, SqsRecord, SqsRecordExt};
use crate::settings::Settings;
use crate::suppression::{SuppressionError, SuppressionList, email_key, key_of, user_key};

tokio::task_local! {
    /// The SQS message id of the record whose calls are being made.
    static RECORD: String;
}

/// The SQS message id of the record the calling code works for, when called from within [`Forwarder::handle`]: lets an
/// Intercom client's observer tell which event each call served, though people are worked on concurrently.
pub fn current_record() -> Option<String> {
    RECORD.try_with(String::clone).ok()
}

/// The forwarder: an executor for Intercom and a place for dead letters; one per cold start.
pub struct Forwarder<A, D> {
    executor: Executor<A>,
    dead_letter: D,
    options: ForwardOptions,
    settings: Arc<Settings>,
    /// The people erased, whose later events are skipped.
    suppression: Option<Arc<dyn SuppressionList>>,
    server_errors: ServerErrors,
}

/// The suppression list as one batch sees it: what it holds of the batch's people (read once), with whom the batch's
/// erasures name; or why it could not be read. `None` when no list is kept.
type Suppressed = Option<Result<HashSet<String>, SuppressionError>>;

/// What a batch reads before its records: the suppression list's and the identity store's entries for its people.
struct Ahead {
    suppressed: Suppressed,
    view: Arc<StoreView>,
}

/// A record with its body read.
struct Item<'a> {
    index: usize,
    record: &'a SqsRecord,
    body: Result<Body, UnreadableBody>,
    /// The person it is about: its FIFO message group, else the event's ordering key, else (unreadable, on a standard
    /// queue) the record alone.
    group: String,
}

impl<A: IntercomApi, D: DeadLetter> Forwarder<A, D> {
    /// A forwarder; the executor's breaker takes `options.breaker`.
    pub fn new(executor: Executor<A>, dead_letter: D, options: ForwardOptions) -> Forwarder<A, D> {
        let executor = executor.with_breaker(options.breaker).with_memory(options.memory);
        let settings = Arc::new(Settings::default());
        Forwarder {
            executor,
            dead_letter,
            options,
            settings,
            suppression: None,
            server_errors: ServerErrors::default(),
        }
    }

    /// Keeps the people erased in `suppression`, and skips their later events (the default keeps none).
    pub fn with_suppression(self, table: Arc<dyn SuppressionList>) -> Forwarder<A, D> {
        Forwarder { suppression: Some(table), ..self }
    }

    /// The destination settings every record is evaluated against (the defaults unless given).
    pub fn with_settings(self, settings: Arc<Settings>) -> Forwarder<A, D> {
        Forwarder { settings, ..self }
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
            let body = Body::read(record);
            let group = (record.group().map(str::to_owned))
                .or_else(|| body.as_ref().ok().map(|b| b.ordering_key().to_owned()))
                .unwrap_or_else(|| record.id().to_owned());
            Item { index, record, body, group }
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
        let suppressed = match &self.suppression {
            Some(table) => Some(self.suppressed(table, &groups, stop).await),
            None => None,
        };
        let ahead = &Ahead { suppressed, view: self.read_ahead(&groups, stop).await };
        // The futures are made up front (none runs until polled): a closure in the stream would make the whole future
        // depend on a higher-ranked lifetime, which `tokio::spawn` (the local `serve`) cannot prove Send.
        let work: Vec<_> = groups.into_iter().map(|group| self.group(group, ahead, stop)).collect();
        let mut outcomes: Vec<(usize, RecordOutcome)> = futures_util::stream::iter(work)
            .buffer_unordered(self.options.concurrency.max(1))
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
        outcomes.sort_by_key(|(index, _)| *index);
        BatchReport { records: outcomes.into_iter().map(|(_, outcome)| outcome).collect() }
    }

    /// One person's records, in order; once one is handed back, so are the rest, to keep the order. In a FIFO queue they
    /// are visible again at once: SQS holds them behind the first while it waits (a message group is not handed out
    /// while one of its messages is in flight), and hands them out after it, in order. Elsewhere they wait as long.
    async fn group(&self, group: Vec<Item<'_>>, ahead: &Ahead, stop: Instant) -> Vec<(usize, RecordOutcome)> {
        let mut handed_back: Option<Duration> = None;
        let mut outcomes = Vec::with_capacity(group.len());
        for item in group {
            let (outcome, quiet) = if let Some(retry_in) = handed_back {
                let reason = "an earlier event of the same person was handed back".into();
                let fifo = item.record.group().is_some();
                let retry_in = if fifo { Duration::ZERO } else { retry_in };
                (Outcome::Retry { reason, calls: 0, retry_in }, true)
            } else if Instant::now() >= stop {
                // Not tried: it comes again at once (after an open breaker's wait).
                let reason = "the invocation's time ran out before this event".into();
                (Outcome::Retry { reason, calls: 0, retry_in: self.breaker_wait(Duration::ZERO) }, false)
            } else {
                let record = RECORD.scope(item.record.id().to_owned(), self.record(&item, ahead, stop));
                match tokio::time::timeout_at(stop, record).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        // Tried, and it may never fit in one invocation (long rate-limit pauses): not again at once.
                        let reason = "the invocation's time ran out during this event".into();
                        let retry_in = self.breaker_wait(self.options.redelivery.min_delay);
                        (Outcome::Retry { reason, calls: 0, retry_in }, false)
                    }
                }
            };
            match (handed_back, &outcome) {
                (None, Outcome::Retry { retry_in, .. }) => handed_back = Some(*retry_in),
                (_, Outcome::Retry { .. }) => {}
                _ => self.server_errors.done(item.record.id()),
            }
            let body = item.body.as_ref().ok();
            let outcome = RecordOutcome {
                sqs_message_id: item.record.id().to_owned(),
                message_id: body.map(|b| b.message_id().to_owned()),
                event_type: body.map(|b| b.kind().to_owned()),
                outcome,
            };
            log(&outcome, quiet);
            outcomes.push((item.index, outcome));
        }
        outcomes
    }

    /// What becomes of one record, and whether its line is quiet (held back with the rest while Intercom fails).
    async fn record(&self, item: &Item<'_>, ahead: &Ahead, stop: Instant) -> (Outcome, bool) {
        let envelope = match &item.body {
            Ok(Body::Event(envelope)) => envelope,
            Ok(Body::Erasure(request)) => return self.erase(item, request, stop).await,
            Err(unreadable) => {
                let reason = Reason::ours("malformed_envelope", unreadable.to_string());
                return (self.send_to_dead_letter(item, reason, 0).await, false);
            }
        };
        let plan = match map_with(&envelope.event, &self.settings) {
            Ok(plan) => plan,
            Err(Unmapped::Skipped(reason)) => {
                return (Outcome::Skipped { reason: reason.into(), skipped_by: None, calls: 0 }, false);
            }
            Err(Unmapped::SkippedBy(skip)) => {
                return (Outcome::Skipped { reason: skip.reason, skipped_by: Some(skip.rule), calls: 0 }, false);
            }
            Err(Unmapped::Unreadable(message)) => {
                let reason = Reason::ours("unreadable_event", message);
                return (self.send_to_dead_letter(item, reason, 0).await, false);
            }
        };
        // Anyone may send with a browser key: its events decide nothing only the business should.
        let plan = if envelope.key == KeyKind::Browser { plan.for_browser_key(&self.settings) } else { plan };
        let clock = Clock::of(item.record, Some(envelope.event.received_at));
        match &ahead.suppressed {
            Some(Err(error)) => return self.suppression_failed(item, &clock, error, 0).await,
            Some(Ok(held)) if plan.contacts().any(|contact| held.contains(&key_of(contact))) => {
                let reason = "the person was erased (the suppression list holds them)".into();
                return (Outcome::Skipped { reason, skipped_by: Some("suppression".into()), calls: 0 }, false);
            }
            _ => {}
        }
        let until = stop.checked_sub(self.options.call_timeout).unwrap_or(stop);
        match self.executor.execute_in(&plan, self.options.retry, until, ahead.view.clone()).await {
            Ok(delivery) => (self.delivered(envelope, &clock, delivery), false),
            Err(failed) => self.failed(item, &clock, failed).await,
        }
    }

    /// What a carried-out plan comes to: delivered, skipped with the reason, or (an alias whose previous contact Intercom
    /// does not hold yet) handed back for a while.
    fn delivered(&self, envelope: &Envelope, clock: &Clock, delivery: Delivery) -> Outcome {
        for dropped in &delivery.dropped {
            info!(message_id = %envelope.event.message_id, path = %dropped.path, reason = dropped.reason, "Left out of what Intercom receives.");
        }
        // The previous contact may still be on its way in another FIFO group: skipped after a while, and only
        // once Intercom has been answering that long too (after an outage, its lane is backing off as well).
        let answering = self.executor.breaker().answering_for(Instant::now());
        let waited = clock.failing.min(answering);
        match delivery.skipped {
            // With a working identity store, the alias held the visitor for the user instead: nothing to wait
            // for. Without one (none kept, or failing), it waits as before the store.
            Some(ALIAS_PREVIOUS_UNKNOWN) if !self.executor.remembers() && waited < self.options.alias_wait => {
                Outcome::Retry {
                    reason: "alias: Intercom does not hold the previous contact yet".into(),
                    calls: delivery.calls,
                    retry_in: self.wait(clock),
                }
            }
            Some(reason) => Outcome::Skipped { reason: reason.into(), skipped_by: None, calls: delivery.calls },
            None => Outcome::Delivered { calls: delivery.calls },
        }
    }

    /// An erasure request: carried out, its outcome reported like an event's; failures as an event's. With a
    /// suppression list, whom it names (the request's userId and email, the ids and addresses of the contacts found) is
    /// added to the list before any contact is deleted: a request tried again (the list or a deletion failing) finds
    /// and keeps the same, and no contact deleted is left out of the list.
    async fn erase(&self, item: &Item<'_>, request: &ErasureRequest, stop: Instant) -> (Outcome, bool) {
        let clock = Clock::of(item.record, None);
        let until = stop.checked_sub(self.options.call_timeout).unwrap_or(stop);
        let found = match self.executor.erasure_targets(request, self.options.retry, until).await {
            Ok(found) => found,
            Err(failed) => return self.failed(item, &clock, failed).await,
        };
        let mut kept = None;
        if let Some(table) = &self.suppression {
            let mut keys = request_keys(request);
            keys.extend(found.external_ids().map(user_key));
            keys.extend(found.emails().map(email_key));
            let added = tokio::time::timeout_at(until, table.add(&keys, &request.request_id)).await;
            if let Err(error) = added.unwrap_or_else(|_| Err(table.too_slow("cannot be written"))) {
                error!(%error, request_id = %request.request_id, "The erasure could not be kept in the suppression list; it waits, nobody deleted yet.");
                return self.suppression_failed(item, &clock, &error, found.calls()).await;
            }
            kept = Some("kept in the suppression list: their later events are skipped".to_owned());
        }
        match self.executor.erase(found, self.options.retry, until).await {
            Ok(erased) => {
                let Erased { contacts, users, leads, mut notes, calls } = erased;
                notes.extend(kept);
                info!(request_id = %request.request_id, erased = contacts.len(), users, leads, notes = ?notes, "Erased.");
                (Outcome::Erased { contacts, notes, calls }, false)
            }
            Err(failed) => self.failed(item, &clock, failed).await,
        }
    }

    /// A failure: handed back while it may pass and the horizon allows, else dead-lettered with the reason.
    async fn failed(&self, item: &Item<'_>, clock: &Clock, failed: Failed) -> (Outcome, bool) {
        let Failed { error, attempts, calls } = failed;
        let may_pass = error.is_retryable() || error.is_workspace_failure();
        let (limit, breaker, id) = (self.options.server_error_tries, self.executor.breaker(), item.record.id());
        let others_answered = |since| breaker.answered_another_since(id, since);
        if let Some(reason) = self.server_errors.poisoned(id, &error, limit, others_answered) {
            return (self.send_to_dead_letter(item, reason, calls).await, false);
        }
        if may_pass && clock.age < self.horizon() {
            let retry_in = self.breaker_wait(self.wait(clock));
            // Back by the horizon at the latest, to be dead-lettered then rather than deleted by SQS later.
            let retry_in = retry_in.min(self.horizon() - clock.age);
            let quiet = matches!(error, IntercomError::Withheld(_));
            return (Outcome::Retry { reason: error.to_string(), calls, retry_in }, quiet);
        }
        let mut reason = reason_of(&error, attempts);
        if may_pass {
            reason.error_message = format!(
                "still failing {} after the event entered the queue (RETRY_HORIZON is {}); last: {error}",
                humane(clock.age),
                humane(self.horizon())
            );
            reason.error_code = "retries_exhausted".into();
        }
        (self.send_to_dead_letter(item, reason, calls).await, false)
    }

    /// The identity store as the batch sees it: one batched read of every key its events' plans name, within the
    /// invocation (a read that fails or is too slow leaves them to be read one by one).
    async fn read_ahead(&self, groups: &[Vec<Item<'_>>], stop: Instant) -> Arc<StoreView> {
        let plans = groups.iter().flatten().filter_map(|item| match &item.body {
            Ok(Body::Event(envelope)) => map_with(&envelope.event, &self.settings).ok(),
            _ => None,
        });
        let until = stop.checked_sub(self.options.call_timeout).unwrap_or(stop);
        Arc::new(self.executor.read_ahead(plans, until).await)
    }

    /// The suppression list as the batch sees it, before anyone's records: one read for the contacts every event's plan
    /// names, with whom the batch's erasures name (their userId and email) added, so that the batch's events about a
    /// person it erases, in any lane, before or after the request, are skipped. (The addresses and ids an erasure finds
    /// in Intercom are added to the list as it runs, for the batches after.)
    async fn suppressed(
        &self,
        table: &Arc<dyn SuppressionList>,
        groups: &[Vec<Item<'_>>],
        stop: Instant,
    ) -> Result<HashSet<String>, SuppressionError> {
        let until = stop.checked_sub(self.options.call_timeout).unwrap_or(stop);
        let items = || groups.iter().flatten();
        let erasing: HashSet<String> = items()
            .filter_map(|item| match &item.body {
                Ok(Body::Erasure(request)) => Some(request_keys(request)),
                _ => None,
            })
            .flatten()
            .collect();
        let mut keys = Vec::new();
        for item in items() {
            if let Ok(Body::Event(envelope)) = &item.body
                && let Ok(plan) = map_with(&envelope.event, &self.settings)
            {
                keys.extend(plan.contacts().map(key_of).filter(|key| !erasing.contains(key)));
            }
        }
        let held = if keys.is_empty() {
            Ok(HashSet::new())
        } else {
            let read = tokio::time::timeout_at(until, table.held(&keys)).await;
            read.unwrap_or_else(|_| Err(table.too_slow("cannot be read")))
        };
        if let Err(error) = &held {
            error!(%error, "The suppression list could not be read: the batch's events wait.");
        }
        held.map(|held| held.into_iter().chain(erasing).collect())
    }

    /// The suppression list failed: the record waits as though Intercom had failed, until its horizon; then it is
    /// dead-lettered (kept, to be redriven), never forwarded unchecked.
    async fn suppression_failed(
        &self,
        item: &Item<'_>,
        clock: &Clock,
        error: &SuppressionError,
        calls: usize,
    ) -> (Outcome, bool) {
        if clock.age < self.horizon() {
            let retry_in = self.wait(clock).min(self.horizon() - clock.age);
            return (Outcome::Retry { reason: error.to_string(), calls, retry_in }, false);
        }
        let message = format!(
            "still failing {} after the event entered the queue (RETRY_HORIZON is {}); last: {error}",
            humane(clock.age),
            humane(self.horizon())
        );
        (self.send_to_dead_letter(item, Reason::ours("suppression_list_failing", message), calls).await, false)
    }

    /// The horizon in force: the configured one, but never so late that SQS deletes the event first.
    fn horizon(&self) -> Duration {
        self.options.horizon.min(QUEUE_RETENTION - Duration::from_secs(3600))
    }

    /// The wait of a record handed back after failing for `clock.failing`.
    fn wait(&self, clock: &Clock) -> Duration {
        let mut redelivery = self.options.redelivery;
        redelivery.max_delay = redelivery.max_delay.max(self.horizon() / HORIZON_SHARE);
        redelivery.delay_after(clock.failing, fastrand::f64())
    }

    /// `wait`, or longer while the breaker is open: until it lets a probe through.
    fn breaker_wait(&self, wait: Duration) -> Duration {
        self.executor.breaker().retry_in(Instant::now()).map_or(wait, |open| wait.max(open))
    }

    /// Dead-letters the record; if the dead-letter queue does not take it, it is handed back instead.
    async fn send_to_dead_letter(&self, item: &Item<'_>, reason: Reason, calls: usize) -> Outcome {
        let record = item.record;
        let letter = DeadLetterMessage {
            body: record.body.clone().unwrap_or_default(),
            group_id: item.group.clone(),
            dedup_id: record.id().to_owned(),
            receive_count: record.receive_count(),
            event_type: record.attribute("event_type").map(str::to_owned),
            event_name: record.attribute("event_name").map(str::to_owned),
            reason,
        };
        match self.dead_letter.send(&letter).await {
            Ok(()) => Outcome::DeadLettered { reason: letter.reason, calls },
            Err(problem) => {
                let hint =
                    if problem.is_retryable() { "" } else { " Check DLQ_URL and the function's sqs:SendMessage." };
                error!(sqs_message_id = %record.id(), %problem, "The dead-letter queue did not take the event; handing it back.{hint}");
                let reason = format!("the dead-letter queue did not take it: {problem}");
                Outcome::Retry { reason, calls, retry_in: self.options.redelivery.min_delay }
            }
        }
    }
}

/// The keys of whom an erasure request names itself: its userId and email.
fn request_keys(request: &ErasureRequest) -> Vec<String> {
    let mut keys: Vec<String> = request.user_id.iter().map(|id| user_key(id)).collect();
    keys.extend(request.email.iter().map(|email| email_key(email)));
    keys
}

/// When a record entered its queue and began to be tried, as ages now.
struct Clock {
    /// Since it entered the queue (SQS's `SentTimestamp`; a redriven message's own); the envelope's `received_at`
    /// when SQS does not say.
    age: Duration,
    /// Since it was first received (`ApproximateFirstReceiveTimestamp`): how long it has been tried.
    failing: Duration,
}

impl Clock {
    fn of(record: &SqsRecord, received_at: Option<time::OffsetDateTime>) -> Clock {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let received = received_at.map_or(now, |at| (at.unix_timestamp_nanos() / 1_000_000).max(0) as u64);
        let sent = record.sent_at_ms().unwrap_or(received);
        let first = record.first_received_at_ms().unwrap_or(now);
        let since = |at: u64| Duration::from_millis(now.saturating_sub(at));
        Clock { age: since(sent), failing: since(first) }
    }
}

/// `3h 20m`, `12m 5s`, `40s`.
fn humane(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}
