//! Lambda's SQS event source, for running the forwarder outside Lambda (`serve` with `QUEUE_URL`, tests against moto):
//! receive a batch as the event source would hand it over, then delete what was not handed back.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};

use super::sqs_event::{MessageAttribute, RecordAttributes, SqsBatchResponse, SqsEvent, SqsRecord};

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
    pub async fn receive(&self, max: i32) -> Result<SqsEvent, String> {
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
            .map_err(|e| format!("{}", DisplayErrorContext(e)))?;
        Ok(SqsEvent { records: output.messages().iter().map(record).collect() })
    }

    /// Deletes every record of `event` that `response` does not hand back, as the event source does.
    pub async fn acknowledge(&self, event: &SqsEvent, response: &SqsBatchResponse) -> Result<(), String> {
        let handed_back = |id: &str| response.batch_item_failures.iter().any(|f| f.item_identifier == id);
        let entries: Vec<DeleteMessageBatchRequestEntry> = event
            .records
            .iter()
            .filter(|r| !handed_back(&r.message_id))
            .filter_map(|r| {
                let handle = r.receipt_handle.as_deref()?;
                DeleteMessageBatchRequestEntry::builder()
                    .id(sqs_entry_id(&r.message_id))
                    .receipt_handle(handle)
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| format!("{}", DisplayErrorContext(e)))?;
        match output.failed().first() {
            None => Ok(()),
            Some(failed) => Err(format!("{} deletes failed, the first: {}", output.failed().len(), failed.code())),
        }
    }
}

/// A batch entry id SQS takes (letters, digits, hyphens and underscores, at most 80).
fn sqs_entry_id(message_id: &str) -> String {
    message_id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).take(80).collect()
}

fn record(message: &Message) -> SqsRecord {
    let system = |name: MessageSystemAttributeName| message.attributes().and_then(|a| a.get(&name)).cloned();
    SqsRecord {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        receipt_handle: message.receipt_handle().map(str::to_owned),
        body: message.body().map(str::to_owned),
        attributes: RecordAttributes {
            approximate_receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount),
            message_group_id: system(MessageSystemAttributeName::MessageGroupId),
            message_deduplication_id: system(MessageSystemAttributeName::MessageDeduplicationId),
        },
        message_attributes: message
            .message_attributes()
            .into_iter()
            .flatten()
            .map(|(name, value)| {
                let attribute = MessageAttribute {
                    string_value: value.string_value().map(str::to_owned),
                    data_type: value.data_type().to_owned(),
                };
                (name.clone(), attribute)
            })
            .collect(),
        event_source_arn: None,
    }
}
