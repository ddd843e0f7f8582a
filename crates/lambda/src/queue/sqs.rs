//! SQS: SendMessageBatch in groups of 10 within SQS's size limits, failed entries retried with backoff.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use tracing::warn;

use super::{Enqueue, EnqueueError, QueuedMessage};
use crate::retry::RetryPolicy;

/// Longest short attribute value kept (an event name, an id); longer ones are cut.
pub(crate) const MAX_ATTRIBUTE_CHARS: usize = 256;

/// Most bytes SQS takes in one message (body and attributes).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most bytes SQS takes in one SendMessageBatch request (all entries).
pub(crate) const MAX_SEND_BATCH_BYTES: usize = 256 * 1024;
const MAX_BATCH_ENTRIES: usize = 10;

/// How SendMessageBatch entries SQS did not take are tried again by default: 4 tries, 50 ms to 1 s apart.
pub const ENQUEUE_RETRY: RetryPolicy =
    RetryPolicy { attempts: 4, min_delay: Duration::from_millis(50), max_delay: Duration::from_secs(1) };

/// The most one `enqueue` may take by default, retries included, so the client gets a 503 rather than a timeout (the
/// template raises it to 25 s, under the ingest function's 30 s, for one person's large batch: a call an event).
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(7);

/// An SQS queue, FIFO when its URL ends in `.fifo`.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    fifo: bool,
    retry: RetryPolicy,
    /// The most one `enqueue` may take, retries included.
    deadline: Duration,
    concurrency: usize,
}

impl SqsQueue {
    /// A queue whose failed entries are tried again as `retry` says, within `deadline` for one `enqueue`.
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        retry: RetryPolicy,
        deadline: Duration,
    ) -> SqsQueue {
        let queue_url = queue_url.into();
        let fifo = queue_url.ends_with(".fifo");
        SqsQueue { client, queue_url, fifo, retry, deadline, concurrency: 4 }
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    pub fn url(&self) -> &str {
        &self.queue_url
    }

    fn entry(&self, id: usize, message: &QueuedMessage) -> SendMessageBatchRequestEntry {
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(sqs_text(value, MAX_ATTRIBUTE_CHARS))
                .build()
                .expect("data type is set")
        };
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .message_body(&message.body)
            .message_attributes("event_type", attribute(message.event_type.as_str()));
        if let Some(name) = &message.event_name {
            entry = entry.message_attributes("event_name", attribute(name));
        }
        if self.fifo {
            entry = entry
                .message_group_id(sqs_id(&message.ordering_key))
                .message_deduplication_id(sqs_id(&message.message_id));
        }
        entry.build().expect("id and body are set")
    }

    /// Sends one batch, retrying the entries SQS did not take; `Err` holds the indices SQS never confirmed, and why.
    /// An entry of a request that got no answer counts as not confirmed, though SQS may hold it.
    async fn send_batch(&self, batch: &[&QueuedMessage]) -> Result<(), (Vec<usize>, String)> {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut delays = self.retry.delays();
        loop {
            let entries = pending.iter().map(|&i| self.entry(i, batch[i])).collect();
            let request = self.client.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries));
            let reason = match request.send().await {
                Ok(output) if output.failed().is_empty() => return Ok(()),
                Ok(output) => {
                    let failed = output.failed();
                    let ids: Vec<usize> = failed.iter().filter_map(|f| f.id().parse().ok()).collect();
                    // An id we did not send would be SQS's mistake; then every pending entry counts as failed.
                    if ids.len() == failed.len() && ids.iter().all(|id| pending.contains(id)) {
                        pending = ids;
                    }
                    let first = &failed[0];
                    let reason = format!(
                        "SQS refused {} entries: {} {}",
                        failed.len(),
                        first.code(),
                        first.message().unwrap_or("")
                    );
                    warn!(
                        failed = failed.len(),
                        code = first.code(),
                        sender_fault = first.sender_fault(),
                        "SQS refused entries."
                    );
                    if failed.iter().all(|f| f.sender_fault()) {
                        // The request itself is wrong: sending it again cannot help.
                        return Err((pending, reason));
                    }
                    reason
                }
                Err(error) => {
                    let reason = format!("SendMessageBatch failed: {}", DisplayErrorContext(&error));
                    warn!(error = %DisplayErrorContext(&error), entries = pending.len(), "SendMessageBatch failed.");
                    reason
                }
            };
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err((pending, reason)),
            }
        }
    }

    /// Sends one lane's messages in rounds, each round the earliest unsent message of every person in the lane, so a
    /// SendMessageBatch never holds two messages of one person. SQS reports each entry on its own and says nothing of
    /// the order it keeps when it refuses one entry of a group and takes a later one of the same group: with one entry
    /// per person per call, a person's later message is never sent before an earlier one has landed. A person whose
    /// message fails for good is dropped from the rounds with all their later messages; others go on. `Err` holds the
    /// lane's indices SQS did not confirm.
    async fn send_lane(&self, lane: &[&QueuedMessage]) -> Result<(), (Vec<usize>, String)> {
        let mut people: Vec<VecDeque<usize>> = Vec::new();
        let mut person_of: HashMap<&str, usize> = HashMap::new();
        for (index, message) in lane.iter().enumerate() {
            let person = *person_of.entry(message.ordering_key.as_str()).or_insert_with(|| {
                people.push(VecDeque::new());
                people.len() - 1
            });
            people[person].push_back(index);
        }
        let (mut unconfirmed, mut reason) = (Vec::new(), None);
        loop {
            let round: Vec<usize> = (0..people.len()).filter(|&p| !people[p].is_empty()).collect();
            if round.is_empty() {
                break;
            }
            let heads: Vec<&QueuedMessage> = round.iter().map(|&p| lane[people[p][0]]).collect();
            let mut start = 0;
            for batch in batches(&heads) {
                if let Err((pending, why)) = self.send_batch(batch).await {
                    for person in pending.into_iter().map(|i| round[start + i]) {
                        unconfirmed.extend(people[person].drain(..));
                    }
                    reason = Some(why);
                }
                start += batch.len();
            }
            for &person in &round {
                people[person].pop_front();
            }
        }
        match reason {
            None => Ok(()),
            Some(reason) => Err((unconfirmed, reason)),
        }
    }

    /// Sends `messages` as [`Enqueue::enqueue`] does, without its deadline, and says which SQS confirmed: `Err` holds
    /// a flag per message (`true`: in the queue) and the last reason. Each person's messages are sent in order, and
    /// none after one of theirs that failed, so sending the unconfirmed ones again keeps every person's order. (An
    /// entry whose request got no answer is unconfirmed but may be in the queue: a FIFO queue drops it when it comes
    /// again within five minutes, by its deduplication id.)
    pub async fn send_each(&self, messages: &[QueuedMessage]) -> Result<(), Unconfirmed> {
        // Each person's messages go to one lane, in order; lanes run concurrently. A FIFO queue keeps the order in
        // which it receives each group's messages, so two batches of one person must never be in flight at once.
        let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); self.concurrency];
        for (index, message) in messages.iter().enumerate() {
            lanes[lane_of(&message.ordering_key, self.concurrency)].push(index);
        }
        let lanes: Vec<Vec<usize>> = lanes.into_iter().filter(|lane| !lane.is_empty()).collect();
        let sends = lanes.iter().map(|lane| async move {
            let members: Vec<&QueuedMessage> = lane.iter().map(|&i| &messages[i]).collect();
            self.send_lane(&members).await.map_err(|(unconfirmed, reason)| {
                (unconfirmed.into_iter().map(|i| lane[i]).collect::<Vec<usize>>(), reason)
            })
        });
        let results = futures_util::future::join_all(sends).await;
        let mut confirmed = vec![true; messages.len()];
        let mut reason = None;
        for (unconfirmed, why) in results.into_iter().filter_map(Result::err) {
            for index in unconfirmed {
                confirmed[index] = false;
            }
            reason = Some(why);
        }
        match reason {
            None => Ok(()),
            Some(reason) => Err(Unconfirmed { confirmed, reason }),
        }
    }
}

impl SqsQueue {
    /// Sends an operator's erasure request into the person's lane (their message group), behind their queued events.
    pub async fn send_erasure(&self, request: &crate::erasure::ErasureRequest) -> Result<(), super::QueueError> {
        let kind = MessageAttributeValue::builder().data_type("String").string_value("erasure").build();
        let mut sent = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(request.to_body())
            .message_attributes("event_type", kind.expect("data type is set"));
        if self.fifo {
            sent = sent
                .message_group_id(sqs_id(request.ordering_key()))
                .message_deduplication_id(sqs_id(&request.request_id));
        }
        sent.send().await.map(drop).map_err(|e| super::QueueError::call("SendMessage", e))
    }
}

/// Messages SQS did not confirm: which were (`true`) and which not, and why.
#[derive(Debug)]
pub struct Unconfirmed {
    pub confirmed: Vec<bool>,
    pub reason: String,
}

impl Enqueue for SqsQueue {
    async fn enqueue(&self, messages: Vec<QueuedMessage>) -> Result<(), EnqueueError> {
        let total = messages.len();
        let Ok(result) = tokio::time::timeout(self.deadline, self.send_each(&messages)).await else {
            // Some may have landed; the client's retry is absorbed by deduplication on messageId.
            let reason = format!("SQS did not take them within {:?}", self.deadline);
            return Err(EnqueueError { failed: total, total, reason });
        };
        result.map_err(|Unconfirmed { confirmed, reason }| EnqueueError {
            failed: confirmed.iter().filter(|sent| !**sent).count(),
            total,
            reason,
        })
    }
}

/// The lane of a person's messages: a stable hash of their ordering key.
fn lane_of(ordering_key: &str, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ordering_key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Splits messages into SendMessageBatch requests: at most 10 entries and [`MAX_SEND_BATCH_BYTES`] each.
pub(crate) fn batches<'a>(messages: &'a [&'a QueuedMessage]) -> Vec<&'a [&'a QueuedMessage]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, message) in messages.iter().enumerate() {
        let size = message.bytes();
        if i > start && (i - start == MAX_BATCH_ENTRIES || bytes + size > MAX_SEND_BATCH_BYTES) {
            batches.push(&messages[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < messages.len() {
        batches.push(&messages[start..]);
    }
    batches
}

/// A FIFO group or deduplication id: the value itself when SQS takes it (≤ 128 printable ASCII characters), else its SHA-256.
pub fn sqs_id(value: &str) -> String {
    if !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()) {
        return value.to_owned();
    }
    let digest = Sha256::digest(value.as_bytes());
    format!("sha256-{}", crate::hex(&digest))
}

/// An attribute value SQS takes: characters outside its allowed set replaced, at most `max_chars` characters.
pub(crate) fn sqs_text(value: &str, max_chars: usize) -> String {
    let allowed =
        |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..);
    value.chars().take(max_chars).map(|c| if allowed(c) { c } else { '\u{fffd}' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn message(body_bytes: usize) -> QueuedMessage {
        QueuedMessage {
            message_id: "m".into(),
            ordering_key: "u".into(),
            event_type: EventType::Track,
            event_name: Some("e".into()),
            body: "x".repeat(body_bytes),
        }
    }

    #[test]
    fn batches_hold_at_most_ten_entries() {
        let messages: Vec<_> = (0..23).map(|_| message(100)).collect();
        let messages: Vec<&QueuedMessage> = messages.iter().collect();
        let sizes: Vec<usize> = batches(&messages).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn batches_stay_within_the_request_size_limit() {
        let messages: Vec<_> = (0..10).map(|_| message(40 * 1024)).collect();
        let messages: Vec<&QueuedMessage> = messages.iter().collect();
        let split = batches(&messages);
        assert_eq!(split.iter().map(|b| b.len()).collect::<Vec<_>>(), [6, 4]);
        for batch in split {
            assert!(batch.iter().map(|m| m.bytes()).sum::<usize>() <= MAX_SEND_BATCH_BYTES);
        }
    }

    #[test]
    fn a_persons_messages_always_share_a_lane() {
        let lanes: Vec<usize> = ["user-1", "user-2", "user-3", "user-1"].iter().map(|key| lane_of(key, 4)).collect();
        assert_eq!(lanes[0], lanes[3]);
        assert!(lanes.iter().all(|&lane| lane < 4));
        let spread: std::collections::HashSet<usize> = (0..100).map(|i| lane_of(&format!("user-{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "100 people use every lane");
    }

    #[test]
    fn ids_sqs_refuses_are_hashed() {
        assert_eq!(sqs_id("ajs-next-1714564800-abc"), "ajs-next-1714564800-abc");
        let long = "a".repeat(129);
        for refused in [long.as_str(), "has space", "é", "line\nbreak", ""] {
            let id = sqs_id(refused);
            assert!(id.starts_with("sha256-") && id.len() == 71, "{refused:?} -> {id}");
        }
        assert_eq!(sqs_id("has space"), sqs_id("has space"));
        assert_ne!(sqs_id("has space"), sqs_id("has  space"));
    }

    #[test]
    fn attribute_text_is_cleaned_and_cut() {
        assert_eq!(sqs_text("Order\u{0}Completed\u{ffff}", 256), "Order\u{fffd}Completed\u{fffd}");
        assert_eq!(sqs_text(&"é".repeat(300), 256).chars().count(), 256);
    }
}
