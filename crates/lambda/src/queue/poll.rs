//! Lambda's SQS event source, for running the forwarder outside Lambda (`serve` with `QUEUE_URL`, tests against moto):
//! receive a batch as the event source would hand it over, then delete what was not handed back; and, in Lambda too,
//! the wait of each record handed back (`ChangeMessageVisibility`), which the event source leaves to the function.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message};

use super::QueueError;
use super::sqs_event::{MessageAttribute, SqsEvent, SqsRecord, SqsRecordExt, sqs_event_of, sqs_record};

/// The longest wait set: SQS takes at most 12 hours from the receive, which came before the invocation (its batching
/// window, its run): 20 minutes are kept back for those.
pub(crate) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600 - 20 * 60);

/// Sets when records handed back come again: one `ChangeMessageVisibilityBatch` per queue and ten records.
#[derive(Clone, Debug)]
pub struct SqsHandBack {
    client: aws_sdk_sqs::Client,
    /// The queue the records come from; `None`: each record's `eventSourceARN` names it.
    queue_url: Option<String>,
}

impl SqsHandBack {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: Option<String>) -> SqsHandBack {
        SqsHandBack { client, queue_url }
    }

    /// Makes each record of `event` named in `delays` (SQS message id, wait) invisible for its wait from now. A record
    /// whose wait cannot be set comes back after the queue's visibility timeout instead: later, but not lost.
    pub async fn hand_back(&self, event: &SqsEvent, delays: &[(String, Duration)]) -> Result<(), QueueError> {
        let mut by_queue: Vec<(String, Vec<ChangeMessageVisibilityBatchRequestEntry>)> = Vec::new();
        for (id, delay) in delays {
            let Some(record) = event.records.iter().find(|r| r.id() == id) else { continue };
            let (Some(handle), Some(url)) = (record.receipt_handle.as_deref(), self.url_of(record)) else {
                tracing::warn!(sqs_message_id = %id, "No receipt handle or queue for this record: its wait is the queue's.");
                continue;
            };
            let seconds = delay.min(&MAX_VISIBILITY).as_secs_f64().ceil() as i32;
            let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(sqs_entry_id(id))
                .receipt_handle(handle)
                .visibility_timeout(seconds)
                .build()
                .expect("id and receipt handle are set");
            match by_queue.iter_mut().find(|(u, _)| *u == url) {
                Some((_, entries)) => entries.push(entry),
                None => by_queue.push((url, vec![entry])),
            }
        }
        // Every chunk is tried, whatever became of the one before; the first problem is the answer.
        let mut first_problem = None;
        for (url, entries) in by_queue {
            for chunk in entries.chunks(10) {
                let sent = self
                    .client
                    .change_message_visibility_batch()
                    .queue_url(&url)
                    .set_entries(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| QueueError::call("ChangeMessageVisibilityBatch", e))
                    .and_then(|output| entries_failed("ChangeMessageVisibilityBatch", output.failed()));
                if let Err(problem) = sent {
                    first_problem.get_or_insert(problem);
                }
            }
        }
        first_problem.map_or(Ok(()), Err)
    }

    fn url_of(&self, record: &SqsRecord) -> Option<String> {
        self.queue_url.clone().or_else(|| record.event_source_arn.as_deref().and_then(queue_url_of_arn))
    }
}

/// The URL of the queue an ARN names: `arn:aws:sqs:eu-west-1:123456789012:events.fifo` is
/// `https://sqs.eu-west-1.amazonaws.com/123456789012/events.fifo` (the SDK sends the call to its own endpoint; the URL
/// names the queue).
pub fn queue_url_of_arn(arn: &str) -> Option<String> {
    let mut parts = arn.split(':');
    let (Some("arn"), Some(partition), Some("sqs"), Some(region), Some(account), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let domain = if partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
    Some(format!("https://sqs.{region}.{domain}/{account}/{name}"))
}

/// Receives from one queue and deletes what the forwarder acknowledged.
#[derive(Clone, Debug)]
pub struct SqsPoller {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    /// Long-polling wait (at most 20 s).
    wait: Duration,
}

impl SqsPoller {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, wait: Duration) -> SqsPoller {
        SqsPoller { client, queue_url: queue_url.into(), wait: wait.min(Duration::from_secs(20)) }
    }

    /// Up to `max` messages (1 to 10), as Lambda's SQS event; empty when the queue had none during the wait.
    pub async fn receive(&self, max: i32) -> Result<SqsEvent, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(self.wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| QueueError::call("ReceiveMessage", e))?;
        Ok(sqs_event_of(output.messages().iter().map(record).collect()))
    }

    /// Deletes every record of `event` not handed back, and sets the wait of those handed back (SQS message id, wait),
    /// as the event source and the forward function do together.
    pub async fn acknowledge(&self, event: &SqsEvent, handed_back: &[(String, Duration)]) -> Result<(), QueueError> {
        let is_handed_back = |id: &str| handed_back.iter().any(|(h, _)| h == id);
        let entries: Vec<DeleteMessageBatchRequestEntry> = event
            .records
            .iter()
            .filter(|r| !is_handed_back(r.id()))
            .filter_map(|r| {
                let handle = r.receipt_handle.as_deref()?;
                DeleteMessageBatchRequestEntry::builder().id(sqs_entry_id(r.id())).receipt_handle(handle).build().ok()
            })
            .collect();
        let waits = SqsHandBack::new(self.client.clone(), Some(self.queue_url.clone()));
        let waited = waits.hand_back(event, handed_back).await;
        if !entries.is_empty() {
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError::call("DeleteMessageBatch", e))?;
            entries_failed("DeleteMessageBatch", output.failed())?;
        }
        waited
    }
}

/// `Err` naming the first entry a batch call did not take.
fn entries_failed(
    operation: &'static str,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
) -> Result<(), QueueError> {
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(QueueError::Entries {
            operation,
            failed: failed.len(),
            code: first.code().to_owned(),
            message: first.message().unwrap_or_default().to_owned(),
            sender_fault: first.sender_fault(),
        }),
    }
}

/// A batch entry id SQS takes (letters, digits, hyphens and underscores, at most 80).
fn sqs_entry_id(message_id: &str) -> String {
    message_id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).take(80).collect()
}

fn record(message: &Message) -> SqsRecord {
    let mut record = sqs_record(message.message_id().unwrap_or_default(), message.body().map(str::to_owned));
    record.receipt_handle = message.receipt_handle().map(str::to_owned);
    record.attributes =
        message.attributes().into_iter().flatten().map(|(n, v)| (n.as_str().to_owned(), v.clone())).collect();
    record.message_attributes = message
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            let mut attribute = MessageAttribute::default();
            attribute.string_value = value.string_value().map(str::to_owned);
            attribute.data_type = Some(value.data_type().to_owned());
            (name.clone(), attribute)
        })
        .collect();
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_arn_gives_its_url() {
        assert_eq!(
            queue_url_of_arn("arn:aws:sqs:eu-west-1:123456789012:relay-EventsQueue-1A2B.fifo").as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com/123456789012/relay-EventsQueue-1A2B.fifo")
        );
        assert_eq!(
            queue_url_of_arn("arn:aws-cn:sqs:cn-north-1:123456789012:q").as_deref(),
            Some("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q")
        );
        assert_eq!(queue_url_of_arn("arn:aws:sns:us-east-1:123456789012:topic"), None);
        assert_eq!(queue_url_of_arn("events.fifo"), None);
    }
}
