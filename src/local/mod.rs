//! The local pipeline behind `intercom-relay replay` and `serve`: the Lambdas' own ingest and forwarder code, with an
//! in-memory FIFO queue (or SQS) between them and Intercom played by the sandbox unless told otherwise.

pub mod archive;
mod backfill;
pub mod checkpoint;
mod generate;
pub(crate) mod input;
mod replay;
mod report;
mod serve;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub use backfill::{
    BATCH_EVENTS, BackfillOptions, BackfillReport, DRY_RUN, DryRun, Ending, InProcess, LineRejection, MAX_LISTED,
    Progress, SEND_RETRY, Sink, TimeError, backfill, parse_time,
};
pub use generate::{
    ARCHIVE_SOURCE_ID, ArchiveWritten, GenerateOptions, generate, generate_archive, generate_page_loads,
};
pub use replay::{ReplayOptions, replay, replay_archives};
pub use report::{
    CallCounts, CallReport, EventReport, Finished, RejectedInput, Report, RequestReport, Tally, endpoint,
};
pub use serve::{ServeOptions, Server, serve};

use crate::sandbox::{SandboxOptions, SandboxServer};
use intercom_relay_lambda::aws::DynamoIdentities;
use intercom_relay_lambda::config::{ConfigError, ForwardConfig};
use intercom_relay_lambda::forward::{BatchReport, Executor, Forwarder, Outcome, current_record};
use intercom_relay_lambda::identity::{IdentityStore, MemoryIdentities};
use intercom_relay_lambda::intercom::{IntercomClient, IntercomError};
use intercom_relay_lambda::queue::{
    APPROXIMATE_FIRST_RECEIVE_TIMESTAMP, APPROXIMATE_RECEIVE_COUNT, DeadLetter, DeadLetterMessage, MESSAGE_GROUP_ID,
    MemoryDeadLetter, MemoryQueue, QueueError, ReceivedMessage, SENT_TIMESTAMP, SqsDeadLetter, SqsEvent, SqsRecord,
    SqsRecordExt, sqs_event_of, sqs_record, string_attribute,
};

/// Where the forwarder's Intercom calls go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A sandbox started in this process on an ephemeral port (the default: nothing leaves the machine), allowing
    /// `rate_limit` calls per 10-second window as Intercom does (its default is 1,666), its search index `search_lag`
    /// seconds behind new contacts (its default is 5).
    Sandbox { rate_limit: u64, search_lag: u64 },
    /// Another server speaking Intercom's API (a standalone `intercom-relay sandbox`, a proxy), with the token in
    /// `INTERCOM_ACCESS_TOKEN`.
    Url(String),
    /// The real Intercom: `INTERCOM_ACCESS_TOKEN` and `INTERCOM_REGION`.
    Live,
}

/// Why a local run could not start or read its input: exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

/// Contacts and companies the local forwarder remembers, as a warm Lambda does.
const CACHE_SIZE: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

/// Records handed to the forwarder at once (Lambda's batch is at most 10; locally a bigger one keeps more people busy).
const BATCH: usize = 100;

/// How long one local invocation may take: Lambda's longest.
const INVOCATION: Duration = Duration::from_secs(900);

/// The waits of the local pipeline where the environment sets none: those of a Lambda shortened, so that a replay
/// through a short outage ends in seconds; set them to the deployed ones (10s, 15m) to play an outage as deployed. The
/// horizon and the breaker are the deployed ones. (`ALIAS_WAIT` is not read: the local pipeline always has an identity
/// store, so no alias is handed back.)
const LOCAL_WAITS: [(&str, &str); 2] = [("RETRY_BACKOFF_MIN", "1s"), ("RETRY_BACKOFF_MAX", "30s")];

/// Dead letters: in memory, or in the SQS queue named by `DLQ_URL` (`serve` with `QUEUE_URL`).
pub(crate) enum LocalDeadLetter {
    Memory(MemoryDeadLetter),
    Sqs(SqsDeadLetter),
}

impl DeadLetter for LocalDeadLetter {
    async fn send(&self, letter: &DeadLetterMessage) -> Result<(), QueueError> {
        match self {
            LocalDeadLetter::Memory(memory) => memory.send(letter).await,
            LocalDeadLetter::Sqs(sqs) => sqs.send(letter).await,
        }
    }
}

/// The forwarder of a local run, its Intercom and the tally of what it did.
pub struct Local {
    pub(crate) forwarder: Forwarder<IntercomClient, LocalDeadLetter>,
    pub(crate) tally: Arc<Tally>,
    /// The in-process sandbox, when Intercom is played by one.
    pub sandbox: Option<SandboxServer>,
    /// Where the calls go, for the user: `the sandbox at http://…`, `https://api.eu.intercom.io`.
    pub destination: String,
    /// The identity store, when it is the one in memory.
    memory: Option<Arc<MemoryIdentities>>,
}

/// The identity store of a local run: the table `IDENTITY_TABLE` names (reached with the SDK's usual settings), else one
/// in memory, shared by the process's forwarders.
async fn identities(
    config: &ForwardConfig,
) -> Result<(Arc<dyn IdentityStore>, Option<Arc<MemoryIdentities>>), LocalError> {
    match &config.identity_table {
        Some(table) => {
            let aws = intercom_relay_lambda::aws::load(intercom_relay_lambda::aws::Caller::Cli).await;
            let store = DynamoIdentities::new(&aws, table, Duration::from_secs(2))
                .map_err(|e| LocalError::Usage(e.to_string()))?;
            Ok((Arc::new(store), None))
        }
        None => {
            let memory = Arc::new(MemoryIdentities::new());
            Ok((memory.clone(), Some(memory)))
        }
    }
}

impl Local {
    /// Starts the forwarding half: the sandbox when `destination` is [`Destination::Sandbox`], and a client reading the
    /// forward function's variables through `env`
    /// (`INTERCOM_CONCURRENCY`, `INTERCOM_TIMEOUT_MS`…).
    pub(crate) async fn start(
        destination: &Destination,
        env: impl Fn(&str) -> Option<String>,
        tally: Arc<Tally>,
        dead_letter: LocalDeadLetter,
    ) -> Result<Local, LocalError> {
        let sandbox = match destination {
            Destination::Sandbox { rate_limit, search_lag } => {
                let options =
                    SandboxOptions { rate_limit: *rate_limit, search_lag: *search_lag, ..SandboxOptions::default() };
                Some(
                    SandboxServer::start(options, 0)
                        .await
                        .map_err(|e| LocalError::Io(format!("the sandbox could not start: {e}")))?,
                )
            }
            _ => None,
        };
        let overrides: Vec<(&str, String)> = match (destination, &sandbox) {
            (Destination::Sandbox { .. }, Some(sandbox)) => {
                vec![("INTERCOM_BASE_URL", sandbox.url.clone()), ("INTERCOM_ACCESS_TOKEN", sandbox.token())]
            }
            (Destination::Url(url), _) => {
                if is_intercom(url) {
                    return Err(LocalError::Usage(format!(
                        "{url} is the real Intercom: use --live (with INTERCOM_ACCESS_TOKEN and INTERCOM_REGION) to send to it"
                    )));
                }
                vec![("INTERCOM_BASE_URL", url.clone())]
            }
            _ => Vec::new(),
        };
        let config = ForwardConfig::from_lookup(|name| {
            if *destination == Destination::Live && name == "INTERCOM_BASE_URL" {
                // --live means the region's own API root, whatever else the environment says.
                return None;
            }
            let local = LOCAL_WAITS.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
            overrides.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).or_else(|| env(name)).or(local)
        })?;
        let observed = tally.clone();
        let client =
            IntercomClient::new(&config.base_url, config.access_token.clone(), config.api_version, config.timeout)
                .map_err(|e: IntercomError| LocalError::Io(e.to_string()))?
                .with_observer(Arc::new(move |exchange| observed.exchange(current_record(), exchange)));
        let destination = match &sandbox {
            Some(sandbox) => format!("the sandbox at {}", sandbox.url),
            None => config.base_url.clone(),
        };
        let (store, memory) = identities(&config).await?;
        let executor = Executor::new(client, config.create_attributes, CACHE_SIZE).with_identities(store);
        let forwarder = Forwarder::new(executor, dead_letter, config.options()).with_settings(config.settings.clone());
        Ok(Local { forwarder, tally, sandbox, destination, memory })
    }

    /// Forwards one batch as an invocation would, telling the tally every outcome.
    pub(crate) async fn forward(&self, event: &SqsEvent) -> BatchReport {
        self.forward_until(event, Instant::now() + INVOCATION).await
    }

    /// As [`Local::forward`], finishing before `deadline` (what is not done by then is handed back).
    pub(crate) async fn forward_until(&self, event: &SqsEvent, deadline: Instant) -> BatchReport {
        let report = self.forwarder.handle(event, deadline).await;
        for record in &report.records {
            self.tally.outcome(record);
        }
        report
    }

    /// Forwards `event` until every record is delivered, skipped or dead-lettered: each record handed back comes again
    /// after its own wait, its receive count one higher, as SQS would hand it out (a person's records share a wait, so
    /// they come again together, in order). A replayed event is delivered anew: its records count as sent and first
    /// received now.
    pub(crate) async fn forward_until_done(&self, event: SqsEvent) {
        let now = intercom_relay_lambda::queue::epoch_ms().to_string();
        let mut waiting: Vec<(usize, SqsRecord, Instant)> = Vec::with_capacity(event.records.len());
        for (index, mut record) in event.records.into_iter().enumerate() {
            record.attributes.insert(SENT_TIMESTAMP.into(), now.clone());
            record.attributes.insert(APPROXIMATE_FIRST_RECEIVE_TIMESTAMP.into(), now.clone());
            waiting.push((index, record, Instant::now()));
        }
        let group = |record: &SqsRecord| record.group().map(str::to_owned);
        while !waiting.is_empty() {
            let now = Instant::now();
            // As SQS FIFO does: none of a person's records while an earlier one of theirs waits.
            let held: Vec<(usize, Option<String>)> = waiting
                .iter()
                .filter(|(_, _, at)| *at > now)
                .map(|(index, record, _)| (*index, group(record)))
                .collect();
            let blocked = |index: usize, record: &SqsRecord| {
                let group = group(record);
                group.is_some() && held.iter().any(|(earlier, g)| *earlier < index && *g == group)
            };
            let (mut due, later): (Vec<_>, Vec<_>) =
                waiting.into_iter().partition(|(index, record, at)| *at <= now && !blocked(*index, record));
            waiting = later;
            if due.is_empty() {
                let next = waiting.iter().map(|(_, _, at)| *at).filter(|at| *at > now).min();
                tokio::time::sleep_until(next.unwrap_or(now + Duration::from_millis(10))).await;
                continue;
            }
            due.sort_by_key(|(index, _, _)| *index);
            let indices: Vec<usize> = due.iter().map(|(index, _, _)| *index).collect();
            let event = sqs_event_of(due.into_iter().map(|(_, record, _)| record).collect());
            let again = self.forward(&event).await.handed_back();
            for (index, mut record) in indices.into_iter().zip(event.records) {
                if let Some((_, wait)) = again.iter().find(|(id, _)| id == record.id()) {
                    let count = (record.receive_count() + 1).to_string();
                    record.attributes.insert(APPROXIMATE_RECEIVE_COUNT.into(), count);
                    waiting.push((index, record, Instant::now() + *wait));
                }
            }
        }
    }

    /// Works through `queue` as Lambda's event source would: batches received, forwarded, deleted or handed back with
    /// their waits. Returns once `closing` is set and the queue is empty.
    pub async fn drain(&self, queue: &MemoryQueue, closing: &AtomicBool) {
        loop {
            let received = queue.receive(BATCH);
            if received.is_empty() {
                if closing.load(Ordering::Acquire) && queue.is_empty() {
                    return;
                }
                let soon = Instant::now() + Duration::from_millis(250);
                queue.changed(queue.next_visible_at().map_or(soon, |at| at.min(soon))).await;
                continue;
            }
            let event = sqs_event_of(received.iter().map(record).collect());
            let report = self.forward(&event).await;
            for (message, outcome) in received.iter().zip(&report.records) {
                match outcome.outcome {
                    Outcome::Retry { retry_in, .. } => queue.hand_back(&message.id, retry_in),
                    _ => queue.delete(&message.id),
                }
            }
        }
    }

    /// What the in-process sandbox holds, counted: `14 contacts (3 leads), 3 companies, 30 events`.
    /// What the run asked of the identity store kept in memory (what DynamoDB would bill).
    pub fn store_usage(&self) -> Option<intercom_relay_lambda::identity::StoreUsage> {
        self.memory.as_ref().map(|memory| memory.usage())
    }

    pub fn sandbox_summary(&self) -> Option<String> {
        Some(self.sandbox.as_ref()?.state().summary())
    }
}

/// Carries out an erasure request here, through the forwarder, against `destination`: what it found and did.
pub async fn erase_here(
    request: &intercom_relay_lambda::erasure::ErasureRequest,
    destination: &Destination,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Report, Local), LocalError> {
    let tally = Arc::new(Tally::new(false, false));
    let local = Local::start(destination, env, tally.clone(), LocalDeadLetter::Memory(MemoryDeadLetter::new())).await?;
    let now = intercom_relay_lambda::queue::epoch_ms().to_string();
    let mut record = sqs_record(&format!("erasure-{}", request.request_id), Some(request.to_body()));
    record.attributes = HashMap::from([
        (APPROXIMATE_RECEIVE_COUNT.to_owned(), "1".to_owned()),
        (MESSAGE_GROUP_ID.to_owned(), request.ordering_key().to_owned()),
        (SENT_TIMESTAMP.to_owned(), now.clone()),
        (APPROXIMATE_FIRST_RECEIVE_TIMESTAMP.to_owned(), now),
    ]);
    local.forward_until_done(sqs_event_of(vec![record])).await;
    Ok((tally.report(), local))
}

/// A queue message as Lambda's SQS event source presents it.
fn record(received: &ReceivedMessage) -> SqsRecord {
    let message = &received.message;
    let mut record = sqs_record(&received.id, Some(message.body.clone()));
    record.message_attributes =
        HashMap::from([("event_type".to_owned(), string_attribute(message.event_type.as_str()))]);
    if let Some(name) = &message.event_name {
        record.message_attributes.insert("event_name".into(), string_attribute(name));
    }
    record.attributes = HashMap::from([
        (APPROXIMATE_RECEIVE_COUNT.to_owned(), received.receive_count.to_string()),
        (MESSAGE_GROUP_ID.to_owned(), message.ordering_key.clone()),
        ("MessageDeduplicationId".to_owned(), message.message_id.clone()),
        (SENT_TIMESTAMP.to_owned(), received.sent_at_ms.to_string()),
        (APPROXIMATE_FIRST_RECEIVE_TIMESTAMP.to_owned(), received.first_received_at_ms.to_string()),
    ]);
    record
}

/// Whether `url` is one of Intercom's own API hosts.
fn is_intercom(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or_default();
    host == "intercom.io" || host.ends_with(".intercom.io")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intercoms_own_hosts_count_as_live() {
        assert!(is_intercom("https://api.intercom.io") && is_intercom("https://api.eu.intercom.io/"));
        assert!(!is_intercom("http://127.0.0.1:4010") && !is_intercom("https://intercom.io.example.com"));
    }
}
